"""The tables of ``hierbench report``: the summary, the trace points and the accuracy, as data frames and
markdown.

Every record is a row, whatever its status (a run that did not end ``ok`` shows its status and error).
A row names its run by the rule of :mod:`hierbench.reports.labels`, within its dataset: ``data`` the data
parameters that differ between the dataset's records (N has its own column), ``params`` the run settings
that differ (method parameters, backend, budget).  The records come validated from
:func:`hierbench.records.read_records`, so the fields of :data:`hierbench.records.REQUIRED` are read
directly; optional ones are used only where they have the right type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hierbench.reports.convergence import finite, groups
from hierbench.reports.labels import data_labels, data_text, labels_for

SUMMARY_COLUMNS = [
    "dataset",
    "data",
    "N",
    "method",
    "params",
    "seed",
    "status",
    "elbo",
    "elbo_se",
    "kl",
    "kl_per_group",
    "steps",
    "wall_s",
    "compile_s",
    "steps_per_s",
    "tuned",
    "tuning_wall_s",
    "error",
]
TUNING_COLUMNS = ("tuned", "tuning_wall_s")  # only where some record was tuned (hierbench.harness.tune)
ERROR_CHARS = 100  # of an error message in summary.md (summary.csv has it whole)


def by_dataset(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The records of each dataset, datasets in the order first seen."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        out.setdefault(rec["dataset"], []).append(rec)
    return out


def num_groups(rec: Mapping[str, Any]) -> int | None:
    """N of a row: the record's ``num_groups``; a record without one never built its model, so the N it
    asked for, where its data parameters say one."""
    n = groups(rec)
    asked = rec["data_params"].get("N")
    return n if n is not None else asked if isinstance(asked, int) and not isinstance(asked, bool) else None


def error_text(rec: Mapping[str, Any]) -> str:
    """The record's error message ("" for none)."""
    error = rec.get("error")
    return error.strip() if isinstance(error, str) else ""


def tuning_cells(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A tuned run's choice (``lr=0.025 of 5``) and its grid's total optimization time, which the run's
    own ``wall_s`` leaves out (empty for a run that was not tuned)."""
    tuning = rec.get("tuning")
    if not isinstance(tuning, dict) or "chosen" not in tuning:
        return {"tuned": "", "tuning_wall_s": None}
    chosen = f"{tuning['param']}={tuning['chosen']:g} of {len(tuning.get('grid', []))}"
    return {"tuned": chosen, "tuning_wall_s": finite(tuning.get("total_wall_s"))}


def summary_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record, every status: final scores, timings, steps/s and the error of a failure."""
    rows = []
    for recs in by_dataset(records).values():
        labels = labels_for(recs)
        data_keys = [k for k in data_labels(recs)[0] if k != "N"]
        for rec in recs:
            rows.append(
                {
                    "dataset": rec["dataset"],
                    "data": data_text(rec["data_params"], data_keys),
                    "N": num_groups(rec),
                    "method": rec["method"],
                    "params": labels.params(rec),
                    "seed": rec["seed"],
                    "status": rec["status"],
                    **{
                        k: finite(rec[k])
                        for k in ("elbo", "elbo_se", "kl", "kl_per_group", "wall_s", "compile_s")
                    },
                    "steps": rec["steps"],
                    "steps_per_s": finite(rec.get("steps_per_s")),
                    **tuning_cells(rec),
                    "error": error_text(rec),
                }
            )
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"N": "Int64"})
    if not df["tuned"].astype(bool).any():
        df = df.drop(columns=list(TUNING_COLUMNS))
    return df.sort_values(["dataset", "data", "N", "method", "params", "seed"], kind="stable").reset_index(
        drop=True
    )


def common_settings(records: Sequence[Mapping[str, Any]]) -> str:
    """Markdown lines, one per dataset, of what every row of the dataset shares (its data parameters
    and run settings), which the rows therefore do not repeat."""
    lines = []
    for dataset, recs in by_dataset(records).items():
        shared = data_labels(recs)[1]
        parts = [f"data {data_text(shared, shared)}"] if shared else []
        seeds = sorted({r["seed"] for r in recs})
        if len(seeds) == 1:
            parts.append(f"run seed {seeds[0]}")
        common = labels_for(recs).common_text()
        if common:
            parts.append(f"settings {common}")
        if parts:
            lines.append(f"- **{dataset}**: {'; '.join(parts)}")
    return "\n".join(lines) + "\n\n" if lines else ""


