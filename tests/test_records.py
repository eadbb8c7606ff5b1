"""The record schema (hierbench.records): constructors, the validating reader that skips and counts what
it cannot read (file:line), the committed records, and `hierbench report` on a file with bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hierbench._io import REPO_ROOT
from hierbench.cli import main
from hierbench.records import (
    REQUIRED,
    SCHEMA_VERSION,
    STATUSES,
    append_record,
    failed_record,
    finish,
    new_record,
    read_records,
    validate,
)


def ok_record(seed: int = 0, **fields) -> dict:
    """A finished ``ok`` record of a small hier-linear run, with two trace points."""
    rec = new_record("meanfield", "hier-linear", {"N": 4, "n": 3, "d": 2}, {"lr": 0.01}, seed, "jax")
    trace = [{"step": 0, "wall_s": 0.0, "elbo": -90.0}, {"step": 20, "wall_s": 0.5, "elbo": -30.0 - seed}]
    return finish(
        rec,
        "ok",
        elbo=-30.0 - seed,
        elbo_se=0.1,
        log_evidence=-29.0,
        kl=1.0 + seed,
        kl_per_group=(1.0 + seed) / 4,
        steps=20,
        grad_evals=20,
        wall_s=0.5,
        compile_s=0.2,
        num_groups=4,
        num_obs=12,
        trace=trace,
        **fields,
    )


BAD_LINES = {  # line content -> what the reader must say about it
    b"\xff\xfe not utf-8\n": "not UTF-8",
    b'{"foo": 1}\n': "missing field 'record_id'",
    b"[1, 2, 3]\n": "not a JSON object but list",
}


def write_mixed(path: Path) -> dict[int, str]:
    """A records file with two good records among bad lines (the last one torn); returns
    line number -> the reason expected for each bad line."""
    high = json.dumps(ok_record(1) | {"elbo": "high"}).encode() + b"\n"
    lines = [json.dumps(ok_record(0)).encode() + b"\n", *BAD_LINES, high, json.dumps(ok_record(2)).encode()]
    lines[-1] += b"\n"
    lines.append(b'{"record_id": "torn", "trac')  # a crash mid-append
    path.write_bytes(b"".join(lines))
    expected = {i + 2: why for i, why in enumerate(BAD_LINES.values())}
    return expected | {5: "field 'elbo' is str", 7: "not complete JSON"}


def test_reader_skips_and_counts_every_bad_line_by_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    expected = write_mixed(path)
    with pytest.warns(UserWarning, match=r"skipped 5 unreadable record line\(s\)") as caught:
        records = read_records([path])
    assert [r["seed"] for r in records] == [0, 2]
    assert [(f, n) for f, n, _ in records.skipped] == [(str(path), n) for n in sorted(expected)]
    for (_, num, why), want in zip(records.skipped, (expected[n] for n in sorted(expected)), strict=True):
        assert want in why, (num, why)
    assert f"{path}:2 (not UTF-8)" in str(caught[0].message)
    quiet = read_records([path], warn=False)  # the same, without the warning
    assert quiet == records and quiet.skipped == records.skipped


def test_finish_refuses_an_unknown_status_and_a_failure_without_its_reason():
    with pytest.raises(ValueError, match="status must be one of"):
        finish(new_record("meanfield", "hier-linear"), "done")
    for status in STATUSES:
        if status != "ok":
            with pytest.raises(ValueError, match="needs an error message"):
                finish(new_record("meanfield", "hier-linear"), status)
    rec = finish(new_record("dense", "hier-linear"), "infeasible", "needs 3 GiB", memory_bytes=3.0 * 2**30)
    assert rec["status"] == "infeasible" and rec["error"] == "needs 3 GiB" and validate(rec) == []


def test_constructed_records_validate_and_round_trip(tmp_path):
    fresh = new_record("branch", "radon", seed=3)
    assert validate(fresh) == [] and fresh["status"] == "error"  # an unfinished run is never a result
    assert set(REQUIRED) <= set(fresh) and fresh["schema_version"] == SCHEMA_VERSION
    failed = failed_record({"method": "branch", "dataset": "radon", "seed": 1}, "error", "WorkerCrashed")
    assert validate(failed) == [] and failed["error"] == "WorkerCrashed"
    assert validate(ok_record()) == []
    path = tmp_path / "r.jsonl"
    for rec in (fresh, failed, ok_record(nan_field=float("nan"))):
        append_record(path, rec)
    back = read_records([path])
    assert not back.skipped and [r["seed"] for r in back] == [3, 1, 0]
    assert back[2]["nan_field"] is None  # non-finite floats are written as null


def test_validate_names_what_is_wrong():
    rec = ok_record()
    assert validate(rec | {"schema_version": SCHEMA_VERSION + 1})[0].startswith("schema_version")
    assert "status 'done' is not one of" in validate(rec | {"status": "done"})[0]
    assert validate(rec | {"seed": True}) == ["field 'seed' is bool, not int"]
    assert validate(rec | {"trace": [{"step": 0}]}) == ["trace[0] has no valid wall_s, elbo"]
    assert validate({k: v for k, v in rec.items() if k != "steps"}) == ["missing field 'steps'"]


def test_every_committed_record_validates():
    """The legacy records under results/ stay readable: every line of every records file is a valid
    record (a schema change that breaks them must migrate them, or bump SCHEMA_VERSION knowingly)."""
    paths = sorted((REPO_ROOT / "results").glob("**/records.jsonl"))
    if not paths:
        pytest.skip("no committed records")
    records = read_records(paths, warn=False)
    assert records.skipped == []
    lines = sum(1 for p in paths for line in p.read_bytes().splitlines() if line.strip())
    assert len(records) == lines
    # every record whose model was built has its group count (readers use it instead of guessing)
    ran = [r for r in records if r["status"] in ("ok", "diverged")]
    assert ran and all(isinstance(r["num_groups"], int) for r in ran)


def test_report_on_a_file_with_bad_lines_reports_them_and_exits_0(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    write_mixed(path)
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped 5 unreadable record line(s)" in captured.err and f"{path}:2: not UTF-8" in captured.err
    assert "2 record(s) reported; 5 unreadable line(s) skipped" in captured.out
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "skipped 5 unreadable line(s)**" in md and "`records.jsonl:7` (not complete JSON)" in md
    assert sorted(p.name for p in out.iterdir()) == [
        "elbo_vs_time_hier-linear.png",
        "summary.csv",
        "summary.md",
        "trace.csv",
    ]  # and no temporary file left behind


def test_report_that_fails_leaves_no_partial_output(tmp_path, monkeypatch):
    import hierbench.reports.report

    path = tmp_path / "records.jsonl"
    for seed in (0, 1):
        append_record(path, ok_record(seed))

    def broken(df):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(hierbench.reports.report, "trace_figure", broken)
    out = tmp_path / "report"
    with pytest.raises(RuntimeError, match="figure failed"):
        main(["report", str(path), "--out", str(out)])
    assert not out.exists() or not list(out.iterdir())


def test_report_on_a_file_without_a_readable_record_is_exit_2(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"foo": 1}\n[1, 2]\n')
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 2
    assert "no readable record (2 line(s) skipped)" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
