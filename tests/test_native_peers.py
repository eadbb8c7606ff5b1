"""The peers on native models and other libraries: numpyro native, blackjax, Pyro (torch backend).

Each produces an ``ok`` record through ``run_one`` with a few steps on hier-linear and on
hier-logistic.  Their first run in a process is mostly compilation (numpyro's eager ``SVI.init``, the
chunk, the scorer), so the fast suite runs one peer of each library (:data:`FAST_RUNS`) and the slow
one every peer on both datasets.
"""

from __future__ import annotations

import numpy as np
import pytest

from hierbench.datasets.base import ParamError
from hierbench.harness import run_one
from hierbench.methods import METHODS, PEERS
from hierbench.registry import is_sampler

TINY = {"N": 5, "n": 4, "d": 2}
FAST = {"steps": 40, "eval_draws": 100, "checkpoints": 1, "references": None}

# (method, method params, backend, steps): steps=1 for Pathfinder (one L-BFGS run)
NATIVE = [
    ("numpyro-native-autonormal", {"batch_groups": 2}, "jax", None),
    ("numpyro-native-autolowrank", {"rank": 2}, "jax", None),
    ("numpyro-native-automvn", {}, "jax", None),
    ("numpyro-native-semidais", {"batch_groups": 2, "K": 2}, "jax", None),
    ("blackjax-meanfield", {}, "jax", None),
    ("blackjax-fullrank", {}, "jax", None),
    ("blackjax-pathfinder", {"maxiter": 50}, "jax", 1),
    ("pyro-autonormal", {}, "torch", None),
    ("pyro-autolowrank", {"rank": 2}, "torch", None),
    ("pyro-automvn", {}, "torch", None),
]
DATASETS = ("hier-linear", "hier-logistic")


def test_registered_as_peers():
    names = {m for m, *_ in NATIVE}
    assert names <= PEERS <= set(METHODS)
    assert not any(is_sampler(METHODS[m]) for m in names)  # every one runs in the harness's loop


def _check(rec, method, dataset):
    assert rec["status"] == "ok", rec.get("error")
    assert np.isfinite(rec["elbo"]) and rec["elbo_se"] > 0
    if dataset == "hier-linear":  # an ELBO is a lower bound on the exact log evidence
        assert rec["elbo"] <= rec["log_evidence"] + 5 * rec["elbo_se"]
    mp = rec["method_params"]
    if method.startswith(("numpyro", "pyro")):
        assert mp["stl"] is False  # Trace_ELBO: the standard estimator
    if method in ("blackjax-meanfield", "blackjax-fullrank"):
        assert mp["stl"] is True  # blackjax's STL, as ours
    if method != "numpyro-native-semidais":
        assert rec["log_q_ok"] is True  # a Gaussian q: its log density checked on its own draws


def _run(method, params, backend, steps, dataset):
    kw = FAST | ({"steps": steps} if steps else {})
    return run_one(method, dataset, TINY, params, backend=backend, **kw)


FAST_RUNS = {  # one peer of each library, the two datasets between them
    ("numpyro-native-autonormal", "hier-linear"),  # subsampled plate: the members layout and its scaling
    ("blackjax-meanfield", "hier-logistic"),
    ("pyro-autonormal", "hier-linear"),  # the torch backend's LossRunner
}
CASES = [
    pytest.param(
        *row,
        dataset,
        id=f"{row[0]}-{dataset}",
        marks=[] if (row[0], dataset) in FAST_RUNS else [pytest.mark.slow],
    )
    for row in NATIVE
    for dataset in DATASETS
]


@pytest.mark.parametrize(("method", "params", "backend", "steps", "dataset"), CASES)
def test_peer_runs_ok(method, params, backend, steps, dataset):
    rec = _run(method, params, backend, steps, dataset)
    _check(rec, method, dataset)
    assert rec["backend"] == backend and rec["steps"] == (steps or FAST["steps"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["numpyro-native-autonormal", "numpyro-native-semidais"])
def test_subsampled_and_full_data_agree(method):
    """With enough steps a subsampled run lands near the full-data run (unbiased gradients)."""
    kw = {"steps": 1500, "eval_draws": 1000, "checkpoints": 1, "references": None}
    full = run_one(method, "hier-linear", {"N": 6, "n": 5, "d": 2}, {}, **kw)
    sub = run_one(method, "hier-linear", {"N": 6, "n": 5, "d": 2}, {"batch_groups": 3}, **kw)
    assert full["status"] == sub["status"] == "ok"
    assert abs(full["elbo"] - sub["elbo"]) < 0.05 * abs(full["log_evidence"])


def test_refusals():
    with pytest.raises(ParamError, match="sticking-the-landing"):
        run_one("numpyro-native-autonormal", "hier-linear", TINY, {"stl": True}, raise_param_errors=True)
    with pytest.raises(ParamError, match="--steps 1"):
        run_one("blackjax-pathfinder", "hier-linear", TINY, steps=10, raise_param_errors=True)
    with pytest.raises(ParamError, match="no optimizer settings"):
        run_one("blackjax-pathfinder", "hier-linear", TINY, {"lr": 0.1}, steps=1, raise_param_errors=True)
    rec = run_one("pyro-autonormal", "hier-linear", TINY, steps=5, references=None)  # the JAX backend
    assert rec["status"] == "error" and "--backend torch" in rec["error"]
    rec = run_one("pyro-autonormal", "radon", {}, steps=5, backend="torch", references=None)
    assert rec["status"] == "error" and "hier-linear, hier-logistic only" in rec["error"]
    rec = run_one("numpyro-native-automvn", "hier-linear", {"N": 1000}, steps=5, references=None)
    assert rec["status"] == "infeasible" and rec["memory_bytes"] > 1e9
