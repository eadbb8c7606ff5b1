"""Peer methods: numpyro's autoguides on our joint, Stan's ADVI/Pathfinder entries, the comparison table."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import optimal_meanfield_kl
from numpyro.infer.util import log_density

from hierbench.datasets.base import ParamError, log_joint
from hierbench.harness import run_one
from hierbench.methods import METHODS, PEERS
from hierbench.methods.batches import FullData
from hierbench.methods.numpyro_peers import SITE, numpyro_model
from hierbench.registry import build_model, is_sampler

NUMPYRO_PEERS = ["numpyro-autonormal", "numpyro-automvn", "numpyro-autolowrank"]
STAN_PEERS = ["stan-advi-meanfield", "stan-advi-fullrank", "stan-pathfinder"]
TINY = {"N": 5, "n": 5, "d": 2}


def test_peers_are_registered():
    assert set(NUMPYRO_PEERS + STAN_PEERS) <= set(PEERS) <= set(METHODS)  # more: test_native_peers.py
    assert not any(is_sampler(METHODS[m]) for m in NUMPYRO_PEERS)  # VI: harness-owned steps
    assert all(is_sampler(METHODS[m]) for m in STAN_PEERS)  # Stan owns its loop


@pytest.mark.parametrize(
    ("dataset", "params"),
    [
        ("hier-linear", {"N": 4, "n": 3, "d": 2}),
        ("hier-logistic", {"N": 4, "n": 3, "d": 2}),
        ("hier-linear", {"N": 12, "n": 6, "d": 2, "ragged": True, "seed": 3}),  # row layout
    ],
)
def test_numpyro_model_log_density_is_log_joint(dataset, params):
    model = build_model(dataset, params)
    data = jax.tree.map(jnp.asarray, FullData(model).arrays("float64"))
    assert ("rows" in data) == bool(params.get("ragged"))  # the ragged case evaluates the size buckets
    padded = {k: jnp.asarray(v) for k, v in model.data.items()}
    dim = model.dim_global + model.num_groups * model.dim_local

    @jax.jit  # one compile instead of eager op-by-op dispatch
    def both(w):
        theta, z = w[..., : model.dim_global], w[..., model.dim_global :].reshape(-1, model.num_groups, 2)
        ours = log_joint(model, theta, z, padded)
        theirs = jax.vmap(lambda v: log_density(numpyro_model(model), (data,), {}, {SITE: v})[0])(w)
        return ours, theirs

    ours, theirs = both(jax.random.normal(jax.random.key(0), (5, dim), jnp.float64))
    np.testing.assert_allclose(theirs, ours, rtol=1e-12)


@pytest.mark.parametrize("method", NUMPYRO_PEERS)
def test_numpyro_peer_runs_through_the_harness(method, linear_tiny_evidence):
    rec = run_one(method, "hier-linear", TINY, steps=300, eval_draws=400, checkpoints=2)
    assert rec["status"] == "ok", rec.get("error")
    assert np.isfinite(rec["elbo"]) and rec["elbo_se"] > 0
    assert rec["elbo"] <= linear_tiny_evidence + 5 * rec["elbo_se"]
    assert rec["steps"] == 300 and rec["compile_s"] > 0 and rec["steps_per_s"] > 0
    mp = rec["method_params"]
    assert mp["guide"].startswith("Auto") and mp["stl"] is False and mp["dtype"] == "float64"
    assert mp["num_samples"] == 8 and mp["lr"] == (3e-3 if method == "numpyro-automvn" else 1e-2)
    assert rec["accuracy"] is not None  # exact posterior: scored like ours


@pytest.fixture(scope="module")
def linear_tiny_evidence():
    return float(build_model("hier-linear", TINY).exact.log_evidence)


def test_autonormal_reaches_the_meanfield_optimum():
    """Same family, same optimum: numpyro's AutoNormal (standard gradient) lands where our meanfield
    (STL) does, and both at the analytic mean-field optimum of the conjugate model."""
    params = {"N": 4, "n": 5, "d": 2}
    best = optimal_meanfield_kl(build_model("hier-linear", params))
    kw = {"steps": 4000, "eval_draws": 4000, "checkpoints": 1, "references": None}
    ours = run_one("meanfield", "hier-linear", params, **kw)
    theirs = run_one("numpyro-autonormal", "hier-linear", params, **kw)
    assert ours["status"] == theirs["status"] == "ok"
    se = np.hypot(ours["elbo_se"], theirs["elbo_se"])
    assert abs(ours["elbo"] - theirs["elbo"]) <= 4 * se, (ours["elbo"], theirs["elbo"], se)
    assert best - 4 * theirs["elbo_se"] <= theirs["kl"] <= best + max(4 * theirs["elbo_se"], 0.05 * best)


def test_numpyro_peer_params_are_checked():
    with pytest.raises(ParamError, match="sticking-the-landing"):
        run_one("numpyro-autonormal", "hier-linear", TINY, {"stl": True}, steps=10, raise_param_errors=True)
    with pytest.raises(ParamError, match="float64"):
        METHODS["numpyro-autonormal"](build_model("hier-linear", TINY), dtype="float32")
    rec = run_one("numpyro-automvn", "hier-linear", {"N": 1000}, steps=10)
    assert rec["status"] == "infeasible" and rec["memory_bytes"] > 1e9


@pytest.mark.parametrize("method", STAN_PEERS)
def test_stan_vi_without_cmdstan_is_recorded_unavailable(method, monkeypatch):
    monkeypatch.setitem(sys.modules, "cmdstanpy", None)  # `import cmdstanpy` fails, as on this machine
    rec = run_one(method, "hier-linear", TINY)
    assert rec["status"] == "unavailable"
    assert rec["error"].startswith("no CmdStan") and "install_cmdstan" in rec["error"]


def test_list_marks_stan_vi_unavailable(monkeypatch, capsys):
    from hierbench.cli import main

    monkeypatch.setitem(sys.modules, "cmdstanpy", None)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PEERS)
    assert out.count("UNAVAILABLE here: no CmdStan") == len(STAN_PEERS)


class _FakeFit:
    def __init__(self, draws: int, shapes: dict):
        self.draws, self.shapes = draws, shapes

    def stan_variable(self, name, mean=None):
        assert mean in (None, False)  # q's draws, never its mean
        return np.zeros((self.draws, *self.shapes[name]))


@pytest.mark.parametrize("method", STAN_PEERS)
def test_stan_vi_with_cmdstanpy_records_ok(method, monkeypatch, tmp_path):
    """The cmdstanpy path against a stand-in module: the calls it makes and the record it gives."""
    calls = []
    shapes = {"theta": (2,), "z": (5, 2)}

    class CmdStanModel:
        def __init__(self, stan_file):
            calls.append(("build", stan_file))

        def variational(self, **kwargs):
            calls.append(("variational", kwargs))
            return _FakeFit(kwargs["output_samples"], shapes)

        def pathfinder(self, **kwargs):
            calls.append(("pathfinder", kwargs))
            return _FakeFit(kwargs["draws"], shapes)

    fake = types.ModuleType("cmdstanpy")
    fake.CmdStanModel = CmdStanModel
    fake.cmdstan_path = lambda: str(tmp_path)
    fake.cmdstan_version = lambda: (2, 36)
    monkeypatch.setitem(sys.modules, "cmdstanpy", fake)
    monkeypatch.setenv("HIERBENCH_CACHE_DIR", str(tmp_path))
    rec = run_one(method, "hier-linear", TINY, {"draws": 50}, seed=3)
    assert rec["status"] == "ok", rec.get("error")
    built = Path(calls[0][1])  # the dataset's program, copied into the project cache by content hash
    assert (
        calls[0][0] == "build"
        and built.parent == tmp_path / "cmdstan"
        and built.name.startswith("hier_linear-")
    )
    kind, kwargs = calls[1]
    assert kwargs["seed"] == 3 and kwargs["data"]["N"] == 5
    if method == "stan-pathfinder":
        assert kind == "pathfinder" and rec["steps"] == 1000
    else:
        assert kind == "variational" and kwargs["algorithm"] == method.rsplit("-", 1)[1]
        assert kwargs["iter"] == rec["steps"] == 10_000 and kwargs["grad_samples"] == 8
    assert rec["compile_s"] >= 0 and rec["wall_s"] >= 0


# ---------------------------------------------------------------------------------------------------
# `hierbench peers`: the plan (experiments/peers.toml) and the table (hierbench.peers)


def _plan(quick: bool = False) -> list:
    from hierbench.suites.experiment import expand, find_experiment, load_experiment

    return expand(load_experiment(find_experiment("peers")), quick=quick)


def _comparisons(cells: list) -> dict[tuple, list]:
    """The plan's cells by (dataset, N, family), in plan order."""
    from hierbench.peers import family_of

    out: dict[tuple, list] = {}
    for c in cells:
        k = c.kwargs
        family = family_of({"method": k["method"], "method_params": k["method_params"]})
        out.setdefault((k["dataset"], k["data_params"]["N"], family.name if family else None), []).append(c)
    return out


