"""Records → tables (markdown + CSV) and seaborn figures.

The records come validated from :func:`hierbench.records.read_records`, so the fields of
:data:`hierbench.records.REQUIRED` are read directly; optional ones (``accuracy``,
``heldout_lpd_per_obs``, ``steps_per_s``) with ``.get``.  Every output is made in memory first and
then written atomically (:func:`hierbench._io.atomic_write`), so a report that fails leaves nothing
half-written behind.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from hierbench._io import atomic_write_bytes, atomic_write_text  # noqa: E402

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


def variant(rec: dict[str, Any]) -> str:
    """Short label for the method parameters that distinguish runs of one method."""
    mp = rec["method_params"]
    parts = []
    if mp.get("batch_groups") not in (None, rec.get("num_groups")):  # no num_groups: a run that never started
        parts.append(f"B={mp['batch_groups']}")
    if "head" in mp:
        parts.append(mp["head"])
    if "rank" in mp:
        parts.append(f"r={mp['rank']}")
    if mp.get("condition_on_theta") is False:
        parts.append("no-theta")  # q(z_i | θ) = q(z_i)
    return ",".join(parts)


def label(rec: dict[str, Any]) -> str:
    v = variant(rec)
    return f"{rec['method']} ({v})" if v else rec["method"]


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


def write_report(
    records: list[dict[str, Any]],
    out_dir: str | Path,
    skipped: Sequence[tuple[str, int, str]] | None = None,
) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv``, ``trace.csv`` and figures into ``out_dir``.

    Parameters
    ----------
    records : list of dict
        Validated records (:func:`hierbench.records.read_records`).
    out_dir : path
        The output folder (created).
    skipped : list of (file, line, reason), optional
        Lines the reader could not read (default: ``records.skipped`` where it has one); their count
        and places are stated at the top of ``summary.md``.

    Returns
    -------
    dict
        Output name -> path.  Nothing is written unless every output could be made.
    """
    out = Path(out_dir)
    skipped = list(getattr(records, "skipped", []) if skipped is None else skipped)
    files: dict[str, tuple[Path, str | bytes]] = {}  # made in full before anything is written
    summary = summary_table(records)
    files["summary_csv"] = (out / "summary.csv", summary.to_csv(index=False))
    files["summary_md"] = (
        out / "summary.md",
        "# hierbench summary\n\n"
        + skipped_note(len(records), skipped)
        + "Final ELBO (float64, ± Monte Carlo standard error), KL = log evidence − ELBO "
        "where the evidence is exact, optimization wall time (compile excluded) and compile time.\n\n"
        + format_markdown(summary)
        + "\n",
    )
    if any(rec.get("accuracy") for rec in records):
        acc = accuracy_table(records)
        files["accuracy_csv"] = (out / "accuracy.csv", acc.to_csv(index=False))
        files["accuracy_md"] = (
            out / "accuracy.md",
            "# Posterior accuracy against the reference\n\nPer cell: global / local block standardized "
            "mean error |E_q − E_ref| / sd_ref (mean over coordinates) · PSIS k̂ of log p − log q.\n\n"
            + accuracy_markdown(acc)
            + "\n",
        )
    traces = trace_table(records)
    if not traces.empty:
        files["trace_csv"] = (out / "trace.csv", traces.to_csv(index=False))
        for dataset, sub in traces.groupby("dataset"):
            files[f"fig_{dataset}"] = (out / f"elbo_vs_time_{dataset}.png", _trace_figure(sub))
    out.mkdir(parents=True, exist_ok=True)
    for path, content in files.values():
        (atomic_write_text if isinstance(content, str) else atomic_write_bytes)(path, content)
    return {name: path for name, (path, _) in files.items()}


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


def _trace_figure(df: pd.DataFrame) -> bytes:
    """The convergence figure of one dataset's trace points, as PNG bytes."""
    has_kl = df["kl_per_group"].notna().all()
    y = "kl_per_group" if has_kl else "elbo"
    if has_kl:
        df = df.assign(kl_per_group=df["kl_per_group"].clip(lower=1e-6))
    sns.set_theme(style="whitegrid", context="paper")
    grid = sns.relplot(
        data=df,
        x="wall_s",
        y=y,
        hue="method",
        col="N",
        kind="line",
        marker="o",
        markersize=3,
        facet_kws={"sharex": False, "sharey": False},
        height=3.2,
        aspect=1.1,
    )
    grid.set(xscale="log")
    for ax in grid.axes.flat:  # minor-tick labels on a short log axis overlap
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if has_kl:
        grid.set(yscale="log")
    grid.set_axis_labels(
        "optimization wall time (s, compile excluded)", "KL(q‖p) per group (nats)" if has_kl else "ELBO"
    )
    grid.figure.suptitle(f"{df['dataset'].iloc[0]}: convergence", y=1.03)
    buf = io.BytesIO()
    grid.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(grid.figure)
    return buf.getvalue()
