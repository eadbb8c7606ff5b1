"""The default benchmark (`make bench`): the five families on `hier-linear`, N ∈ {10, 100, 1000}.

Each entry is (method, method params, steps).  Budgets were set so the whole plan fits in ten
minutes on two cores; `dense` is attempted at every N and recorded as ``infeasible`` where its
D×D factor exceeds the plan's ``max_dim``.
"""

from __future__ import annotations

from typing import Any

BENCH_DATASET = "hier-linear"
BENCH_SIZES = (10, 100, 1000)
BENCH_DATA = {"n": 20, "d": 10, "seed": 0}
BENCH_CHECKPOINTS = 10  # trace points per run (each a 1000-draw float64 ELBO, off the clock)

# (method, method params, steps)
BENCH_PLAN: list[tuple[str, dict[str, Any], int]] = [
    ("meanfield", {}, 3_000),
    ("lowrank", {"rank": 5}, 3_000),
    # dense is capped at D ≤ 200 here (N=10): at D=1010 (N=100) it runs ~30-38 steps/s on 2 cores, so
    # 20k steps would take the whole budget (and there it trains without STL, see methods/dense.py).
    # Larger N is recorded as `infeasible`.
    ("dense", {"max_dim": 200}, 20_000),
    ("branch", {}, 4_000),
    ("branch", {"batch_groups": 10}, 10_000),
    ("amortized", {"head": "moments", "batch_groups": 32}, 4_000),
    ("amortized", {"head": "potential", "batch_groups": 32}, 10_000),
]


def plan(sizes: tuple[int, ...] = BENCH_SIZES) -> list[dict[str, Any]]:
    """The benchmark's runs as keyword arguments for :func:`hierbench.harness.run_one`."""
    runs = []
    for num_groups in sizes:
        for method, params, steps in BENCH_PLAN:
            if method == "branch" and params.get("batch_groups", 0) >= num_groups:
                continue  # subsampled branch with B >= N is the full-data run already listed
            runs.append(
                {
                    "method": method,
                    "dataset": BENCH_DATASET,
                    "data_params": BENCH_DATA | {"N": num_groups},
                    "method_params": dict(params),
                    "steps": steps,
                    "seed": 0,
                    "checkpoints": BENCH_CHECKPOINTS,
                }
            )
    return runs


# The accuracy plan (`hierbench bench --plan accuracy`): every VI method on every dataset at its
# default size, scored against the stored references (`make references` first).  Budgets keep the
# plan near ten minutes on two cores; dense is capped at D ≤ 200 (recorded `infeasible` above it).
ACCURACY_CHECKPOINTS = 2
ACCURACY_PLAN: list[tuple[str, dict[str, Any], int]] = [
    ("meanfield", {}, 2_000),
    ("lowrank", {"rank": 5}, 2_000),
    ("dense", {"max_dim": 200}, 10_000),
    ("branch", {}, 2_000),
    ("amortized", {"head": "potential", "batch_groups": 32}, 4_000),
]


def accuracy_plan(datasets: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The accuracy plan's runs (keyword arguments for :func:`hierbench.harness.run_one`) on the
    datasets whose default instance has a reference (:func:`hierbench.reference.reference_datasets`:
    the exact posterior, or a gated NUTS reference from `make references`)."""
    from hierbench.reference import reference_datasets

    runs = []
    for dataset in datasets or reference_datasets():
        for method, params, steps in ACCURACY_PLAN:
            runs.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "data_params": {},
                    "method_params": dict(params),
                    "steps": steps,
                    "seed": 0,
                    "checkpoints": ACCURACY_CHECKPOINTS,
                }
            )
    return runs