def test_peers_plan_has_every_peer_of_every_family():
    from hierbench.peers import BESIDE, FAMILIES

    cells = _plan()
    groups = _comparisons(cells)
    assert {k["dataset"] for k in (c.kwargs for c in cells)} == {"hier-linear", "hier-logistic"}
    assert all(c.kwargs["data_params"]["n"] == 20 and c.kwargs["data_params"]["d"] == 10 for c in cells)
    sizes = {f.name: {"hier-linear": set(), "hier-logistic": set()} for f in FAMILIES}
    for dataset, n, family in groups:
        if family is not None:
            sizes[family][dataset].add(n)
    for dataset in ("hier-linear", "hier-logistic"):
        assert sizes["mean-field"][dataset] == sizes["low-rank"][dataset] == {100, 1000}
        assert sizes["full-rank"][dataset] == {10, 1000}  # D = 110 to convergence; D = 10,010 speed only
        assert sizes["minibatch"][dataset] == {1000, 10_000}
    pyro_only_at = {"pyro-autonormal": {100}, "pyro-autolowrank": {100}, "pyro-automvn": {10, 1000}}
    for family in FAMILIES:
        for (dataset, n, name), members in groups.items():
            if name != family.name:
                continue
            methods = [c.kwargs["method"] for c in members]
            expected = [m for m in family.methods if n in pyro_only_at.get(m, {n})]
            if n == 1000 and family.name == "full-rank":
                expected = [m for m in expected if not m.startswith("stan-")]  # speed rows: no Stan
            assert sorted(methods) == sorted(expected), (dataset, n, family.name)
            assert methods[0] == family.ours  # ours first
    # Pathfinder beside every full-data family, at each of its sizes
    for dataset in ("hier-linear", "hier-logistic"):
        for n in (10, 100, 1000):
            assert sorted(c.kwargs["method"] for c in groups[(dataset, n, None)]) == sorted(BESIDE)
            assert all(c.kwargs["steps"] == c.kwargs["checkpoints"] == 1 for c in groups[(dataset, n, None)])


