"""The gate's statistics: per-metric summaries over seeds, and the comparison that knows Monte Carlo noise.

With ``worse`` the baseline-to-now change signed so that positive is worse (baseline − now for a
higher-better metric, now − baseline for a lower-better one) and ``se`` its standard error from the
across-seed spread pooled over both sides (:func:`combined_se`; with equal seed counts it is
√(se_baseline² + se_now²)), a metric

* fails (``REGRESSION``) when ``worse > max(K · se, min effect)``, with **K = 4**;
* is ``improved`` when ``−worse`` exceeds the same threshold (never a failure);
* is ``MISSING`` (a failure) when a run of the entry did not end ``ok`` or gave no value.

K = 4: on unchanged code worse/se is t-distributed with R_baseline + R_now − 2 = 6 degrees of
freedom, so a metric whose threshold is set by its SE raises a false alarm with probability 0.36%
(0.8% with 4 degrees of freedom, as Welch's unpooled SE would have at these seed counts).  Most
thresholds are set by the minimum effect instead (:mod:`hierbench.suites.metrics`).  Real defects
are far larger than either (in the tests, on the tiny suite: a learning rate 100× too small moves
meanfield's KL from 0.27 to 6.9 nats/group, half the steps to 1.5, 100+ SEs).

:func:`compare` is a pure function of two summary tables (:func:`summarize`): no runs, no files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hierbench.suites.metrics import METRICS, Metric

K_SE = 4.0


def summarize(values: pd.DataFrame) -> pd.DataFrame:
    """Per (entry, metric): runs, finite values ``n``, their mean, sd and the SE of the mean sd/√n.

    Parameters
    ----------
    values : DataFrame
        Long table with columns ``entry, metric, seed, value``.

    Returns
    -------
    DataFrame
        Columns ``entry, metric, runs, n, mean, sd, se`` in first-appearance order.
    """

    rows = []
    for (entry, metric), v in values.groupby(["entry", "metric"], sort=False)["value"]:
        finite = v.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        n = len(finite)
        sd = float(np.std(finite, ddof=1)) if n >= 2 else math.nan
        rows.append(
            {
                "entry": entry,
                "metric": metric,
                "runs": len(v),
                "n": n,
                "mean": float(np.mean(finite)) if n else math.nan,
                "sd": sd,
                "se": sd / math.sqrt(n) if n >= 2 else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["entry", "metric", "runs", "n", "mean", "sd", "se"])


def combined_se(sd_b: np.ndarray, n_b: np.ndarray, sd_n: np.ndarray, n_n: np.ndarray) -> np.ndarray:
    """Standard error of ``mean_now − mean_baseline`` with the across-seed spread pooled over both sides.

    ``s² = ((n_b − 1) sd_b² + (n_n − 1) sd_n²) / (n_b + n_n − 2)`` and ``se = s √(1/n_b + 1/n_n)``:
    under the hypothesis the gate tests (unchanged code) both sides have the same spread, and pooling
    gives the SE n_b + n_n − 2 degrees of freedom instead of about min(n_b, n_n) − 1.  With n_b = n_n it
    equals √(se_b² + se_n²).  NaN where neither side has two values.
    """
    sd_b, n_b, sd_n, n_n = (np.asarray(a, dtype=float) for a in (sd_b, n_b, sd_n, n_n))
    with np.errstate(divide="ignore", invalid="ignore"):
        ss = np.where(n_b > 1, (n_b - 1) * sd_b**2, 0.0) + np.where(n_n > 1, (n_n - 1) * sd_n**2, 0.0)
        dof = np.fmax(n_b - 1, 0) + np.fmax(n_n - 1, 0)
        pooled = np.where(dof > 0, ss / dof, np.nan)
        return np.where((n_b > 0) & (n_n > 0), np.sqrt(pooled * (1 / n_b + 1 / n_n)), np.nan)


def compare(
    baseline: pd.DataFrame,
    now: pd.DataFrame,
    k: float = K_SE,
    metrics: dict[str, Metric] | None = None,
) -> pd.DataFrame:
    """Compare two summary tables (:func:`summarize`) metric by metric.  Pure: no runs, no files.

    Parameters
    ----------
    baseline, now : DataFrame
        Columns ``entry, metric, runs, n, mean, sd, se``.
    k : float
        Standard errors a change must exceed to fail.
    metrics : dict, optional
        Direction and minimum effect per metric name (default :data:`METRICS`).

    Returns
    -------
    DataFrame
        One row per (entry, metric), with ``baseline``, ``baseline_se``, ``now``, ``now_se``,
        ``worse`` (positive: now is worse), ``se`` (:func:`combined_se`), ``worse_se`` (worse / se),
        ``threshold`` = max(k·se, min effect) and ``verdict``: ``ok``, ``improved``, ``REGRESSION`` or
        ``MISSING`` (a run did not give a value).  Rows only in ``now`` are listed as ``new``.
    """
    metrics = METRICS if metrics is None else metrics
    cols = ["entry", "metric", "runs", "n", "mean", "sd", "se"]
    merged = baseline[cols].merge(now[cols], on=["entry", "metric"], how="outer", suffixes=("_b", "_n"))
    order = {key: i for i, key in enumerate(dict.fromkeys(_keys(baseline) + _keys(now)))}  # suite order
    merged = merged.iloc[np.argsort([order[key] for key in _keys(merged)], kind="stable")]
    merged = merged.reset_index(drop=True)
    unknown = sorted(set(merged["metric"]) - set(metrics))
    if unknown:
        raise ValueError(f"no direction/minimum effect for metric(s) {', '.join(unknown)}")
    sign = np.where([metrics[m].higher_is_better for m in merged["metric"]], -1.0, 1.0)
    min_effect = np.array([metrics[m].min_effect for m in merged["metric"]], dtype=float)
    worse = sign * (merged["mean_n"].to_numpy(float) - merged["mean_b"].to_numpy(float))
    se = combined_se(merged["sd_b"], merged["n_b"], merged["sd_n"], merged["n_n"])
    threshold = np.fmax(k * se, min_effect)
    with np.errstate(divide="ignore", invalid="ignore"):
        worse_se = np.where(se > 0, worse / se, np.sign(worse) * np.inf)
    in_base = merged["runs_b"].notna().to_numpy()
    complete = (
        merged["runs_n"].notna() & (merged["n_n"] == merged["runs_n"]) & (merged["n_n"] > 0)
    ).to_numpy()
    verdict = np.select(
        [~in_base, ~complete | ~np.isfinite(worse), worse > threshold, -worse > threshold],
        ["new", "MISSING", "REGRESSION", "improved"],
        default="ok",
    )
    return pd.DataFrame(
        {
            "entry": merged["entry"],
            "metric": merged["metric"],
            "better": np.where(sign < 0, "higher", "lower"),
            "baseline": merged["mean_b"],
            "baseline_se": merged["se_b"],
            "now": merged["mean_n"],
            "now_se": merged["se_n"],
            "worse": worse,
            "se": se,
            "worse_se": worse_se,
            "threshold": threshold,
            "verdict": verdict,
        }
    )


def _keys(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(table["entry"], table["metric"], strict=True))


def failed(comparison: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`compare` table that fail the gate (``REGRESSION`` or ``MISSING``)."""
    return comparison[comparison["verdict"].isin(["REGRESSION", "MISSING"])]


def format_comparison(comparison: pd.DataFrame) -> str:
    """The comparison as a plain-text pandas table (metric, baseline, now, worse in SEs, verdict)."""

    def pm(mean: float, se: float) -> str:
        if not np.isfinite(mean):
            return "-"
        return f"{mean:.4g} ± {se:.2g}" if np.isfinite(se) else f"{mean:.4g}"

    show = pd.DataFrame(
        {
            "entry": comparison["entry"],
            "metric": comparison["metric"],
            "better": comparison["better"],
            "baseline": [
                pm(m, s) for m, s in zip(comparison["baseline"], comparison["baseline_se"], strict=True)
            ],
            "now": [pm(m, s) for m, s in zip(comparison["now"], comparison["now_se"], strict=True)],
            "worse (SEs)": [f"{v:+.1f}" if np.isfinite(v) else str(v) for v in comparison["worse_se"]],
            "limit": [f"{v:.3g}" for v in comparison["threshold"]],
            "verdict": comparison["verdict"],
        }
    )
    return show.to_string(index=False)
