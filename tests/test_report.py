"""`hierbench report`: only comparable runs share a figure's line, every line is labelled by what differs,
failures are table rows (never curves), KL ≤ 0 is marked rather than clipped, unreadable lines are
skipped and counted, and the outputs are replaced as one set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hierbench._io import replace_files
from hierbench.cli import main
from hierbench.records import append_record, finish, new_record
from hierbench.reports.convergence import convergence_plan
from hierbench.reports.labels import labels_for
from hierbench.reports.report import make_report, write_report
from hierbench.reports.tables import summary_table

LOG_Z = -100.0


def run(
    method="meanfield", seed=0, data=None, status="ok", elbos=(-140.0, -110.0, -104.0), ses=None, **params
):
    """A finished hier-linear record with a trace (wall time 0, 1, 2, ...) against an exact log Z."""
    data = {"N": 4, "n": 3, "d": 2} | (data or {})
    rec = new_record(method, "hier-linear", data, {"lr": 0.01, "dtype": "float64"} | params, seed, "jax")
    ses = ses or [0.1] * len(elbos)
    trace = [
        {"step": 10 * i, "wall_s": float(i), "elbo": e, "elbo_se": s}
        for i, (e, s) in enumerate(zip(elbos, ses, strict=True))
    ]
    fields = dict(
        elbo=elbos[-1], elbo_se=ses[-1], log_evidence=LOG_Z, kl=LOG_Z - elbos[-1], steps=20, wall_s=2.0
    )
    fields |= dict(
        num_groups=data["N"], num_obs=12, trace=trace, kl_per_group=(LOG_Z - elbos[-1]) / data["N"]
    )
    return finish(rec, status, None if status == "ok" else f"{status}: why", **fields)


def diverged_dense():
    """The probe's dense run: recorded diverged, its ELBO +5e28 (a KL of -5e28 that used to be clipped)."""
    return run("dense", status="diverged", elbos=(-140.0, 5e28))


def test_a_diverged_run_is_a_table_row_not_a_curve():
    records = [run(), diverged_dense()]
    plan = convergence_plan(records)
    assert [c.label for c in plan.curves] == ["meanfield"]
    assert plan.panels[0].left_out == [("dense", "diverged")]
    assert "Not drawn, 1 run(s) (rows of summary.md, with their errors): dense: diverged." in plan.notes
    table = summary_table(records)
    row = table[table["method"] == "dense"].iloc[0]
    assert row["status"] == "diverged" and row["error"] == "diverged: why" and row["elbo"] == 5e28
    files = make_report(records)
    assert "| diverged" in files["summary.md"] and "diverged: why" in files["summary.md"]
    assert files["elbo_vs_time_hier-linear.png"].startswith(b"\x89PNG")


def test_every_failed_status_is_left_out_of_the_figure_and_kept_in_the_table():
    failures = [
        run("dense", status=s, elbos=(-140.0,)) for s in ("diverged", "error", "infeasible", "unavailable")
    ]
    plan = convergence_plan([run(), *failures])
    assert len(plan.curves) == 1
    assert sorted(why for _, why in plan.panels[0].left_out) == [
        "diverged",
        "error",
        "infeasible",
        "unavailable",
    ]
    assert list(summary_table([run(), *failures])["status"]) == [
        "diverged",
        "error",
        "infeasible",
        "unavailable",
        "ok",
    ]


def test_seeds_and_an_lr_variant_are_two_labelled_configurations():
    records = [
        run(seed=0),
        run(seed=1, elbos=(-150.0, -112.0, -105.0)),
        run(seed=0, lr=1e8, elbos=(-140.0, -900.0)),
    ]
    plan = convergence_plan(records)
    assert plan.labels == ["meanfield (lr=0.01)", "meanfield (lr=1e+08)"]
    assert [c.label for c in plan.curves] == [plan.labels[0], plan.labels[0], plan.labels[1]]
    assert [c.seed for c in plan.curves] == [0, 1, 0]  # one line per seed, none merged into another
    notes = " ".join(plan.notes)
    assert "Run seeds 0, 1" in notes and "share a colour, one thin line per seed" in notes
    assert "dtype=float64" in notes and "backend=jax" in notes  # what all lines share, said once