def test_peers_plan_runs_a_comparison_together_and_tunes_alike():
    """The tuned runs of one comparison are adjacent in the plan, with the same data, steps, scoring and
    tuning budget; Pyro trains on torch; a method with no step size of ours is not tuned."""
    from hierbench.peers import NO_STEP_SIZE

    cells = _plan()
    for (dataset, n, family), members in _comparisons(cells).items():
        tuned = [c for c in members if c.kwargs.get("tune")]
        if not tuned:
            continue
        index = [cells.index(c) for c in tuned]
        assert index == list(range(index[0], index[0] + len(index))), (dataset, n, family)
        for key in ("data_params", "steps", "checkpoints", "eval_draws", "tune", "tune_once"):
            assert len({repr(c.kwargs.get(key)) for c in tuned}) == 1, (dataset, n, family, key)
        once = tuned[0].kwargs["tune_once"]
        assert once["seed"] == 0 and once["steps"] < tuned[0].kwargs["steps"]
    for c in cells:
        k = c.kwargs
        assert (k.get("backend") == "torch") == k["method"].startswith("pyro-")
        if k["method"] in NO_STEP_SIZE:
            assert "tune" not in k
        elif not (k["method_params"].get("max_dim") and k["data_params"]["N"] == 1000):
            assert k["tune"] == "lr"  # every method with a step size, but the speed-only rows


def test_peers_plan_passes_the_sweeps_checks():
    from hierbench.suites.validate import validate

    for quick in (False, True):
        validate(_plan(quick), "peers")


def test_peers_quick_plan_covers_every_family_small():
    from hierbench.peers import FAMILIES

    cells = _plan(quick=True)
    assert {c.kwargs["dataset"] for c in cells} == {"hier-linear"}
    assert all(c.kwargs["data_params"]["N"] <= 20 for c in cells)
    methods = {c.kwargs["method"] for c in cells}
    assert all(set(f.methods) <= methods for f in FAMILIES)


