"""Regression gate across releases that knows Monte Carlo noise: ``hierbench regress`` and ``hierbench
baseline update``.

A fixed quick suite of runs (:data:`~hierbench.suites.definition.QUICK`, the grid of
``experiments/regress-quick.toml``: every VI family on a small ``hier-linear`` and a small
``hier-logistic``) is run cell by cell through the sweep's :func:`hierbench.suites.executors.run_cell`
with R seeds each. Per (entry, metric) the baseline ``results/baselines/quick.json`` stores the mean over
its R = 5 seeds, their sd and the Monte Carlo standard error of the mean, sd/√R, with its provenance
(versions, git SHA, date, the suite definition, K and the minimum effects); ``hierbench baseline update
[--repeats R]`` writes it. ``hierbench regress`` reruns the suite with R = 3 other seeds and compares,
with :func:`~hierbench.suites.stats.compare` (a pure function of two summary tables).

The pieces: the metrics (:mod:`~hierbench.suites.metrics`), the suite definition
(:mod:`~hierbench.suites.definition`), running it (:mod:`~hierbench.suites.running`), the verdict
(:mod:`~hierbench.suites.stats`) and the baseline file (:mod:`~hierbench.suites.baseline`).  A baseline
whose suite definition (entries, budgets, metrics) or references differ from the current code's is
*stale*: the gate exits 2 with the update command instead of comparing.

Seeds
-----
The baseline uses run seeds 1000, 1001, …; ``regress`` uses 2000, 2001, … (the data seed is fixed by
the suite).  Different seeds on purpose: on the same machine and code the same seeds reproduce the
baseline bit for bit, which would test nothing about the noise model, and a harmless change that
only reorders random draws (a different key split) moves every run by its full Monte Carlo noise —
exactly what the across-seed SE models, and what fresh seeds exercise on every run of the gate.
Both seed lists are fixed, so ``make regress`` is repeatable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from hierbench._io import REFERENCES_DIR
from hierbench.datasets.base import ParamError
from hierbench.suites.baseline import default_baseline_path, load_baseline, write_baseline
from hierbench.suites.definition import get_suite
from hierbench.suites.metrics import METRICS
from hierbench.suites.running import reference_notes, run_suite
from hierbench.suites.stats import K_SE, compare, failed, format_comparison, summarize

BASELINE_SEED0 = 1000  # baseline seeds: 1000, 1001, ...
REGRESS_SEED0 = 2000  # regress seeds: 2000, 2001, ... (disjoint from the baseline's; see module docs)
BASELINE_REPEATS = 5  # seeds per entry in the baseline
REGRESS_REPEATS = 3  # seeds per entry in a regress run
MAX_REPEATS = 100  # keeps the two seed ranges disjoint


def seeds(first: int, repeats: int) -> list[int]:
    """``repeats`` consecutive run seeds from ``first`` (2 ≤ repeats ≤ :data:`MAX_REPEATS`)."""
    if not isinstance(repeats, int) or not 2 <= repeats <= MAX_REPEATS:
        raise ParamError(
            f"--repeats must be an integer in 2..{MAX_REPEATS} (an SE needs 2+ seeds), got {repeats}"
        )
    return list(range(first, first + repeats))


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def baseline_update(
    suite_name: str = "quick",
    repeats: int = BASELINE_REPEATS,
    out: str | Path | None = None,
    references: str | Path | None = REFERENCES_DIR,
    log: Callable[[str], None] = _stderr,
) -> int:
    """``hierbench baseline update``: run the suite with the baseline seeds and write the baseline.

    Returns the exit code: 0 written, 1 a run did not end ``ok`` (nothing written).  Bad input
    raises :class:`ParamError` (exit 2).
    """
    suite = get_suite(suite_name)
    run_seeds = seeds(BASELINE_SEED0, repeats)
    path = Path(out) if out is not None else default_baseline_path(suite.name)
    refs = reference_notes(suite, references)
    log(f"baseline of suite {suite.name!r} ({len(suite.entries)} entries x seeds {run_seeds}) -> {path}")
    t0 = time.perf_counter()
    values, runs = run_suite(suite, run_seeds, references, log=log)
    wall_s = time.perf_counter() - t0
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        for r in bad:
            log(f"  {r['entry']} seed {r['seed']}: {r['status']} {r.get('error', '')}")
        log(f"{len(bad)} run(s) did not end ok; baseline not written")
        return 1
    doc = write_baseline(path, suite, values, runs, run_seeds, refs, wall_s)
    table = pd.DataFrame(doc["stats"])[["entry", "metric", "mean", "se"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"baseline written to {path}: {len(table)} metrics, {len(runs)} runs in {wall_s:.0f} s")
    return 0


def regress(
    suite_name: str = "quick",
    repeats: int = REGRESS_REPEATS,
    baseline: str | Path | None = None,
    references: str | Path | None = REFERENCES_DIR,
    log: Callable[[str], None] = _stderr,
) -> int:
    """``hierbench regress``: rerun the suite with the regress seeds and compare with the baseline.

    Returns the exit code: 0 no regression, 1 a regression (or a run without a value).  A missing,
    corrupt or stale baseline raises :class:`ParamError` (exit 2) before anything runs.
    """
    suite = get_suite(suite_name)
    run_seeds = seeds(REGRESS_SEED0, repeats)
    path = Path(baseline) if baseline is not None else default_baseline_path(suite.name)
    doc = load_baseline(path, suite, reference_notes(suite, references))
    rule = doc.get("rule") or {}
    if rule.get("k") != K_SE or rule.get("min_effects") != {
        m: METRICS[m].min_effect for m in suite.definition()["metrics"]
    }:
        log("note: the baseline was written under another k or minimum effects; the current ones apply")
    log(
        f"regress suite {suite.name!r} ({len(suite.entries)} entries x seeds {run_seeds}) against {path} "
        f"(seeds {doc['seeds']}, git {str(doc.get('git_sha'))[:10]}, {doc.get('created_utc')})"
    )
    t0 = time.perf_counter()
    values, runs = run_suite(suite, run_seeds, references, log=log)
    wall_s = time.perf_counter() - t0
    comparison = compare(doc["summary"], summarize(values))
    print(format_comparison(comparison))
    bad = failed(comparison)
    counts = comparison["verdict"].value_counts().to_dict()
    print(
        f"\n{len(comparison)} metrics: "
        + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        + f"; K = {K_SE:g}, fail when worse > max(K·SE, min effect); {len(runs)} runs in {wall_s:.0f} s"
    )
    if len(bad):
        print(f"REGRESSION: {len(bad)} metric(s) worse than the baseline beyond noise", flush=True)
        return 1
    print("no regression")
    return 0