def test_labels_name_what_differs_within_a_method_and_nothing_common():
    """A setting is in a method's labels where that method's configurations differ in it; what each
    method has with one value (its own defaults) is said once, in the caption, by method."""
    records = [run(), run("lowrank", rank=5), run("amortized", head="potential", batch_groups=None)]
    records.append(run("amortized", head="moments", batch_groups=2, dtype="float32"))
    records.append(run("dense", lr=0.003))
    labels = labels_for(records)
    assert [labels(r) for r in records] == [
        "meanfield",
        "lowrank",
        "amortized (head=potential, batch_groups=all, dtype=float64)",
        "amortized (head=moments, batch_groups=2, dtype=float32)",
        "dense",
    ]
    assert labels.common_text() == (
        "backend=jax; meanfield, lowrank, amortized: lr=0.01; meanfield, lowrank, dense: dtype=float64; "
        "lowrank: rank=5; dense: lr=0.003"
    )


def test_configurations_that_would_share_a_label_name_what_tells_them_apart():
    a, b = run(), run()
    b["method_params"]["width"] = 8  # the same method and settings, but one has a setting the other lacks
    labels = labels_for([a, b])
    assert labels(a) == "meanfield (width=unset)" and labels(b) == "meanfield (width=8)"


def test_runs_on_different_data_never_share_a_curve():
    records = [run(), run(data={"n": 5}), run(data={"d": 3}), run(data={"N": 8})]
    plan = convergence_plan(records)
    assert len(plan.panels) == 4 and all(len(p.curves) == 1 for p in plan.panels)
    assert [p.title for p in plan.panels] == [
        "N=4, n=3, d=2",
        "N=4, n=5, d=2",
        "N=4, n=3, d=3",
        "N=8, n=3, d=2",
    ]
    assert plan.labels == ["meanfield"]  # the same configuration, the same colour, in its panels
    one = convergence_plan([run(), run("lowrank")])
    assert len(one.panels) == 1 and "data N=4, n=3, d=2" in one.title


def test_a_kl_estimate_at_or_below_zero_is_marked_at_the_floor_never_clipped():
    noise = run(elbos=(-140.0, -100.5, -99.99))  # KL -0.01 with se 0.1: noise around a converged fit
    broken = run("dense", elbos=(-140.0, -90.0))  # an ELBO 100 standard errors above log Z
    plan = convergence_plan([noise, broken])
    curve, bad = plan.curves
    assert curve.x == [1.0, 2.0] and curve.y[0] == pytest.approx(0.5 / 4) and curve.noise_x == [2.0]
    assert curve.y[1] != curve.y[1]  # NaN: the line breaks; no tiny positive value stands in for it
    assert bad.bad_x == [1.0] and bad.noise_x == []
    assert plan.panels[0].floor == pytest.approx(0.01)  # a decade below the smallest positive KL, 0.125
    notes = " ".join(plan.notes)
    assert "▽" in notes and "Red ✕" in notes


def test_the_accuracy_table_keeps_every_run_of_a_cell():
    block = {"std_mean_err_mean": 0.1}
    records = [run(seed=0), run(seed=1), run(lr=1e8), run("dense", status="infeasible", elbos=(-140.0,))]
    for rec, err in zip(records[:3], (0.1, 0.2, 9.0), strict=True):
        rec["accuracy"] = {"global": block | {"std_mean_err_mean": err}, "local": block}
    md = make_report(records)["accuracy.md"]
    assert "seed 0: 0.100 / 0.100 · –; seed 1: 0.200 / 0.100 · –" in md  # two seeds, neither dropped
    assert "| meanfield (lr=1e+08) | 9.000 / 0.100 · –" in md and "| dense                | infeasible" in md


def write_bad_file(path: Path) -> None:
    """Two good records among a non-UTF-8 byte, a JSON object of the wrong shape, a JSON list and a
    record whose ELBO is a string."""
    good = [json.dumps(run(seed=s)).encode() for s in (0, 1)]
    non_utf8 = json.dumps(run(seed=2)).encode().replace(b"meanfield", b"meanfi\xffeld")
    high = json.dumps(run(seed=3) | {"elbo": "high"}).encode()
    path.write_bytes(b"\n".join([good[0], non_utf8, b'{"foo": 1}', b"[1, 2, 3]", high, good[1]]) + b"\n")