def _record(method, elbos, steps_per_s, *, n=100, status="ok", compile_s=1.0, lr=None, tuning=None, **extra):
    trace = [{"step": i, "wall_s": float(i), "elbo": e, "elbo_se": 0.1} for i, e in enumerate(elbos)]
    rec = {
        "method": method,
        "dataset": "hier-linear",
        "num_groups": n,
        "data_params": {"N": n},
        "method_params": {"lr": lr} if lr is not None else {},
        "status": status,
        "elbo": elbos[-1] if status == "ok" else None,
        "elbo_se": 0.1,
        "steps": 2000,
        "steps_per_s": steps_per_s,
        "compile_s": compile_s,
        "trace": trace,
    }
    if tuning is not None:
        rec["tuning"] = tuning
    return rec | extra


def _tuning(chosen):
    return {
        "param": "lr",
        "grid": [0.1, 0.025],
        "chosen": chosen,
        "points": [{"lr": 0.1}, {"lr": 0.025}],
        "total_wall_s": 10.0,
        "total_compile_s": 2.5,
        "shared": True,
    }


def test_peers_table_from_records():
    from hierbench.peers import compare, markdown, time_to_common_target

    ours = _record("meanfield", [-100.0, -20.0, -10.0, -9.0], 200.0, tuning=_tuning(0.1), lr=0.1)
    numpyro = _record("numpyro-autonormal", [-100.0, -50.0, -15.0, -10.0], 100.0, compile_s=2.0)
    pyro = _record(
        "pyro-autonormal", [-100.0, -60.0], 50.0, status="diverged", error="non-finite loss | at 7"
    )
    stan = _record("stan-advi-meanfield", [], None, status="unavailable", error="no CmdStan; install it")
    pathfinder = _record("blackjax-pathfinder", [-100.0, -9.5], 0.5, compile_s=4.0)
    tuning_run = _record("meanfield", [-100.0, -1.0], 1.0, role="tuning")  # never a row
    other = _record("branch", [-100.0, -30.0], 10.0, n=1000, method_params={"batch_groups": 32})
    assert time_to_common_target(ours, -10.0) == 2.0 and time_to_common_target(numpyro, -10.0) == 3.0

    tables = compare([ours, numpyro, pyro, stan, pathfinder, tuning_run, other])
    assert [(t["dataset"], t["family"]) for t in tables] == [
        ("hier-linear", "mean-field"),
        ("hier-linear", "minibatch"),
    ]
    (group,) = tables[0]["groups"]
    # the target: the lowest final ELBO of the family's ok runs (not Pathfinder's, beside the family)
    assert group["N"] == 100 and group["target"] == -10.0 and group["target_by"] == "numpyro-autonormal"
    rows = {r["method"]: r for r in group["rows"]}
    assert [r["method"] for r in group["rows"]] == [
        "meanfield",
        "numpyro-autonormal",
        "pyro-autonormal",
        "stan-advi-meanfield",
        "blackjax-pathfinder",
    ]
    # ratios are this row / ours
    assert rows["meanfield"]["steps_per_s_x_ours"] == 1.0
    assert rows["numpyro-autonormal"]["steps_per_s_x_ours"] == 0.5
    assert rows["numpyro-autonormal"]["tt_target_x_ours"] == pytest.approx(3 / 2)
    assert rows["numpyro-autonormal"]["compile_s_x_ours"] == 2.0
    assert (
        rows["blackjax-pathfinder"]["tt_target"] == 1.0 and rows["blackjax-pathfinder"]["steps_per_s"] is None
    )
    # the tuning: chosen lr and the grid's cost; an untuned run shows its default lr
    assert rows["meanfield"]["lr"] == 0.1 and rows["meanfield"]["tuned"]
    assert rows["meanfield"]["tuning_s"] == 12.5 and rows["meanfield"]["tuning_runs"] == 2
    assert rows["numpyro-autonormal"]["tuning_s"] is None and not rows["numpyro-autonormal"]["tuned"]
    # a failed run: its status and error, never a number
    for failed in (rows["pyro-autonormal"], rows["stan-advi-meanfield"]):
        assert failed["status"] != "ok" and failed["error"]
        numbers = ("elbo", "steps_per_s", "tt_target", "compile_s", "lr", "tuning_s", "steps")
        assert all(failed[k] is None for k in numbers)
        assert all(failed[f"{k}_x_ours"] is None for k in ("steps_per_s", "tt_target", "compile_s"))

    text = markdown(tables)
    assert "## hier-linear: mean-field" in text and "## hier-linear: minibatch" in text
    assert "target ELBO -10.00 (set by numpyro-autonormal)" in text
    lines = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| 100 ")}
    assert "200.0 (1.00×)" in lines["`meanfield`"] and "0.1 tuned" in lines["`meanfield`"]
    assert "12.5 (2 runs)" in lines["`meanfield`"]
    assert (
        "100.0 (0.50×)" in lines["`numpyro-autonormal`"] and "3.00 (1.50×)" in lines["`numpyro-autonormal`"]
    )
    assert "**diverged**: non-finite loss \\| at 7" in lines["`pyro-autonormal`"]
    assert "-60" not in lines["`pyro-autonormal`"] and "50.0" not in lines["`pyro-autonormal`"]
    assert "**unavailable**: no CmdStan" in lines["`stan-advi-meanfield`"]
    assert "none (L-BFGS)" in lines["`blackjax-pathfinder`"]


