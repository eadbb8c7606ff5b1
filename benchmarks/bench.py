"""The default benchmark (`make bench`): the five families on `hier-linear`, N ∈ {10, 100, 1000}.

Each entry is (method, method params, steps).  Budgets were set so the whole plan fits in ten
minutes on two cores; `dense` is attempted at every N and recorded as ``infeasible`` where its
D×D factor exceeds its ``max_dim``.
"""

from __future__ import annotations

from typing import Any

BENCH_DATASET = "hier-linear"
BENCH_SIZES = (10, 100, 1000)
BENCH_DATA = {"n": 20, "d": 10, "seed": 0}

# (method, method params, steps)
BENCH_PLAN: list[tuple[str, dict[str, Any], int]] = [
    ("meanfield", {}, 10_000),
    ("lowrank", {"rank": 5}, 10_000),
    ("dense", {}, 20_000),
    ("branch", {}, 10_000),
    ("branch", {"batch_groups": 10}, 10_000),
    ("amortized", {"head": "moments", "batch_groups": 32}, 10_000),
    ("amortized", {"head": "potential", "batch_groups": 32}, 10_000),
]


def plan(sizes: tuple[int, ...] = BENCH_SIZES) -> list[dict[str, Any]]:
    """The benchmark's runs as keyword arguments for :func:`hierbench.harness.run_one`."""
    runs = []
    for num_groups in sizes:
        for method, params, steps in BENCH_PLAN:
            if params.get("batch_groups", 0) >= num_groups:
                continue  # a minibatch as large as the data is the full-data run
            runs.append(
                {
                    "method": method,
                    "dataset": BENCH_DATASET,
                    "data_params": BENCH_DATA | {"N": num_groups},
                    "method_params": dict(params),
                    "steps": steps,
                    "seed": 0,
                }
            )
    return runs
