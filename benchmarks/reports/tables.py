"""The tables of ``hierbench report``: the summary, the trace points and the accuracy, as data frames and
markdown.

The records come validated from :func:`hierbench.records.read_records`, so the fields of
:data:`hierbench.records.REQUIRED` are read directly; optional ones (``accuracy``,
``heldout_lpd_per_obs``, ``steps_per_s``) with ``.get``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hierbench.reports.labels import label, variant

SUMMARY_COLUMNS = [
    "dataset",
    "N",
    "method",
    "variant",
    "status",
    "elbo",
    "elbo_se",
    "kl",
    "kl_per_group",
    "steps",
    "wall_s",
    "compile_s",
    "steps_per_s",
    "seed",
]


def summary_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: final scores, timings and steps/s."""
    rows = []
    for rec in records:
        row = {k: rec.get(k) for k in SUMMARY_COLUMNS}
        # a record without num_groups never built its model: the N it asked for, where it says one
        row["N"] = rec["num_groups"] if "num_groups" in rec else rec["data_params"].get("N")
        row["variant"] = variant(rec)
        rows.append(row)
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return df.sort_values(["dataset", "N", "method", "variant"], kind="stable").reset_index(drop=True)


def trace_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Long table of trace points, with the KL (gap to the exact log evidence) where known."""
    rows = []
    for rec in records:
        for point in rec["trace"]:  # a record with trace points ran, so it has num_groups
            if point["elbo"] is None:
                continue
            kl = rec["log_evidence"] - point["elbo"] if rec["log_evidence"] is not None else None
            n = rec["num_groups"]
            rows.append(
                {
                    "dataset": rec["dataset"],
                    "N": n,
                    "method": label(rec),
                    "step": point["step"],
                    "wall_s": point["wall_s"],
                    "elbo": point["elbo"],
                    "kl_per_group": kl / n if kl is not None else None,
                }
            )
    return pd.DataFrame(rows)


def format_markdown(df: pd.DataFrame) -> str:
    """A summary table as markdown, numbers rounded for reading."""
    show = df.copy()
    for col, fmt in {
        "elbo": "{:.2f}",
        "elbo_se": "{:.3f}",
        "kl": "{:.4g}",
        "kl_per_group": "{:.3g}",
        "wall_s": "{:.2f}",
        "compile_s": "{:.2f}",
        "steps_per_s": "{:.0f}",
    }.items():
        show[col] = show[col].map(lambda v, f=fmt: "" if v is None or pd.isna(v) else f.format(v))
    return show.to_markdown(index=False)


def accuracy_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Methods × datasets: standardized mean error (mean over coordinates) of the global and local
    blocks and PSIS k̂, from each record's accuracy block (long format, one row per record)."""
    rows = []
    for rec in records:
        acc = rec.get("accuracy") or {}  # optional: only runs scored against a reference
        rows.append(
            {
                "dataset": rec["dataset"],
                # one row per method across datasets: a minibatch size that covers all groups of a
                # small dataset (B >= N) would otherwise split a row
                "method": re.sub(r"B=\d+,?", "", label(rec)).replace(" ()", "").replace("(,", "("),
                "status": rec["status"],
                "reference": acc.get("reference"),
                "global_std_mean_err": (acc.get("global") or {}).get("std_mean_err_mean"),
                "local_std_mean_err": (acc.get("local") or {}).get("std_mean_err_mean"),
                "global_sd_ratio_err": (acc.get("global") or {}).get("sd_ratio_err_mean"),
                "local_sd_ratio_err": (acc.get("local") or {}).get("sd_ratio_err_mean"),
                "psis_khat": acc.get("psis_khat"),
                "heldout_lpd_per_obs": rec.get("heldout_lpd_per_obs"),
                "wall_s": rec["wall_s"],
            }
        )
    return pd.DataFrame(rows)


def accuracy_markdown(df: pd.DataFrame) -> str:
    """The accuracy table as markdown: one row per method, per dataset a cell
    ``global / local standardized mean error · k̂`` (or the run's status when it has no scores)."""

    def cell(row) -> str:
        if row["global_std_mean_err"] is None or pd.isna(row["global_std_mean_err"]):
            return str(row["status"]) if row["status"] != "ok" else "no reference"
        k = row["psis_khat"]
        khat = f"{k:.2f}" if k is not None and not pd.isna(k) else "–"
        return f"{row['global_std_mean_err']:.3f} / {row['local_std_mean_err']:.3f} · {khat}"

    wide = df.assign(cell=df.apply(cell, axis=1)).pivot_table(
        index="method", columns="dataset", values="cell", aggfunc="first", sort=False
    )
    return wide.fillna("").reset_index().to_markdown(index=False)


def skipped_note(read: int, skipped: Sequence[tuple[str, int, str]]) -> str:
    """The summary's line on unreadable record lines (empty when there were none)."""
    if not skipped:
        return ""
    where = ", ".join(f"`{Path(f).name}:{n}`" for f, n, _ in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return (
        f"**{len(skipped)} record line(s) could not be read and were skipped** ({where}{more}); "
        f"{read} record(s) read.\n\n"
    )
