"""The command line and the records it writes: exit codes, record schema, export, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hierbench.cli import main
from hierbench.records import append_record, new_record, read_records

REQUIRED = {
    "method",
    "dataset",
    "data_params",
    "method_params",
    "seed",
    "status",
    "elbo",
    "elbo_se",
    "log_evidence",
    "kl",
    "global_mean",
    "global_sd",
    "steps",
    "grad_evals",
    "wall_s",
    "compile_s",
    "trace",
    "env",
}
SMALL = ["--data-param", "N=5", "--data-param", "n=4", "--data-param", "d=2"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--method", "nope", "--dataset", "hier-linear"], "valid methods: meanfield"),
        (["run", "--method", "branch", "--dataset", "nope"], "valid datasets: hier-linear"),
        (["run", "--method", "branch", "--dataset", "hier-linear", "--data-param", "N=0"], "N"),
        (["run", "--method", "branch", "--dataset", "hier-linear", "--data-param", "d=-1"], "d"),
        (["run", "--method", "branch", "--dataset", "hier-linear", "--data-param", "zz=1"], "valid: N, n, d"),
        (["run", "--method", "branch", "--dataset", "hier-linear", "--method-param", "lr=abc"], "float"),
        (["run", "--method", "branch", "--dataset", "hier-linear", "--method-param", "dtype=f16"], "float32"),
        (["run", "--method", "branch", "--dataset", "hier-linear", "--steps", "0"], "steps"),
        (["export", "--dataset", "nope"], "valid datasets"),
        (["report", "/no/such/file.jsonl", "--out", "x"], "no such records file"),
    ],
)
def test_bad_input_exits_2_with_choices(argv, message, tmp_path, capsys):
    if argv[0] in ("run", "export"):
        argv = argv + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_list_shows_every_method_and_dataset(capsys):
    from hierbench.datasets import DATASETS
    from hierbench.methods import METHODS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*DATASETS, *METHODS]:
        assert name in out
    assert "batch_groups" in out and "lr=0.003" in out  # dense's own default is shown


def test_run_appends_a_complete_record(tmp_path):
    out = tmp_path / "r.jsonl"
    argv = [
        "run",
        "--method",
        "branch",
        "--dataset",
        "hier-linear",
        *SMALL,
        "--steps",
        "60",
        "--eval-draws",
        "100",
        "--checkpoints",
        "3",
        "--seed",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert main(argv) == 0
    recs = read_records([out])
    assert len(recs) == 2
    rec = recs[0]
    assert REQUIRED <= set(rec)
    assert rec["status"] == "ok" and rec["seed"] == 4 and rec["steps"] == 60
    assert rec["kl"] == pytest.approx(rec["log_evidence"] - rec["elbo"])
    assert [p["step"] for p in rec["trace"]] == [0, 20, 40, 60]
    assert rec["env"]["versions"]["jax"] and rec["env"]["dtype"] == "float64"
    assert len(rec["global_mean"]) == len(rec["global_sd"]) == 2
    # same seed, same numbers
    assert recs[0]["elbo"] == recs[1]["elbo"]


def test_export_writes_flat_arrays(tmp_path):
    out = tmp_path / "d.npz"
    assert (
        main(
            [
                "export",
                "--dataset",
                "hier-linear",
                *SMALL,
                "--data-param",
                "ragged=true",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with np.load(out) as f:  # plain arrays: no pickle needed to read them
        x, y, group = f["x"], f["y"], f["group"]
        params = json.loads(str(f["data_params"]))
    assert x.shape == (len(y), 2) and group.shape == y.shape
    assert set(np.unique(group)) <= set(range(5)) and params["seed"] == 3


def test_report_writes_tables_and_figures(tmp_path):
    recs = tmp_path / "r.jsonl"
    for method in ("meanfield", "branch"):
        assert (
            main(
                [
                    "run",
                    "--method",
                    method,
                    "--dataset",
                    "hier-linear",
                    *SMALL,
                    "--steps",
                    "40",
                    "--eval-draws",
                    "100",
                    "--checkpoints",
                    "2",
                    "--out",
                    str(recs),
                ]
            )
            == 0
        )
    assert main(["report", str(recs), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "meanfield" in md and "branch" in md
    assert (tmp_path / "rep" / "summary.csv").exists()
    assert (tmp_path / "rep" / "elbo_vs_time_hier-linear.png").stat().st_size > 10_000


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = new_record("meanfield", "hier-linear") | {"x": float("nan"), "v": np.arange(3)}
    append_record(path, rec)
    with open(path, "a") as fh:
        fh.write('{"a": 2, "trunc')  # a crash mid-write
    with pytest.warns(UserWarning, match="not complete JSON"):
        recs = read_records([path])
    assert recs == [rec | {"x": None, "v": [0, 1, 2]}]
    assert recs.skipped == [(str(path), 2, "not complete JSON")]


def test_overflowing_log_weights_are_not_an_elbo():
    from hierbench.scoring import summarize

    log_w = np.array([1e180, -2e180, 3e179, 0.0] * 5)
    out = summarize(log_w, np.zeros((20, 2)), iw_k=10)
    assert out["elbo"] is None and out["elbo_se"] is None
    ok = summarize(np.linspace(-1, 1, 20), np.zeros((20, 2)), iw_k=10)
    assert ok["elbo"] == pytest.approx(0.0, abs=1e-12) and ok["elbo_se"] > 0


@pytest.mark.parametrize(
    "make_out", [lambda tmp: tmp / "a-file" / "r.jsonl", lambda tmp: Path("/proc/hb/r.jsonl")]
)
def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, make_out):
    """--out into a folder that cannot be made (a file in the way, /proc): exit 2 at once, before the
    model is built or a step taken (a run used to finish and then lose its record to an OSError)."""
    from hierbench import harness

    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(harness, "run_one", lambda *a, **k: pytest.fail("the run started"))
    argv = ["run", "--method", "meanfield", "--dataset", "hier-linear", "--out", str(make_out(tmp_path))]
    assert main(argv) == 2
    assert "cannot write into" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "a-file"), "--out", str(tmp_path / "a-file" / "rep")]) == 2


def test_run_outside_the_checkout_finds_the_store_or_says_why_accuracy_is_missing(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # outside the checkout: results/references is not here
    argv = [
        "run",
        "--method",
        "meanfield",
        "--dataset",
        "eight-schools",
        "--steps",
        "20",
        "--checkpoints",
        "1",
    ]
    argv += ["--eval-draws", "50", "--out", str(tmp_path / "r.jsonl")]
    assert main(argv) == 0
    (rec,) = read_records([tmp_path / "r.jsonl"])
    assert rec["accuracy"] is not None  # the checkout's own store, found from elsewhere
    assert main([*argv, "--references", str(tmp_path / "nowhere")]) == 0
    assert "no accuracy scores: no reference stored under" in capsys.readouterr().err