def test_unreadable_lines_are_skipped_counted_and_said(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    write_bad_file(path)
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped 4 unreadable record line(s)" in err
    for line, why in [
        (2, "not UTF-8"),
        (3, "missing field"),
        (4, "not a JSON object"),
        (5, "field 'elbo' is str"),
    ]:
        assert f"{path}:{line}: {why}" in err
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "Read 2 record(s) from `records.jsonl`; skipped 4 unreadable line(s)" in md
    assert "`records.jsonl:2` (not UTF-8)" in md
    assert (out / "elbo_vs_time_hier-linear.png").stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_clean_file_says_it_skipped_nothing(tmp_path):
    md = make_report([run()], [], ["r.jsonl"])["summary.md"]
    assert "Read 1 record(s) from `r.jsonl`; skipped 0 unreadable line(s)." in md


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def previous_report(tmp_path):
    """A folder with a report of two runs, and a records file of other runs (another dataset's figure,
    an accuracy block) whose report would replace every output."""
    first = tmp_path / "first.jsonl"
    for rec in (run(), diverged_dense()):
        append_record(first, rec)
    out = tmp_path / "report"
    assert main(["report", str(first), "--out", str(out)]) == 0
    (out / "records.jsonl").write_text("not the report's\n")  # a file the report does not own
    second = tmp_path / "second.jsonl"
    radon = run() | {"dataset": "radon", "accuracy": {"global": {"std_mean_err_mean": 0.1}}}
    for rec in (run(seed=1), radon):
        append_record(second, rec)
    return out, second


def test_a_report_that_fails_while_writing_leaves_the_previous_one(previous_report, monkeypatch):
    out, second = previous_report
    before = snapshot(out)
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the first output goes into place, then the second fails
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        main(["report", str(second), "--out", str(out)])
    monkeypatch.undo()
    assert Path(calls[0]).parent == out and snapshot(out) == before  # the first was put back


def test_a_report_that_fails_while_making_leaves_the_previous_one(previous_report, monkeypatch):
    import hierbench.reports.report

    out, second = previous_report
    before = snapshot(out)

    def broken(plan):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(hierbench.reports.report, "trace_figure", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        main(["report", str(second), "--out", str(out)])
    assert snapshot(out) == before


def test_a_new_report_replaces_the_whole_set(previous_report):
    out, second = previous_report
    assert main(["report", str(second), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.csv",
        "accuracy.md",
        "elbo_vs_time_hier-linear.png",
        "elbo_vs_time_radon.png",
        "records.jsonl",
        "summary.csv",
        "summary.md",
        "trace.csv",
    ]
    write_report([run(seed=5)], out)  # no accuracy now: the old accuracy tables and radon figure go
    assert sorted(p.name for p in out.iterdir()) == [
        "elbo_vs_time_hier-linear.png",
        "records.jsonl",
        "summary.csv",
        "summary.md",
        "trace.csv",
    ]


def test_replace_files_puts_everything_back_when_a_removal_fails(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("old a")
    (tmp_path / "gone").write_text("old gone")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name == "gone":
            raise PermissionError("locked")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        replace_files({tmp_path / "a": "new a", tmp_path / "b": b"new b"}, remove=[tmp_path / "gone"])
    monkeypatch.undo()
    assert snapshot(tmp_path) == {"a": b"old a", "gone": b"old gone"}
    replace_files({tmp_path / "a": "new a", tmp_path / "b": b"new b"}, remove=[tmp_path / "gone"])
    assert snapshot(tmp_path) == {"a": b"new a", "b": b"new b"}


def test_a_run_refused_before_its_defaults_shares_its_configurations_label():
    """dense recorded infeasible at a larger N carries only the settings asked for (max_dim): it is the
    same configuration as the dense run that ran, not one labelled by eight 'unset' settings."""
    ran = run("dense", lr=0.003, max_dim=200)
    refused = finish(
        new_record("dense", "hier-linear", {"N": 100}, {"max_dim": 200}), "infeasible", "too big"
    )
    labels = labels_for([run(), ran, refused])
    assert labels(ran) == labels(refused) == "dense"
