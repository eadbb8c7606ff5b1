"""One ELBO-gradient + Adam step of each family, ours and numpyro's, on ``hier-linear``,
and amortized VI's step on a MovieLens-scale minibatch.

Each benchmark times a compiled ``lax.scan`` of ``STEPS_PER_CALL`` steps of the method's ``step``
(the harness's own loop shape, which amortizes the ~10-50 µs dispatch of a call); compilation and a
first call happen before timing.  pytest-benchmark's numbers are per call; ``extra_info`` holds
``steps_per_call``, the analytic FLOPs, bytes and floor of one step (:mod:`hierbench.perf.floor`), and the
table at the end divides by the steps.  Sizes vary N (groups), n (rows per group) and S (draws per
step); dense runs only where its D×D factor is small (D = 110 and 1010).  Branch (full data and
B = 32 groups) and amortized (potential head, B = 32) have no numpyro counterpart: numpyro's
autoguides have no per-group conditional q(z_i | θ) and no amortization net.

``test_step_movielens`` times the scale study's amortized step (``experiments/scale.toml``: 256 users
over 16 size strata, rows gathered from the CSR store, :mod:`hierbench.methods.store_batches`) on a
20,000-user ``movielens-synth`` store (``layout=store``): the step's cost depends on the minibatch's
shape, not on N, and the full store's strata pad to about the same rows per step.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import pytest

from hierbench.methods import METHODS
from hierbench.perf.floor import amortized_cost, branch_cost, step_cost
from hierbench.perf.summary import RESULTS
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
# ours only: (family label, registry method, method params, (N, n, S))
OURS_ONLY = [
    ("branch", "branch", {}, (1000, 20, 8)),
    ("branch B=32", "branch", {"batch_groups": 32}, (1000, 20, 8)),
    ("amortized B=32", "amortized", {"head": "potential", "batch_groups": 32}, (1000, 20, 8)),
    ("amortized B=32", "amortized", {"head": "potential", "batch_groups": 32}, (10_000, 20, 8)),
]
ML_USERS, ML_BATCH = 20_000, 256


@functools.cache
def _model(num_groups: int, n: int):
    return build_model("hier-linear", {"N": num_groups, "n": n, "d": D_MODEL, "seed": 0})


def _time_steps(benchmark, machine, step, state, data, cost, info) -> None:
    """Compile a ``lax.scan`` of STEPS_PER_CALL steps, time it warm, record the row for the table."""
    keys = jax.random.split(jax.random.key(1), STEPS_PER_CALL)

    def run(keys, state, data):
        return jax.lax.scan(lambda s, k: step(k, s, data), state, keys)

    compiled = jax.jit(run).lower(keys, state, data).compile()  # compile excluded from timing

    def call():
        return jax.block_until_ready(compiled(keys, state, data))

    t0 = time.perf_counter()
    call()  # warm: first execution, page-in
    first = time.perf_counter() - t0
    rounds = max(5, min(200, int(TARGET_S / max(first, 1e-6))))
    floor_s = cost.floor_s(machine["matmul_gflops"], machine["bandwidth_gbs"])
    benchmark.group = f"{info['family']} N={info['N']} n={info['n']} S={info['S']}"
    benchmark.extra_info.update(
        info
        | {
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
        keys_ = ("family", "impl", "N", "n", "S")
        RESULTS.append({k: info[k] for k in keys_} | {"step_s": step_s, "floor_s": floor_s})


def _jax_data(algo):
    """The step's data: the method's batch source's arrays, in float64, on the device."""
    return jax.tree.map(jnp.asarray, algo.batches.arrays("float64"))


@pytest.mark.parametrize("impl", ["ours", "numpyro"])
@pytest.mark.parametrize(("family", "N", "n", "S"), CASES, ids=lambda v: str(v))
def test_step(benchmark, machine, family, N, n, S, impl):
    model = _model(N, n)
    method = IMPLS[family][impl]
    algo = METHODS[method](model, steps=1000, num_samples=S)
    info = {"family": family, "impl": impl, "method": method, "N": N, "n": n, "d": D_MODEL, "S": S}
    cost = step_cost(family, N, n, D_MODEL, S)
    _time_steps(benchmark, machine, algo.step, algo.init(jax.random.key(0)), _jax_data(algo), cost, info)


@pytest.mark.parametrize(("family", "method", "params", "size"), OURS_ONLY, ids=lambda v: str(v))
def test_step_ours_only(benchmark, machine, family, method, params, size):
    N, n, S = size
    model = _model(N, n)
    algo = METHODS[method](model, steps=1000, num_samples=S, **params)
    groups = params.get("batch_groups") or N
    d = D_MODEL
    if method == "branch":
        cost = branch_cost(N, groups * n, groups, d, d, d, S)
    else:  # hier-linear's rows are (x, y): F = d + 1 features
        cost = amortized_cost(groups * n, groups, d, d, d, d + 1, S)
    info = {"family": family, "impl": "ours", "method": method, "N": N, "n": n, "d": d, "S": S}
    _time_steps(benchmark, machine, algo.step, algo.init(jax.random.key(0)), _jax_data(algo), cost, info)


def test_step_movielens(benchmark, machine):
    """The scale study's amortized-potential step: 256 users of a 20,000-user movielens-synth store."""
    model = build_model("movielens-synth", {"num_users": ML_USERS, "layout": "store"})
    algo = METHODS["amortized"](model, head="potential", batch_groups=ML_BATCH, max_strata=16, steps=1000)
    store, strata = model.store, algo.batches.plan
    num_samples = algo.config["num_samples"]
    rows = sum(s.alloc * s.width for s in strata)
    users = sum(s.alloc for s in strata)
    real_rows = sum(s.alloc * float(store.train_sizes[s.groups].mean()) for s in strata)
    d = store.dim
    cost = amortized_cost(rows, users, model.dim_global, model.dim_local, d, d + 1, num_samples)
    info = {
        "family": f"amortized ML B={ML_BATCH}",
        "impl": "ours",
        "method": "amortized-potential (layout=store)",
        "N": ML_USERS,
        "n": round(real_rows / users),
        "d": d,
        "S": num_samples,
        "rows_per_step_padded": rows,
        "rows_per_step_expected_real": real_rows,
        "strata": len(strata),
        "dataset": "movielens-synth",
    }
    _time_steps(benchmark, machine, algo.step, algo.init(jax.random.key(0)), _jax_data(algo), cost, info)
