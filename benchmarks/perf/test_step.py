"""One ELBO-gradient + Adam step of each Gaussian family, ours and numpyro's, on ``hier-linear``.

Each benchmark times a compiled ``lax.scan`` of ``STEPS_PER_CALL`` steps of the method's ``step``
(the harness's own loop shape, which amortizes the ~10-50 µs dispatch of a call); compilation and a
first call happen before timing.  pytest-benchmark's numbers are per call; ``extra_info`` holds
``steps_per_call``, the analytic FLOPs, bytes and floor of one step (:mod:`perf_floor`), and the
table at the end divides by the steps.  Sizes vary N (groups), n (rows per group) and S (draws per
step); dense runs only where its D×D factor is small (D = 110 and 1010).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import pytest
from conftest import RESULTS
from perf_floor import step_cost

from hierbench.methods import METHODS
from hierbench.registry import build_model

D_MODEL = 10  # d
STEPS_PER_CALL = 10
TARGET_S = 1.0  # timed seconds per benchmark (rounds chosen from the warm call)
IMPLS = {
    "meanfield": {"ours": "meanfield", "numpyro": "numpyro-autonormal"},
    "lowrank": {"ours": "lowrank", "numpyro": "numpyro-autolowrank"},
    "dense": {"ours": "dense", "numpyro": "numpyro-automvn"},
}
SIZES = [(100, 20, 8), (1000, 20, 8), (1000, 100, 8), (1000, 20, 32)]  # (N, n, S)
DENSE_SIZES = [(10, 20, 8), (100, 20, 8)]
CASES = [(f, *size) for f in ("meanfield", "lowrank") for size in SIZES] + [
    ("dense", *size) for size in DENSE_SIZES
]


@functools.cache
def _model(num_groups: int, n: int):
    return build_model("hier-linear", {"N": num_groups, "n": n, "d": D_MODEL, "seed": 0})


@pytest.mark.parametrize("impl", ["ours", "numpyro"])
@pytest.mark.parametrize(("family", "N", "n", "S"), CASES, ids=lambda v: str(v))
def test_step(benchmark, machine, family, N, n, S, impl):
    model = _model(N, n)
    algo = METHODS[IMPLS[family][impl]](model, steps=1000, num_samples=S)
    data = {k: jnp.asarray(v, jnp.float64) for k, v in model.data.items()}
    state = algo.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), STEPS_PER_CALL)

    def run(keys, state, data):
        return jax.lax.scan(lambda s, k: algo.step(k, s, data), state, keys)

    compiled = jax.jit(run).lower(keys, state, data).compile()  # compile excluded from timing

    def call():
        return jax.block_until_ready(compiled(keys, state, data))

    t0 = time.perf_counter()
    call()  # warm: first execution, page-in
    first = time.perf_counter() - t0
    rounds = max(5, min(200, int(TARGET_S / max(first, 1e-6))))
    cost = step_cost(family, N, n, D_MODEL, S)
    floor_s = cost.floor_s(machine["matmul_gflops"], machine["bandwidth_gbs"])
    benchmark.group = f"{family} N={N} n={n} S={S}"
    benchmark.extra_info.update(
        {
            "family": family,
            "impl": impl,
            "method": IMPLS[family][impl],
            "N": N,
            "n": n,
            "d": D_MODEL,
            "S": S,
            "steps_per_call": STEPS_PER_CALL,
            "flops_per_step": cost.flops,
            "bytes_per_step": cost.bytes,
            "floor_s_per_step": floor_s,
        }
    )
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats:  # None under --benchmark-disable
        step_s = benchmark.stats.stats.median / STEPS_PER_CALL
        benchmark.extra_info["median_s_per_step"] = step_s
        benchmark.extra_info["measured_over_floor"] = step_s / floor_s
        RESULTS.append(
            {"family": family, "impl": impl, "N": N, "n": n, "S": S, "step_s": step_s, "floor_s": floor_s}
        )