def trace_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long table of every record's trace points (every status: filter on ``status``), with the KL per
    group (gap to the exact log evidence) where known, unclipped: ≤ 0 is Monte Carlo noise."""
    rows = []
    for recs in by_dataset(records).values():
        labels = labels_for(recs)
        data_keys = [k for k in data_labels(recs)[0] if k != "N"]
        for rec in recs:
            n, log_z = groups(rec), finite(rec["log_evidence"])
            for point in rec["trace"]:
                elbo = finite(point["elbo"])
                if elbo is None:
                    continue
                rows.append(
                    {
                        "dataset": rec["dataset"],
                        "data": data_text(rec["data_params"], data_keys),
                        "N": n,
                        "method": rec["method"],
                        "params": labels.params(rec),
                        "seed": rec["seed"],
                        "status": rec["status"],
                        "record_id": rec["record_id"],
                        "step": point["step"],
                        "wall_s": point["wall_s"],
                        "elbo": elbo,
                        "elbo_se": finite(point.get("elbo_se")),
                        "kl_per_group": (log_z - elbo) / n if log_z is not None and n else None,
                    }
                )
    return pd.DataFrame(rows)


def _number(value: Any, fmt: str) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:.4g}" if abs(value) >= 1e7 else fmt.format(value)


def format_markdown(df: pd.DataFrame) -> str:
    """A summary table as markdown, numbers rounded for reading, errors cut to their first line."""
    show = df.copy()
    for col, fmt in {
        "elbo": "{:.2f}",
        "elbo_se": "{:.3f}",
        "kl": "{:.4g}",
        "kl_per_group": "{:.3g}",
        "wall_s": "{:.2f}",
        "compile_s": "{:.2f}",
        "steps_per_s": "{:.0f}",
        "tuning_wall_s": "{:.2f}",
    }.items():
        if col in show:
            show[col] = show[col].map(lambda v, f=fmt: _number(v, f))
    show["N"] = show["N"].map(lambda v: "" if pd.isna(v) else str(v))
    show["error"] = show["error"].map(_short_error)
    for col in ("data", "params"):
        show[col] = show[col].str.replace("|", "\\|")
    if not show["data"].astype(bool).any():
        show = show.drop(columns="data")
    return show.to_markdown(index=False)


def _short_error(error: str) -> str:
    return _short(error.splitlines()[0] if error else "").replace("|", "\\|")


def _short(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def accuracy_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Methods × datasets: standardized mean error (mean over coordinates) of the global and local
    blocks and PSIS k̂, from each record's accuracy block (long format, one row per record).

    ``method`` is the method, with the settings that differ between its configurations on that dataset
    (so one method is one row across datasets, unless a dataset has several configurations of it)."""
    rows = []
    for recs in by_dataset(records).values():
        per_method: dict[str, list[Mapping[str, Any]]] = {}
        for rec in recs:
            per_method.setdefault(rec["method"], []).append(rec)
        for rec in recs:
            acc = rec.get("accuracy")
            acc = acc if isinstance(acc, dict) else {}  # optional: only runs scored against a reference
            glob = acc.get("global") if isinstance(acc.get("global"), dict) else {}
            local = acc.get("local") if isinstance(acc.get("local"), dict) else {}
            rows.append(
                {
                    "dataset": rec["dataset"],
                    "method": labels_for(per_method[rec["method"]])(rec),
                    "seed": rec["seed"],
                    "status": rec["status"],
                    "reference": acc.get("reference"),
                    "global_std_mean_err": finite(glob.get("std_mean_err_mean")),
                    "local_std_mean_err": finite(local.get("std_mean_err_mean")),
                    "global_sd_ratio_err": finite(glob.get("sd_ratio_err_mean")),
                    "local_sd_ratio_err": finite(local.get("sd_ratio_err_mean")),
                    "psis_khat": finite(acc.get("psis_khat")),
                    "heldout_lpd_per_obs": finite(rec.get("heldout_lpd_per_obs")),
                    "wall_s": rec["wall_s"],
                }
            )
    return pd.DataFrame(rows)


def accuracy_markdown(df: pd.DataFrame) -> str:
    """The accuracy table as markdown: one row per method (configuration), per dataset a cell
    ``global / local standardized mean error · k̂`` (or the run's status when it has no scores); a cell
    of several runs (seeds) shows each, ``seed 0: … ; seed 1: …``, none is dropped."""

    def cell(row) -> str:
        if row["global_std_mean_err"] is None or pd.isna(row["global_std_mean_err"]):
            return str(row["status"]) if row["status"] != "ok" else "no reference"
        k, loc = row["psis_khat"], row["local_std_mean_err"]
        khat = f"{k:.2f}" if k is not None and not pd.isna(k) else "–"
        local = f"{loc:.3f}" if loc is not None and not pd.isna(loc) else "–"
        return f"{row['global_std_mean_err']:.3f} / {local} · {khat}"

    df = df.assign(cell=df.apply(cell, axis=1))
    size = df.groupby(["method", "dataset"], sort=False)["cell"].transform("size")
    df["cell"] = [
        f"seed {s}: {c}" if n > 1 else c for s, c, n in zip(df["seed"], df["cell"], size, strict=True)
    ]
    wide = df.pivot_table(index="method", columns="dataset", values="cell", aggfunc="; ".join, sort=False)
    return wide.fillna("").reset_index().to_markdown(index=False)


def read_note(read: int, skipped: Sequence[tuple[str, int, str]], sources: Sequence[str] = ()) -> str:
    """The summary's header line: how many records were read and how many lines were skipped as
    unreadable (with file:line and why, the first ten)."""
    files = f" from {', '.join(f'`{Path(s).name}`' for s in sources)}" if sources else ""
    note = f"Read {read} record(s){files}; skipped {len(skipped)} unreadable line(s)"
    if not skipped:
        return note + ".\n\n"
    where = "; ".join(f"`{Path(f).name}:{n}` ({_short(why)})" for f, n, why in skipped[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f"**{note}**: {where}{more}.\n\n"
