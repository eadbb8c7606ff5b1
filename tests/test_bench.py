"""The default benchmark plan (experiments/bench.toml): every method at every size, every entry valid."""

from __future__ import annotations

import pytest

from hierbench.datasets.base import ParamError
from hierbench.methods import METHODS, PEERS
from hierbench.registry import is_sampler, parse_params
from hierbench.suites.experiment import expand, find_experiment, load_experiment

BENCH_SIZES = (10, 100, 1000)


def plan(name: str = "bench") -> list[dict]:
    return [c.kwargs for c in expand(load_experiment(find_experiment(name)))]


def test_plan_runs_every_vi_method_at_every_size():
    runs = plan()
    vi = {name for name, factory in METHODS.items() if not is_sampler(factory)} - PEERS  # ours only
    assert {r["data_params"]["N"] for r in runs} == set(BENCH_SIZES)
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


def test_sizes_select_cells_of_the_plan():
    from hierbench.bench import select_sizes

    grid = expand(load_experiment(find_experiment("bench")))
    assert {c.kwargs["data_params"]["N"] for c in select_sizes(grid, (10,))} == {10}
    assert select_sizes(grid, None) == grid
    with pytest.raises(ParamError, match="the plan has N in"):
        select_sizes(grid, (10, 5000))


def test_accuracy_plan_covers_every_vi_method_on_every_dataset():
    from hierbench.datasets import DATASETS
    from hierbench.reference import reference_datasets

    runs = plan("bench-accuracy")
    vi = {name for name, factory in METHODS.items() if not is_sampler(factory)} - PEERS  # ours only
    # every dataset but the scale-only synthetic one, whose default size has no reference
    assert set(DATASETS) - set(reference_datasets()) == {"movielens-synth"}
    assert {r["dataset"] for r in runs} == set(reference_datasets())
    for dataset in reference_datasets():
        assert {r["method"] for r in runs if r["dataset"] == dataset} == vi
    for run in runs:
        parse_params("method", run["method"], run["method_params"])


def test_accuracy_table_has_one_cell_per_method_and_dataset():
    from hierbench.reports.tables import accuracy_markdown, accuracy_table

    def rec(method, dataset, status="ok", err=0.1):
        block = {"std_mean_err_mean": err, "sd_ratio_err_mean": 0.2}
        acc = (
            {"reference": "exact", "global": block, "local": block, "psis_khat": 0.4}
            if status == "ok"
            else None
        )
        from hierbench.records import finish, new_record

        error = None if status == "ok" else "test"
        return finish(new_record(method, dataset), status, error, accuracy=acc)

    records = [rec("meanfield", "a"), rec("meanfield", "b", err=0.25), rec("dense", "a", status="infeasible")]
    md = accuracy_markdown(accuracy_table(records))
    assert "0.100 / 0.100 · 0.40" in md and "0.250 / 0.250 · 0.40" in md and "infeasible" in md
    assert md.count("\n") == 3  # header, rule, two methods
