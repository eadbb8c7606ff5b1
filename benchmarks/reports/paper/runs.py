"""One record as the tables and figures see it: its N, label and status, the picks of the headline's runs,
the experiment's order of methods, and means over seeds.

Only records with status ``ok`` are plotted and enter the time-to-target columns and the means
(:func:`is_ok`); the others appear in the tables with their status (:func:`status_text`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hierbench.records import Record
from hierbench.reports.labels import label as report_label

GIB = 2.0**30


def num_groups(rec: Record) -> int | None:
    """N of a record: its ``num_groups``, which every record whose model was built has (None for a
    cell that failed before).  Legacy ``infeasible`` hier-linear records (results/sweeps/accuracy and
    scaling) predate that; hier-linear's ``N`` is its group count by definition."""
    if "num_groups" in rec:
        return rec["num_groups"]
    if rec["dataset"] == "hier-linear" and isinstance(rec["data_params"].get("N"), int):
        return rec["data_params"]["N"]
    return None


def method_label(rec: dict[str, Any]) -> str:
    """The sweep's label of the record's run (``branch (full data)``), else
    :func:`hierbench.reports.labels.label`."""
    return rec.get("label") or report_label(rec)


def status_text(rec: dict[str, Any]) -> str:
    """The status, with the memory an infeasible cell would have needed: ``infeasible (needs 3 GiB)``."""
    status = rec["status"]
    if status == "infeasible" and rec.get("memory_bytes") is not None:
        return f"infeasible (needs {rec['memory_bytes'] / GIB:.3g} GiB)"
    return status


def is_ok(rec: dict[str, Any]) -> bool:
    """Whether the run ended ``ok`` (only those are plotted and enter times to target and means)."""
    return rec["status"] == "ok"


def method_params(rec: dict[str, Any]) -> dict[str, Any]:
    """The record's method parameters."""
    return rec["method_params"]


def full_data(rec: dict[str, Any]) -> bool:
    """Whether each step saw every group (no ``batch_groups``, or as many as the model has)."""
    return method_params(rec).get("batch_groups") in (None, num_groups(rec))


def _amortized_with_head(rec: dict[str, Any], head: str) -> bool:
    mp = method_params(rec)
    return rec["method"] == "amortized" and mp.get("head") == head and mp.get("condition_on_theta", True)


def is_amortized_potential(rec: dict[str, Any]) -> bool:
    """Amortized VI with the potential head, conditioned on θ (a headline's fast method)."""
    return _amortized_with_head(rec, "potential")


def is_amortized_moments(rec: dict[str, Any]) -> bool:
    """Amortized VI with the moments head (the paper's pooling net), conditioned on θ."""
    return _amortized_with_head(rec, "moments")


def is_branch_full(rec: dict[str, Any]) -> bool:
    """Branch VI on the full data each step (the headline's reference method)."""
    return rec["method"] == "branch" and full_data(rec)


def method_order(records: list[dict[str, Any]]) -> list[str]:
    """Labels in the order they first appear (a sweep records its runs in the experiment file's order)."""
    return list(dict.fromkeys(method_label(rec) for rec in records))


def sort_rows(df: pd.DataFrame, records: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``, then by method in the experiment's order, then by seed."""
    if df.empty:
        return df
    order = {lab: i for i, lab in enumerate(method_order(records))}
    df = df.assign(_order=df["method"].map(order).fillna(len(order)))
    by = [*keys, "_order"] + (["seed"] if "seed" in df else [])
    return df.sort_values(by, kind="stable", na_position="last").drop(columns="_order").reset_index(drop=True)


def value_at(rec: dict[str, Any], path: Sequence[str]) -> float | None:
    """The number at ``path`` in nested dicts (``("accuracy", "global", "std_mean_err_mean")``), or None."""
    value: Any = rec
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if value is not None else None


def status_summary(texts: Sequence[str]) -> str:
    """The one status of a group of runs, or their counts: ``2 ok, 1 diverged``."""
    counts = Counter(texts)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.most_common())


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sd with ddof = 1 or None for one value, count) of the values that are not None."""
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(vals):
        return None, None, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else None, len(vals)
