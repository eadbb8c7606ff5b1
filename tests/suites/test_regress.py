"""The regression gate: the pure comparison rule, the baseline file, exit codes, and on real runs of
the tiny suite no false alarm on unchanged code and a planted regression caught."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hierbench.cli import main
from hierbench.suites import baseline, definition, metrics, regress, running, stats


def summary(rows: list[tuple]) -> pd.DataFrame:
    """A summary table from (entry, metric, mean, se[, runs, n]) tuples."""
    out = []
    for row in rows:
        entry, metric, mean, se, *counts = row
        runs, n = counts or (3, 3)
        sd = se * math.sqrt(n) if n else math.nan
        out.append({"entry": entry, "metric": metric, "runs": runs, "n": n, "mean": mean, "sd": sd, "se": se})
    return pd.DataFrame(out)


def verdict(base: tuple, now: tuple, **kw) -> str:
    cmp = stats.compare(summary([base]), summary([now]), **kw)
    assert len(cmp) == 1
    return cmp["verdict"].iloc[0]


# --------------------------------------------------------------------------- the pure rule
def test_equal_within_noise_passes():
    # combined SE sqrt(0.1² + 0.1²) = 0.141; 0.3 worse is 2.1 SEs < K = 4 (and > the minimum effect)
    assert verdict(("e", "kl_per_group", 1.0, 0.1), ("e", "kl_per_group", 1.3, 0.1)) == "ok"
    assert verdict(("e", "elbo_per_group", -5.0, 0.1), ("e", "elbo_per_group", -5.3, 0.1)) == "ok"
    assert verdict(("e", "kl_per_group", 1.0, 0.1), ("e", "kl_per_group", 1.0, 0.1)) == "ok"


def test_worse_beyond_k_se_fails_in_the_metric_direction():
    se = math.hypot(0.1, 0.1)
    worse = stats.K_SE * se * 1.05
    # lower is better: an increase fails
    assert verdict(("e", "kl_per_group", 1.0, 0.1), ("e", "kl_per_group", 1.0 + worse, 0.1)) == "REGRESSION"
    # higher is better: a decrease fails
    assert (
        verdict(("e", "elbo_per_group", -5.0, 0.1), ("e", "elbo_per_group", -5.0 - worse, 0.1))
        == "REGRESSION"
    )
    # just inside the threshold passes
    inside = stats.K_SE * se * 0.95
    assert verdict(("e", "kl_per_group", 1.0, 0.1), ("e", "kl_per_group", 1.0 + inside, 0.1)) == "ok"
    # k is a parameter of the rule
    assert verdict(("e", "kl_per_group", 1.0, 0.1), ("e", "kl_per_group", 1.0 + inside, 0.1), k=2.0) == (
        "REGRESSION"
    )


def test_improvements_never_fail():
    base = ("e", "elbo_per_group", -5.0, 0.01)
    for gain in (0.001, 0.5, 100.0):
        cmp = stats.compare(summary([base]), summary([("e", "elbo_per_group", -5.0 + gain, 0.01)]))
        assert stats.failed(cmp).empty
    assert verdict(base, ("e", "elbo_per_group", 95.0, 0.01)) == "improved"
    # the same numeric change is an improvement for a lower-is-better metric
    assert (
        verdict(("e", "global_std_mean_err", 0.5, 0.01), ("e", "global_std_mean_err", 0.1, 0.01))
        == "improved"
    )


def test_minimum_effect_prevents_alarms_on_tiny_standard_errors():
    floor = metrics.METRICS["kl_per_group"].min_effect
    base = ("e", "kl_per_group", 1e-5, 1e-9)
    # 10⁴ SEs worse, yet below the minimum effect: ok
    assert verdict(base, ("e", "kl_per_group", 1e-5 + 0.5 * floor, 1e-9)) == "ok"
    # above the minimum effect: fails
    assert verdict(base, ("e", "kl_per_group", 1e-5 + 2 * floor, 1e-9)) == "REGRESSION"
    # zero SE on both sides (identical seeds' values) still uses the floor
    assert verdict(("e", "kl_per_group", 0.1, 0.0), ("e", "kl_per_group", 0.1 + 0.5 * floor, 0.0)) == "ok"


def test_failed_runs_and_missing_metrics_fail():
    base = ("e", "kl_per_group", 1.0, 0.1)
    assert (
        verdict(base, ("e", "kl_per_group", 1.0, 0.1, 3, 2)) == "MISSING"
    )  # one of three runs gave no value
    assert verdict(base, ("e", "kl_per_group", math.nan, math.nan, 3, 0)) == "MISSING"
    cmp = stats.compare(summary([base, ("e", "elbo_per_group", -1.0, 0.1)]), summary([base]))
    assert cmp.set_index("metric")["verdict"].to_dict() == {"elbo_per_group": "MISSING", "kl_per_group": "ok"}
    assert len(stats.failed(cmp)) == 1
    # a metric only in the new run is listed, not failed
    cmp = stats.compare(summary([base]), summary([base, ("e", "elbo_per_group", -1.0, 0.1)]))
    assert stats.failed(cmp).empty and "new" in set(cmp["verdict"])


def test_combined_se_pools_the_spread_of_both_sides():
    # equal seed counts: the usual sqrt(se_b² + se_n²)
    assert stats.combined_se(0.3, 4, 0.5, 4) == pytest.approx(math.hypot(0.3 / 2, 0.5 / 2))
    # 5 baseline seeds, 3 now: pooled variance (4·0.2² + 2·0.4²) / 6 times (1/5 + 1/3)
    assert stats.combined_se(0.2, 5, 0.4, 3) == pytest.approx(
        math.sqrt((4 * 0.04 + 2 * 0.16) / 6 * (1 / 5 + 1 / 3))
    )
    # a side with one value adds no spread but still its 1/n; no values at all: NaN
    assert stats.combined_se(0.2, 5, math.nan, 1) == pytest.approx(0.2 * math.sqrt(1 / 5 + 1))
    assert math.isnan(stats.combined_se(math.nan, 1, math.nan, 1))


def test_compare_keeps_the_suite_order():
    rows = [("z/last", "kl_per_group", 1.0, 0.1), ("a/first", "elbo_per_group", 1.0, 0.1)]
    cmp = stats.compare(summary(rows), summary(rows[::-1]))
    assert list(cmp["entry"]) == ["z/last", "a/first"]


def test_compare_rejects_a_metric_without_a_direction():
    with pytest.raises(ValueError, match="no direction"):
        stats.compare(summary([("e", "mystery", 1.0, 0.1)]), summary([("e", "mystery", 1.0, 0.1)]))


def test_summarize_mean_and_standard_error_across_seeds():
    values = pd.DataFrame(
        {
            "entry": ["a"] * 4 + ["b"] * 3,
            "metric": ["kl_per_group"] * 7,
            "seed": [1, 2, 3, 4, 1, 2, 3],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, math.nan, 7.0],
        }
    )
    s = stats.summarize(values).set_index("entry")
    assert s.loc["a", "mean"] == pytest.approx(2.5)
    assert s.loc["a", "se"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert (s.loc["b", "runs"], s.loc["b", "n"]) == (3, 2)
    assert s.loc["b", "mean"] == pytest.approx(6.0)
    assert list(s.index) == ["a", "b"]


def test_extract_metrics_reads_the_record():
    block = {"std_mean_err_mean": 0.1, "sd_ratio_err_mean": 0.2}
    rec = {"status": "ok", "elbo": -40.0, "num_groups": 20, "kl_per_group": 0.3}
    rec["accuracy"] = {"global": block, "local": block | {"std_mean_err_mean": 0.4}}
    got = metrics.extract_metrics(rec, metrics.EXACT_METRICS)
    assert got == {
        "elbo_per_group": -2.0,
        "kl_per_group": 0.3,
        "global_std_mean_err": 0.1,
        "local_std_mean_err": 0.4,
        "global_sd_ratio_err": 0.2,
        "local_sd_ratio_err": 0.2,
    }
    assert all(
        math.isnan(v)
        for v in metrics.extract_metrics(rec | {"status": "diverged"}, metrics.EXACT_METRICS).values()
    )


# --------------------------------------------------------------------------- suite and baseline file
def test_quick_suite_covers_every_vi_family_on_both_datasets():
    from hierbench.registry import parse_params

    for dataset in ("hier-linear", "hier-logistic"):
        entries = [e for e in definition.QUICK.entries if e.dataset == dataset]
        methods = {(e.method, e.method_params.get("batch_groups") is not None) for e in entries}
        assert {"meanfield", "lowrank", "dense", "branch", "amortized"} == {m for m, _ in methods}
        assert ("branch", True) in methods and ("branch", False) in methods
        assert any(e.method_params.get("head") == "potential" for e in entries)
    assert len({e.name for e in definition.QUICK.entries}) == len(definition.QUICK.entries)
    for e in definition.QUICK.entries:
        parse_params("method", e.method, e.method_params)
        parse_params("dataset", e.dataset, e.data_params)
        assert ("kl_per_group" in e.metrics) == (e.dataset == "hier-linear")


def test_suite_digest_changes_with_any_budget_or_parameter():
    base = definition.TINY.digest()
    assert definition.TINY.replace("linear/meanfield", steps=301).digest() != base
    assert definition.TINY.replace("linear/meanfield", lr=1e-4).digest() != base
    assert definition.TINY.replace("linear/meanfield").digest() == base
    with pytest.raises(KeyError):
        definition.TINY.replace("no/such/entry")


def fake_values(suite: definition.Suite, seeds: list[int], shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"entry": e.name, "metric": m, "seed": s, "value": 1.0 + shift + 0.01 * rng.standard_normal()}
        for e in suite.entries
        for m in e.metrics
        for s in seeds
    ]
    return pd.DataFrame(rows)


def write_fake_baseline(path, suite=definition.TINY, shift=0.0):
    seeds = [1000, 1001, 1002]
    refs = {e.name: "exact posterior" for e in definition.TINY.entries}
    baseline.write_baseline(path, suite, fake_values(suite, seeds, shift), [], seeds, refs, wall_s=1.0)


def test_baseline_roundtrip_is_plain_json_written_atomically(tmp_path):
    path = tmp_path / "b" / "tiny.json"
    write_fake_baseline(path)
    assert [p.name for p in path.parent.iterdir()] == ["tiny.json"]  # no temporary file left
    doc = json.loads(path.read_text())
    assert doc["repeats"] == 3 and doc["seeds"] == [1000, 1001, 1002]
    assert doc["rule"]["k"] == stats.K_SE and doc["rule"]["min_effects"]["kl_per_group"] == 0.02
    assert doc["suite"] == definition.TINY.definition() and doc["env"]["versions"]["jax"]
    loaded = baseline.load_baseline(
        path, definition.TINY, {e.name: "exact posterior" for e in definition.TINY.entries}
    )
    expect = stats.summarize(fake_values(definition.TINY, [1000, 1001, 1002]))
    pd.testing.assert_frame_equal(loaded["summary"][expect.columns], expect, check_dtype=False)


def test_regress_exit_2_on_missing_corrupt_or_stale_baseline(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    argv = ["regress", "--suite", "tiny", "--baseline", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no baseline" in err and "hierbench baseline update --suite tiny" in err

    path.write_text('{"format": 1, "stats": [')
    assert main(argv) == 2
    assert "corrupt baseline" in capsys.readouterr().err

    write_fake_baseline(path, suite=definition.TINY.replace("linear/meanfield", steps=150))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stale baseline" in err and "hierbench baseline update --suite tiny" in err

    for bad, message in (
        (["--repeats", "1"], "--repeats must be"),
        (["--suite", "nope"], "valid suites: quick"),
    ):
        assert main(argv + bad) == 2
        assert message in capsys.readouterr().err


def test_committed_baseline_matches_the_quick_suite():
    """results/baselines/quick.json must be current: `hierbench baseline update` after changing QUICK."""
    from hierbench._io import REFERENCES_DIR, REPO_ROOT

    path = REPO_ROOT / baseline.default_baseline_path("quick")
    if not path.exists():
        pytest.skip(f"{path} not generated yet")
    doc = baseline.load_baseline(
        path, definition.QUICK, running.reference_notes(definition.QUICK, REPO_ROOT / REFERENCES_DIR)
    )
    summary_ = doc["summary"]
    assert (summary_["n"] == doc["repeats"]).all() and doc["repeats"] >= 3
    assert np.isfinite(summary_["se"]).all() and (summary_["se"] >= 0).all()
    # no spread over seeds only where q is the exact posterior (every draw's log p − log q is log Z:
    # dense on hier-linear since its row-scaled factor lands), never by accident elsewhere
    for entry in summary_.loc[summary_["se"] == 0, "entry"].unique():
        kl = summary_[(summary_["entry"] == entry) & (summary_["metric"] == "kl_per_group")]
        assert len(kl) == 1 and abs(kl["mean"].item()) < 1e-9, entry


# --------------------------------------------------------------------------- real runs (tiny suite)
@pytest.fixture(scope="module")
def tiny_baseline():
    values, runs = running.run_suite(definition.TINY, regress.seeds(regress.BASELINE_SEED0, 3))
    assert all(r["status"] == "ok" for r in runs)
    return stats.summarize(values)


def test_no_false_alarm_on_unchanged_code_with_fresh_seeds(tiny_baseline):
    assert np.isfinite(tiny_baseline["se"]).all() and (tiny_baseline["se"] > 0).all()  # real noise
    for first in (regress.REGRESS_SEED0, 3000):
        values, _ = running.run_suite(definition.TINY, regress.seeds(first, 3))
        cmp = stats.compare(tiny_baseline, stats.summarize(values))
        assert len(cmp) == sum(len(e.metrics) for e in definition.TINY.entries)
        assert stats.failed(cmp).empty, stats.format_comparison(cmp)
        assert (cmp["now"] != cmp["baseline"]).all()  # other seeds, other numbers


@pytest.mark.parametrize("change", [{"lr": 1e-4}, {"steps": 150}], ids=["lr-100x-smaller", "half-steps"])
def test_planted_regression_is_caught(tiny_baseline, change):
    name = "linear/meanfield"
    planted = definition.TINY.replace(name, **change)
    planted = definition.Suite(
        planted.name, tuple(e for e in planted.entries if e.name == name), eval_draws=planted.eval_draws
    )
    # the effect is 6-400 SEs
    values, runs = running.run_suite(planted, regress.seeds(regress.REGRESS_SEED0, 2))
    assert all(r["status"] == "ok" for r in runs)
    cmp = stats.compare(tiny_baseline[tiny_baseline["entry"] == name], stats.summarize(values))
    verdicts = cmp.set_index("metric")["verdict"]
    assert verdicts["elbo_per_group"] == "REGRESSION", stats.format_comparison(cmp)
    assert verdicts["kl_per_group"] == "REGRESSION"
