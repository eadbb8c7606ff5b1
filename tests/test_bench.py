"""The default benchmark plan: every method at every size, every entry valid."""

from __future__ import annotations

from hierbench.bench import BENCH_SIZES, plan
from hierbench.methods import METHODS
from hierbench.registry import is_sampler, parse_params


def test_plan_runs_every_vi_method_at_every_size():
    runs = plan()
    vi = {name for name, factory in METHODS.items() if not is_sampler(factory)}
    for n in BENCH_SIZES:
        assert {r["method"] for r in runs if r["data_params"]["N"] == n} == vi


def test_plan_entries_are_valid_parameters():
    for r in plan():
        parse_params("method", r["method"], r["method_params"])
        parse_params("dataset", r["dataset"], r["data_params"])
    # subsampled branch only where B < N
    assert all(
        r["method_params"].get("batch_groups", 0) < r["data_params"]["N"]
        for r in plan()
        if r["method"] == "branch"
    )
