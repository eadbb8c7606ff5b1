"""Experiments as TOML files and sweeps over them: grid expansion, stable cell ids, resuming after a
kill, failed cells, worker processes and Dask."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hierbench.cli import main
from hierbench.datasets.base import ParamError
from hierbench.records import read_records
from hierbench.suites.executors import run_cell
from hierbench.suites.experiment import (
    RUN_DEFAULTS,
    available_experiments,
    cell_id,
    expand,
    find_experiment,
    load_experiment,
)
from hierbench.suites.sweep import default_out, run_sweep
from hierbench.suites.validate import validate

TINY = """
[experiment]
name = "tiny"
description = "tiny hier-linear cells"

[defaults]
dataset = "hier-linear"
steps = 20
checkpoints = 1
eval_draws = 100

[[runs]]
method = "meanfield"
data_params = { N = 5, n = 5, d = 2 }
seeds = [0, 1]

[[runs]]
method = "branch"
data_params = { N = 5, n = 5, d = 2 }
"""
# Passes validation (models are not built up front) and fails when the cell runs.
FAILING = """
[[runs]]
label = "missing data folder"
method = "meanfield"
dataset = "movielens-small"
data_params = { path = "/nonexistent/movielens" }
"""
NO_REFS = None  # the exact posterior is the reference on hier-linear; no store needed


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def by_cell(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for rec in records:
        out.setdefault(rec["cell_id"], []).append(rec)
    return out


def flaky_runner(kwargs, options):
    """A runner whose worker dies on seed 7 and which raises on seed 8 (outside run_one)."""
    if kwargs["seed"] == 7:
        os._exit(3)
    if kwargs["seed"] == 8:
        raise RuntimeError("escaped the harness")
    return run_cell(kwargs, options)


def pid_runner(kwargs, options):
    """A runner without JAX that says which process ran the cell (``pid``) and logs the call to
    ``$HIERBENCH_TEST_CALLS``.  Seed 9 hangs without a heartbeat (the watchdog's case); seed 5 works for
    3 s, beating every 0.1 s."""
    from hierbench.harness.loop import beat
    from hierbench.records import finish, new_record

    with open(os.environ["HIERBENCH_TEST_CALLS"], "a") as fh:
        fh.write(f"{kwargs['seed']}\n")
    if kwargs["seed"] == 9:
        time.sleep(600)
    if kwargs["seed"] == 5:
        for _ in range(30):
            beat()
            time.sleep(0.1)
    record = new_record(kwargs["method"], kwargs["dataset"], kwargs["data_params"], {}, kwargs["seed"])
    return finish(record, "ok", pid=os.getpid())


def calls(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.fixture(scope="module", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """One persistent compilation cache for this module's sweeps (`compilation_cache=True`; worker
    processes inherit the variable), so cells of the same shapes compile once.  JAX's cache settings
    are restored afterwards."""
    import jax

    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {key: getattr(jax.config, key) for key in keys}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HIERBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
    for key, value in saved.items():
        jax.config.update(key, value)
    try:
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # private API; resetting is a courtesy to later tests
        pass


def test_grid_expansion_layers_and_stable_ids(tmp_path):
    text = """
[defaults]
dataset = "hier-linear"
data_params = { N = [5, 6], n = 5, d = 2 }
seeds = [0, 1]
steps = 20

[[runs]]
method = "amortized"
method_params = { head = ["moments", "potential"], batch_groups = 2 }
[runs.quick]
method_params = { batch_groups = 3 }

[[runs]]
label = "mf"
method = "meanfield"
data_params = { N = 5 }
seeds = 0
[runs.quick]
steps = 7

[[runs]]  # the same cell as one above: listed once
label = "mf again"
method = "meanfield"
data_params = { N = 5 }
seeds = [0]

