"""The default benchmark plan: every method at every size, every entry valid."""

from __future__ import annotations

from hierbench.bench import BENCH_SIZES, plan
from hierbench.methods import METHODS, PEERS
from hierbench.registry import is_sampler, parse_params


def test_plan_runs_every_vi_method_at_every_size():
    runs = plan()
    vi = {name for name, factory in METHODS.items() if not is_sampler(factory)} - PEERS  # ours only
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


def test_accuracy_plan_covers_every_vi_method_on_every_dataset():
    from hierbench.bench import accuracy_plan
    from hierbench.datasets import DATASETS
    from hierbench.reference import reference_datasets

    runs = accuracy_plan()
    vi = {name for name, factory in METHODS.items() if not is_sampler(factory)} - PEERS  # ours only
    # every dataset but the scale-only synthetic one, whose default size has no reference
    assert set(DATASETS) - set(reference_datasets()) == {"movielens-synth"}
    for dataset in reference_datasets():
        assert {r["method"] for r in runs if r["dataset"] == dataset} == vi
    for run in runs:
        parse_params("method", run["method"], run["method_params"])


def test_accuracy_table_has_one_cell_per_method_and_dataset():
    from hierbench.report import accuracy_markdown, accuracy_table

    def rec(method, dataset, status="ok", err=0.1):
        block = {"std_mean_err_mean": err, "sd_ratio_err_mean": 0.2}
        acc = (
            {"reference": "exact", "global": block, "local": block, "psis_khat": 0.4}
            if status == "ok"
            else None
        )
        return {"method": method, "dataset": dataset, "status": status, "accuracy": acc, "method_params": {}}

    records = [rec("meanfield", "a"), rec("meanfield", "b", err=0.25), rec("dense", "a", status="infeasible")]
    md = accuracy_markdown(accuracy_table(records))
    assert "0.100 / 0.100 · 0.40" in md and "0.250 / 0.250 · 0.40" in md and "infeasible" in md
    assert md.count("\n") == 3  # header, rule, two methods