def test_peers_table_when_ours_failed():
    """Without an ok run of ours there is no ratio; the others keep their numbers and the target."""
    from hierbench.peers import compare

    ours = _record("dense", [-100.0], 1.0, n=1000, status="diverged", error="factor broke down")
    peer = _record("numpyro-automvn", [-100.0, -50.0], 0.3, n=1000)
    ((group,),) = [t["groups"] for t in compare([ours, peer])]
    dense, mvn = group["rows"]
    assert group["target"] == -50.0 and dense["steps_per_s"] is None
    assert mvn["steps_per_s"] == 0.3 and mvn["steps_per_s_x_ours"] is None and mvn["tt_target"] == 1.0


def test_a_target_reached_at_initialization_gives_no_time():
    """Five steps from far away (the full-rank speed rows): every initial q already reaches the lowest
    final ELBO, so no run has a time to it, and the table says why instead of showing 0 s."""
    from hierbench.peers import compare, markdown, time_to_common_target

    dense = _record("dense", [-300.0, -200.0], 0.3, n=1000)
    mvn = _record("numpyro-automvn", [-300.0, -250.0], 0.3, n=1000)
    peer = _record("blackjax-fullrank", [-200.0, -350.0], 0.4, n=1000)  # sets the target, -350
    assert time_to_common_target(dense, -350.0) is None
    assert time_to_common_target(dense, -250.0) == 1.0  # a target reached after step 0 keeps its time
    ((group,),) = [t["groups"] for t in compare([dense, mvn, peer])]
    assert group["target"] == -350.0 and all(r["tt_target"] is None for r in group["rows"])
    assert "every run's initial q reaches it: no time to target" in markdown(compare([dense, mvn, peer]))


def test_peers_report_only_writes_the_summary(tmp_path, capsys):
    import json

    from hierbench.cli import main
    from hierbench.records import new_record

    records = tmp_path / "records.jsonl"
    lines = []
    for method, elbos, sps in (
        ("meanfield", [-100.0, -9.0], 200.0),
        ("numpyro-autonormal", [-100.0, -10.0], 100.0),
    ):
        rec = new_record(method, "hier-linear", {"N": 100}) | _record(method, elbos, sps)
        lines.append(json.dumps(rec))
    records.write_text("\n".join(lines) + "\n")
    assert main(["peers", "--report-only", "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## hier-linear: mean-field" in summary and "0.50×" in summary
    assert summary in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temporary left


def test_a_stopped_comparison_resumes_and_fresh_starts_over(tmp_path, monkeypatch, capsys):
    """`make peers` takes most of an hour: a stopped one resumes (the sweep skips recorded cells, so the
    records file must survive); --fresh sets the old records aside instead of deleting them."""
    import types

    from hierbench.cli import main
    from hierbench.suites import sweep

    seen = []

    def fake_sweep(experiment, records_file, **kwargs):
        seen.append(records_file.read_text() if records_file.exists() else None)
        records_file.touch()  # a sweep writes its records file
        return types.SimpleNamespace(failed=[])

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    records = tmp_path / "records.jsonl"
    records.write_text("")
    assert main(["peers", "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen == [""] and "resuming" in capsys.readouterr().err
    records.write_text("")
    assert main(["peers", "--fresh", "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen[1] is None and (tmp_path / "records.prev.jsonl").exists()


@pytest.mark.slow
def test_peers_quick_end_to_end(tmp_path):
    """`hierbench peers --quick`: every comparison at N = 10 (a few minutes on 2 cores)."""
    from hierbench.cli import main
    from hierbench.peers import FAMILIES

    assert main(["peers", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    for family in FAMILIES:
        assert f"## hier-linear: {family.name}" in summary
        assert all(f"`{m}`" in summary for m in family.methods)
    assert "`blackjax-pathfinder`" in summary and "tuned" in summary