[quick]
seeds = [3]
steps = 10
checkpoints = 1
"""
    exp = load_experiment(write(tmp_path, text, "grid.toml"))
    assert exp.name == "grid"
    cells = expand(exp)
    assert len(cells) == 2 * 2 * 2 + 1  # N × head × seeds, then meanfield once
    first = cells[0].kwargs
    assert first == {
        "method": "amortized",
        "dataset": "hier-linear",
        "data_params": {"N": 5, "n": 5, "d": 2},
        "method_params": {"head": "moments", "batch_groups": 2},
        "steps": 20,
        "checkpoints": RUN_DEFAULTS["checkpoints"],
        "eval_draws": RUN_DEFAULTS["eval_draws"],
        "seed": 0,
    }
    # outermost axis first: N, then head, then seeds
    assert [
        (c.kwargs["data_params"]["N"], c.kwargs["method_params"]["head"], c.kwargs["seed"]) for c in cells[:4]
    ] == [
        (5, "moments", 0),
        (5, "moments", 1),
        (5, "potential", 0),
        (5, "potential", 1),
    ]
    assert cells[-1].label == "mf" and cells[0].label == "amortized head=moments batch_groups=2"
    assert len({c.cell_id for c in cells}) == len(cells)
    assert all(len(c.cell_id) == 16 and int(c.cell_id, 16) >= 0 for c in cells)
    # ids are content hashes: stable across loads, processes and key order (golden value)
    assert [c.cell_id for c in expand(load_experiment(tmp_path / "grid.toml"))] == [c.cell_id for c in cells]
    kwargs = {
        "method": "meanfield",
        "dataset": "hier-linear",
        "data_params": {"N": 5, "n": 5, "d": 2},
        "method_params": {},
        "seed": 0,
        "steps": 20,
        "checkpoints": 1,
        "eval_draws": 100,
    }
    assert cell_id(kwargs) == cell_id(dict(reversed(kwargs.items()))) == "2d875dd213b07afe"
    # --quick: [defaults] < [[runs]] < [quick] < [runs.quick]
    quick = expand(exp, quick=True)
    assert len(quick) == 2 * 2 * 1 + 2  # "mf" has its own quick steps: no longer the same as "mf again"
    assert {c.kwargs["seed"] for c in quick} == {3}
    assert {c.kwargs["method_params"]["batch_groups"] for c in quick[:4]} == {3}
    assert [c.kwargs["steps"] for c in quick[-3:]] == [10, 7, 10]
    assert not {c.cell_id for c in quick} & {c.cell_id for c in cells}
    assert default_out("grid", quick=True) == Path("results/sweeps/grid-quick/records.jsonl")


def test_run_defaults_are_run_ones():
    """An experiment's defaults are run_one's, but for steps: a cell states its count (the harness's
    10,000), never "the method's default", so that a method's default can change without changing what
    an experiment file means or its cells' ids."""
    from hierbench.harness import run_one
    from hierbench.harness.one import DEFAULT_STEPS, METHOD_STEPS

    sig = inspect.signature(run_one).parameters
    assert sig["steps"].default == METHOD_STEPS and RUN_DEFAULTS["steps"] == DEFAULT_STEPS
    assert RUN_DEFAULTS == {k: sig[k].default for k in ("checkpoints", "eval_draws")} | {
        "seeds": sig["seed"].default,
        "steps": DEFAULT_STEPS,
    }


CASES = """
[defaults]
dataset = "hier-linear"
data_params = { n = 5, d = 2 }
checkpoints = 1

[defaults.cases]
size = [{ data_params = { N = 5 }, steps = 20 }, { data_params = { N = 50 }, steps = 10, checkpoints = 2 }]
engine = [{ backend = "jax" }, { backend = "torch", backend_options = { compile = [false, true] } }]

[[runs]]
method = "meanfield"

[[runs]]
method = "branch"
cases.size = [{ data_params = { N = 7 }, steps = 5 }]   # replaces [defaults]' size axis

[quick]
steps = 3   # [quick] comes after the cases
"""


