"""The perf suite's analytic FLOP counts (:mod:`hierbench.perf.floor`) against XLA's own count.

XLA's ``cost_analysis`` counts the compiled step's operations.  Where the step is dominated by
matrix products (the dense factor, the amortization net) the two must agree to within a small
factor: a formula that misses or double counts its leading term fails here.  Random-number
generation (threefry, integer work that XLA counts as flops) is kept negligible by the sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from hierbench.methods import METHODS
from hierbench.perf import floor
from hierbench.registry import build_model


def _xla_flops(method, model) -> float:
    data = jax.tree.map(jnp.asarray, method.batches.arrays("float64"))
    state = method.init(jax.random.key(0))
    compiled = jax.jit(method.step).lower(jax.random.key(1), state, data).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


@pytest.mark.parametrize(
    ("family", "method", "params", "N"),
    [
        ("dense", "dense", {}, 60),
        ("amortized", "amortized", {"head": "potential", "batch_groups": 16}, 200),
    ],
)
def test_analytic_flops_match_xla(family, method, params, N):
    n, d, S = 20, 10, 8
    model = build_model("hier-linear", {"N": N, "n": n, "d": d, "seed": 0})
    algo = METHODS[method](model, steps=100, num_samples=S, **params)
    if family == "dense":
        cost = floor.step_cost("dense", N, n, d, S)
    else:
        groups = params["batch_groups"]
        cost = floor.amortized_cost(groups * n, groups, d, d, d, d + 1, S)
    ratio = _xla_flops(algo, model) / cost.flops
    assert 0.5 < ratio < 2.5, f"XLA counts {ratio:.2f}x the analytic FLOPs of one {family} step"


def test_floor_is_the_roofline_bound():
    cost = floor.StepCost(flops=2e9, bytes=1e9)
    assert cost.floor_s(gflops=10.0, gbytes_per_s=10.0) == pytest.approx(0.2)  # compute-bound
    assert cost.floor_s(gflops=100.0, gbytes_per_s=2.0) == pytest.approx(0.5)  # memory-bound
