"""Peer methods: numpyro's autoguides on our joint, Stan's ADVI/Pathfinder entries, the comparison table."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density
from test_methods import optimal_meanfield_kl

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


def test_peer_comparison_table():
    from hierbench.peers import compare, markdown, time_to_common_target
    from hierbench.suites.experiment import expand, find_experiment, load_experiment

    runs = [c.kwargs for c in expand(load_experiment(find_experiment("peers")))]
    assert {(r["method"], r["data_params"]["N"]) for r in runs if r["method"].startswith("numpyro")} == {
        ("numpyro-autonormal", 100),
        ("numpyro-autonormal", 1000),
        ("numpyro-autolowrank", 100),
        ("numpyro-autolowrank", 1000),
        ("numpyro-automvn", 10),
        ("numpyro-automvn", 1000),  # per-step speed only: 20 steps
    }
    # ours and numpyro's run with the same settings, pair by pair
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        assert a["method_params"] == b["method_params"] and a["steps"] == b["steps"]
        assert a["data_params"] == b["data_params"] and not a["method"].startswith("numpyro")

    def rec(method, elbos, steps_per_s):
        trace = [{"step": i, "wall_s": float(i), "elbo": e, "elbo_se": 0.1} for i, e in enumerate(elbos)]
        return {
            "method": method,
            "dataset": "hier-linear",
            "num_groups": 100,
            "status": "ok",
            "elbo": elbos[-1],
            "elbo_se": 0.1,
            "steps": 2000,
            "steps_per_s": steps_per_s,
            "compile_s": 1.0,
            "trace": trace,
        }

    ours = rec("meanfield", [-100.0, -20.0, -10.0, -9.0], 200.0)
    theirs = rec("numpyro-autonormal", [-100.0, -50.0, -15.0, -10.0], 100.0)
    assert time_to_common_target(ours, -10.0) == 2.0 and time_to_common_target(theirs, -10.0) == 3.0
    (row,) = compare([ours, theirs])
    assert row["target_elbo"] == -10.0 and row["tt_target_ratio"] == pytest.approx(2 / 3)
    assert row["steps_per_s_ratio"] == 2.0
    assert "meanfield vs autonormal" in markdown([row])