def test_cases_are_axes_that_vary_together(tmp_path):
    exp = load_experiment(write(tmp_path, CASES))
    cells = expand(exp)
    got = [
        (
            c.kwargs["method"],
            c.kwargs["data_params"]["N"],
            c.kwargs["steps"],
            c.kwargs["checkpoints"],
            c.kwargs["backend"],
            c.kwargs.get("backend_options"),
        )
        for c in cells
    ]
    jax_torch = [("jax", None), ("torch", {"compile": False}), ("torch", {"compile": True})]
    # case axes outermost, in order of appearance; a list inside a case is an axis of its own
    assert got == [("meanfield", 5, 20, 1, *e) for e in jax_torch] + [
        ("meanfield", 50, 10, 2, *e) for e in jax_torch
    ] + [("branch", 7, 5, 1, *e) for e in jax_torch]
    validate(cells, "cases")
    assert {c.kwargs["steps"] for c in expand(exp, quick=True)} == {3}
    # a cell has backend keys only where the experiment sets them (other experiments' ids are unchanged)
    plain = expand(load_experiment(write(tmp_path, TINY, "plain.toml")))
    assert all("backend" not in c.kwargs and "backend_options" not in c.kwargs for c in plain)


def test_run_sweep_runs_the_cells_it_is_given(tmp_path):
    exp = load_experiment(write(tmp_path, TINY))
    some = [c for c in expand(exp) if c.kwargs["method"] == "branch"]
    out = tmp_path / "records.jsonl"
    result = run_sweep(exp, out, jobs=0, references=NO_REFS, progress=False, cells=some)
    assert result.cells == 1 and not result.failed
    (rec,) = read_records([out])
    assert rec["cell_id"] == some[0].cell_id and rec["method"] == "branch"


def test_steps_chunk_steps_scoring_and_quick_skip(tmp_path):
    text = """
[defaults]
dataset = "movielens-synth"
data_params = { num_users = 50, layout = "store" }
budget_s = 30

[[runs]]
method = "branch"
method_params = { batch_groups = 8 }
chunk_steps = 5
scoring = { eval_segments = [1, 2] }

[[runs]]
method = "amortized"
steps = 100
[runs.quick]
skip = true

[quick]
budget_s = 10
"""
    exp = load_experiment(write(tmp_path, text, "keys.toml"))
    cells = expand(exp)
    assert [(c.kwargs["method"], c.kwargs["steps"]) for c in cells] == [
        ("branch", None),  # a budget and no steps: as many as fit it
        ("branch", None),
        ("amortized", 100),
    ]
    assert [c.kwargs.get("scoring") for c in cells] == [{"eval_segments": 1}, {"eval_segments": 2}, None]
    assert cells[0].kwargs["chunk_steps"] == 5 and "chunk_steps" not in cells[2].kwargs
    validate(cells, "keys")
    quick = expand(exp, quick=True)
    assert [c.kwargs["method"] for c in quick] == ["branch", "branch"]  # amortized skipped
    assert {c.kwargs["budget_s"] for c in quick} == {10}
    for bad, message in (
        (text.replace("chunk_steps = 5", "chunk_steps = 0"), "chunk_steps must be an integer >= 1"),
        (text.replace("eval_segments = [1, 2]", "segments = 2"), "unknown scoring option(s) segments"),
        (text.replace("skip = true", "skip = 1"), "skip must be true or false"),
        ("[experiment]\nstall_s = -1\n" + text, "stall_s must be a positive number"),
        ("[experiment]\nisolate = 'yes'\n" + text, "isolate must be true or false"),
    ):
        with pytest.raises(ParamError, match=re.escape(message)):
            validate(expand(load_experiment(write(tmp_path, bad, "bad.toml"))))


def test_isolation_gives_each_cell_a_fresh_process(tmp_path, monkeypatch):
    monkeypatch.setenv("HIERBENCH_TEST_CALLS", str(tmp_path / "calls"))
    path = write(tmp_path, TINY.split('[[runs]]\nmethod = "branch"')[0])  # 2 cells
    out = tmp_path / "records.jsonl"
    result = run_sweep(path, out, jobs=1, runner=pid_runner, isolate=True, references=NO_REFS)
    assert result.ran == {"ok": 2}
    pids = [r["pid"] for r in read_records([out])]
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_watchdog_records_a_stalled_cell_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """A worker silent for stall_s seconds (seed 9 hangs) is killed and its cell recorded as an error,
    once (it is not rerun as a crash suspect); the next cell runs in a fresh pool."""
    log = tmp_path / "calls"
    monkeypatch.setenv("HIERBENCH_TEST_CALLS", str(log))
    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [9, 0]"))
    out = tmp_path / "records.jsonl"
    result = run_sweep(path, out, jobs=1, runner=pid_runner, stall_s=2, references=NO_REFS)
    assert result.ran == {"error": 1, "ok": 2} and len(result.failed) == 1
    records = read_records([out])
    assert len(records) == len(by_cell(records)) == 3
    stalled = next(r for r in records if r["status"] == "error")
    assert stalled["seed"] == 9 and stalled["error"].startswith("no progress for 2 s")
    assert "XLA:CPU deadlock" in stalled["error"]
    assert sorted(calls(log)) == [0, 0, 9]  # the stalled cell ran once
    # without isolation the fresh pool's one worker ran both remaining cells
    assert len({r["pid"] for r in records if r["status"] == "ok"}) == 1


@pytest.mark.slow
def test_watchdog_with_two_workers_reruns_only_the_innocent_cell(tmp_path, monkeypatch):
    """With 2 isolated workers, killing the stalled one breaks the pool under the other, busy cell
    (seed 5, beating): that cell runs again and is recorded ok, the stalled one is recorded once as
    stalled, never as a crashed worker."""
    log = tmp_path / "calls"
    monkeypatch.setenv("HIERBENCH_TEST_CALLS", str(log))
    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [9, 5]"))
    out = tmp_path / "records.jsonl"
    result = run_sweep(path, out, jobs=2, runner=pid_runner, isolate=True, stall_s=1, references=NO_REFS)
    records = read_records([out])
    assert len(records) == len(by_cell(records)) == 3 and result.ran == {"error": 1, "ok": 2}
    errors = {r["seed"]: r["error"] for r in records if r["status"] == "error"}
    assert list(errors) == [9] and errors[9].startswith("no progress")
    assert calls(log).count(9) == 1


@pytest.mark.parametrize("name", ["scaling", "accuracy", "movielens", "theta_collapse"])
def test_shipped_experiments_are_valid(name):
    assert name in available_experiments()
    exp = load_experiment(Path(__file__).parents[2] / "benchmarks" / "experiments" / f"{name}.toml")
    assert exp.name == name and exp.description
    for quick in (False, True):
        cells = expand(exp, quick=quick)
        validate(cells, name)
        assert 0 < len(cells) <= (16 if quick else 200)
    full = expand(exp)
    if name in ("scaling", "accuracy", "theta_collapse"):
        sizes = {c.kwargs["data_params"]["N"] for c in full}
        assert {10, 100, 1000, 10_000} <= sizes
    if name == "scaling":
        assert 100_000 in sizes
        assert {c.label for c in full} >= {"dense", "branch (full data)", "branch (B=32)", "meanfield"}
        assert all(c.kwargs["data_params"]["N"] > 32 for c in full if c.label == "branch (B=32)")
    if name == "theta_collapse":
        assert {c.kwargs["method_params"]["condition_on_theta"] for c in full} == {True, False}


def test_scale_experiment():
    """experiments/scale.toml: the full run (as many steps as fit 600 s, isolated cells under a 15 min
    watchdog) and its quick smoke check (fixed steps, no budget, 3 strata, moments left out)."""
    exp = load_experiment(find_experiment("scale"))
    assert exp.isolate and exp.stall_s == 900
    full, quick = expand(exp), expand(exp, quick=True)
    validate(full, "scale")
    validate(quick, "scale")
    assert [c.label for c in full] == ["amortized (potential)", "amortized (moments)", "branch", "dense"]
    assert [c.label for c in quick] == ["amortized (potential)", "branch", "dense"]
    for cell in full:
        kw = cell.kwargs
        assert kw["data_params"] == {"num_users": 162_541, "seed": 0, "layout": "store"}
        assert (kw["steps"], kw["budget_s"], kw["chunk_steps"], kw["checkpoints"], kw["eval_draws"]) == (
            None,
            600,
            25,
            8,
            32,
        )
        if kw["method"] != "dense":
            assert kw["method_params"]["batch_groups"] == 256 and kw["method_params"]["max_strata"] == 16
    for cell in quick:
        kw = cell.kwargs
        assert kw["data_params"]["num_users"] == 2_000 and kw["steps"] == 40 and "budget_s" not in kw
        assert kw["scoring"] == {"eval_segments": 2} and kw["checkpoints"] == 1
        if kw["method"] != "dense":
            assert kw["method_params"]["max_strata"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "shipped experiments: accuracy"),
        ("[[runs]\nmethod = 1", "not valid TOML"),
        ("[experiment]\nname = 'x'", "at least one [[runs]]"),
        (TINY + "\n[[runs]]\nmethod = 'nope'\n", "valid methods: meanfield"),
        (TINY.replace('dataset = "hier-linear"', 'dataset = "nope"'), "valid datasets: hier-linear"),
        (TINY.replace("N = 5,", "N = 5, zz = 1,"), "valid: N, n, d"),
        (TINY.replace("N = 5,", "N = 0,"), "N (number of groups)"),
        (TINY.replace("seeds = [0, 1]", "seeds = [0, 1]\nsteps_ = 3"), "unknown key(s) steps_"),
        (
            TINY + "\n[[runs]]\nmethod = 'amortized'\ndata_params = {N = 5}\nmethod_params = {head = 'x'}\n",
            "head",
        ),
        (
            TINY + "\n[[runs]]\nmethod = 'branch'\ndata_params = {N = 5}\nmethod_params = {steps = 3}\n",
            "steps",
        ),
        (
            TINY + "\n[[runs]]\nmethod = 'branch'\ndata_params = {N = 5}\nmethod_params = {lr = 'x'}\n",
            "float",
        ),
        (TINY.replace("steps = 20", "steps = 0"), "steps must be an integer >= 1"),
        (
            TINY + "\n[[runs]]\nmethod = 'branch'\nbackend = 'numpy'\n",
            "backend must be one of jax, torch; got 'numpy'",
        ),
        (TINY.replace("seeds = [0, 1]", "cases.size = [{ label = 'x' }]"), "unknown key(s) label"),
        (TINY.replace("seeds = [0, 1]", "cases.size = []"), "non-empty list of tables"),
    ],
)
def test_bad_experiment_exits_2_and_runs_nothing(text, message, tmp_path, capsys):
    target = "nope" if text is None else str(write(tmp_path, text))
    out = tmp_path / "out" / "records.jsonl"
    assert main(["sweep", target, "--out", str(out), "--jobs", "0"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:.*not complete JSON")
def test_resume_skips_recorded_cells_and_failed_cells_are_recorded(tmp_path, capsys):
    path = write(tmp_path, TINY + FAILING)
    out = tmp_path / "records.jsonl"
    # a failing cell is recorded as an error and the rest still run; exit 1 names it
    argv = [
        "sweep",
        str(path),
        "--out",
        str(out),
        "--jobs",
        "0",
        "--references",
        "none",
        "--compilation-cache",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "sweep tiny: 4 cells; 4 run now (1 error, 3 ok), 0 skipped" in captured.out
    assert "--retry-failed" in captured.err
    records = read_records([out])
    cells = by_cell(records)
    assert len(records) == len(cells) == 4
    assert {r["experiment"] for r in records} == {"tiny"}
    failed = [r for r in records if r["status"] == "error"]
    assert len(failed) == 1 and "does not exist" in failed[0]["error"]
    assert failed[0]["label"] == "missing data folder" and failed[0]["cell"]["dataset"] == "movielens-small"
    assert all(r["status"] == "ok" and r["kl"] is not None for r in records if r is not failed[0])
    # a rerun skips every recorded cell (failed ones too) and duplicates nothing
    again = run_sweep(path, out, jobs=0, references=NO_REFS, compilation_cache=True)
    assert again.skipped == 4 and not again.ran and again.failed == [failed[0]["cell_id"]]
    assert len(read_records([out])) == 4
    # --dry-run lists the cells and their state, runs nothing
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("done  ") == 4
    # --retry-failed reruns only the cell whose records are all errors (after a torn last line, which
    # a crash mid-append would leave, the new record still starts a line of its own)
    with open(out, "a") as fh:
        fh.write('{"torn": ')
    retried = run_sweep(path, out, jobs=0, retry_failed=True, references=NO_REFS, compilation_cache=True)
    assert retried.ran == {"error": 1} and retried.skipped == 3
    after = by_cell(read_records([out]))
    assert len(after[failed[0]["cell_id"]]) == 2 and all(
        len(v) == 1 for k, v in after.items() if k != failed[0]["cell_id"]
    )


def test_killed_sweep_resumes_with_every_cell_once(tmp_path):
    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    out = tmp_path / "records.jsonl"
    cmd = [sys.executable, "-m", "hierbench.cli", "sweep", str(path), "--out", str(out), "--jobs", "0"]
    cmd += ["--references", "none", "--no-progress", "--compilation-cache"]
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no record within 120 s"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait()
    proc.stderr.close()
    partial = read_records([out])
    assert 1 <= len(partial) < 4, "the sweep finished before it could be killed"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(partial)} skipped" in done.stdout
    records = read_records([out])
    cells = by_cell(records)
    assert len(records) == len(cells) == 4
    assert set(cells) == {c.cell_id for c in expand(load_experiment(path))}
    assert all(r["status"] == "ok" for r in records)


def test_jobs_2_gives_the_same_cells(tmp_path):
    """--jobs 2 over spawned workers: the same cells, the same results as in this process, and a cell
    whose runner raises outside run_one is recorded as an error while the others run."""
    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0, 8]"))
    out = tmp_path / "records.jsonl"
    result = run_sweep(path, out, jobs=2, references=NO_REFS, compilation_cache=True, runner=flaky_runner)
    assert result.ran == {"ok": 2, "error": 1} and len(result.failed) == 1
    records = read_records([out])
    cells = by_cell(records)
    assert len(records) == len(cells) == 3
    assert set(cells) == {c.cell_id for c in expand(load_experiment(path))}
    error = next(r for r in records if r["status"] == "error")
    assert error["seed"] == 8 and "RuntimeError: escaped the harness" in error["error"]
    ok = next(r for r in records if r["status"] == "ok" and r["method"] == "meanfield")
    here = run_cell(ok["cell"], {"compilation_cache": True})
    assert here["elbo"] == pytest.approx(ok["elbo"], rel=1e-9) and here["steps"] == ok["steps"]


def test_crashed_worker_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [7, 0]"))
    out = tmp_path / "records.jsonl"
    result = run_sweep(path, out, jobs=1, references=NO_REFS, compilation_cache=True, runner=flaky_runner)
    assert result.ran == {"ok": 2, "error": 1}
    records = read_records([out])
    assert len(records) == len(by_cell(records)) == 3
    crashed = next(r for r in records if r["status"] == "error")
    assert crashed["seed"] == 7 and crashed["error"].startswith("WorkerCrashed")


@pytest.mark.slow
def test_worker_crash_with_several_cells_in_flight_finds_the_culprit(tmp_path):
    """With 2 workers busy when one dies, both cells are suspects: each reruns alone, so only the
    culprit is recorded as crashed."""
    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [7, 0, 8, 1]"))
    out = tmp_path / "records.jsonl"
    result = run_sweep(path, out, jobs=2, references=NO_REFS, compilation_cache=True, runner=flaky_runner)
    assert result.ran == {"ok": 3, "error": 2} and len(result.failed) == 2
    records = read_records([out])
    assert len(records) == len(by_cell(records)) == 5
    errors = {r["seed"]: r["error"] for r in records if r["status"] == "error"}
    assert errors[7].startswith("WorkerCrashed") and "escaped the harness" in errors[8]


@pytest.mark.slow
def test_dask_cluster_runs_the_cells(tmp_path):
    distributed = pytest.importorskip("distributed")
    path = write(tmp_path, TINY + FAILING)
    out = tmp_path / "records.jsonl"
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        result = run_sweep(
            path, out, executor="dask", scheduler=address, references=NO_REFS, compilation_cache=True
        )
    assert result.ran == {"ok": 3, "error": 1}
    records = read_records([out])
    assert len(records) == len(by_cell(records)) == 4
    assert {r["experiment"] for r in records} == {"tiny"}
    again = run_sweep(
        path, out, executor="dask", scheduler="tcp://127.0.0.1:1", references=NO_REFS, compilation_cache=True
    )
    assert again.skipped == 4 and not again.ran  # nothing to run: no connection is made


def test_dask_needs_a_scheduler(tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert main(["sweep", str(path), "--executor", "dask", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "--scheduler" in capsys.readouterr().err
