"""Experiment 2, ``accuracy``: figure ``fig2_accuracy`` and table ``table2_accuracy``.

Per (N, method): the final KL/N and the standardized mean errors |E_q − E_ref| / sd_ref (mean over
coordinates) of the global and local blocks, mean over seeds ± 1 sd over seeds (ddof = 1; a single
seed has no error bar), against N.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hierbench.reports.paper.markdown import header, markdown_table, mean_pm, n_text, write_table
from hierbench.reports.paper.plotting import (
    GAP_FLOOR,
    empty_panel,
    figure_legend,
    log_x,
    palette,
    save_figure,
    subplots,
)
from hierbench.reports.paper.runs import (
    is_ok,
    mean_sd,
    method_label,
    method_order,
    num_groups,
    sort_rows,
    status_summary,
    status_text,
    value_at,
)
from hierbench.reports.paper.sources import Source

TITLE = "Accuracy at an equal budget"
FIGURE, TABLE = "fig2_accuracy", "table2_accuracy"
FIGURE_TEXT = (
    "Final KL/N and standardized mean errors of θ (global) and z (local) vs N at an equal "
    "budget; mean over seeds ± 1 sd over seeds."
)


ACCURACY_METRICS = {  # column -> where in a record
    "kl_per_group": ("kl_per_group",),
    "global_std_mean_err": ("accuracy", "global", "std_mean_err_mean"),
    "local_std_mean_err": ("accuracy", "local", "std_mean_err_mean"),
    "global_sd_ratio_err": ("accuracy", "global", "sd_ratio_err_mean"),
    "local_sd_ratio_err": ("accuracy", "local", "sd_ratio_err_mean"),
}


def accuracy_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 2: per (N, method), mean and sd over seeds (ddof = 1) of each metric of
    :data:`ACCURACY_METRICS`, over the seeds whose runs ended ``ok`` (``seeds_ok`` of ``seeds``)."""
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((num_groups(rec), method_label(rec)), []).append(rec)
    rows = []
    for (size, lab), recs in groups.items():
        ok = [r for r in recs if is_ok(r)]
        row: dict[str, Any] = {
            "N": size,
            "method": lab,
            "status": status_summary([status_text(r) for r in recs]),
            "seeds": len(recs),
            "seeds_ok": len(ok),
        }
        for col, path in ACCURACY_METRICS.items():
            mean, sd, _ = mean_sd([value_at(r, path) for r in ok])
            row[f"{col}_mean"], row[f"{col}_sd"] = mean, sd
        rows.append(row)
    return sort_rows(pd.DataFrame(rows), records, ["N"])


def _errorbars(
    ax: plt.Axes, table: pd.DataFrame, col: str, labels: Sequence[str], colors: dict, floor: float | None
) -> bool:
    """One line with ±1 sd error bars per method; methods are spread a little along log N to stay apart."""
    present = [lab for lab in labels if lab in set(table["method"])]
    plotted = False
    for k, lab in enumerate(present):
        sub = table[(table["method"] == lab)].dropna(subset=[f"{col}_mean"])
        if sub.empty:
            continue
        offset = 10 ** (0.025 * (k - (len(present) - 1) / 2))
        mean = sub[f"{col}_mean"].astype(float).to_numpy()
        sd = sub[f"{col}_sd"].astype(float).fillna(0.0).to_numpy()
        if floor is not None:
            mean = np.maximum(mean, floor)
        ax.errorbar(
            sub["N"].astype(float).to_numpy() * offset,
            mean,
            yerr=sd,
            color=colors[lab],
            marker="o",
            markersize=3.5,
            capsize=2,
            lw=1.2,
            label=lab,
        )
        plotted = True
    if plotted:
        log_x(ax)
        ax.set_yscale("log", nonpositive="clip")
    else:
        empty_panel(ax, "no ok runs")
    return plotted


def accuracy_figure(
    table: pd.DataFrame, records: list[dict[str, Any]], out: Path, source: Source, command: str
) -> list[Path]:
    """Figure 2: KL/N, global and local standardized mean error vs N; mean ± 1 sd over seeds."""
    labels = method_order(records)
    colors = palette(labels)
    fig, axes = subplots(1, 3, width=3.6, height=3.0)
    panels = [
        ("kl_per_group", f"final KL / N (nats; floor {GAP_FLOOR:g})", GAP_FLOOR),
        ("global_std_mean_err", "global θ: |E_q − E| / sd (mean)", None),
        ("local_std_mean_err", "local z: |E_q − E| / sd (mean)", None),
    ]
    for ax, (col, ylabel, floor) in zip(axes[0], panels, strict=True):
        if not table.empty:
            _errorbars(ax, table, col, labels, colors, floor)
        else:
            empty_panel(ax, "no records")
        ax.set_xlabel("N (groups)")
        ax.set_ylabel(ylabel)
    plotted = table.dropna(subset=["kl_per_group_mean"]) if not table.empty else table
    figure_legend(fig, colors, [lab for lab in labels if not plotted.empty and lab in set(plotted["method"])])
    not_ok = (
        []
        if table.empty
        else [f"{r.method} at N={n_text(r.N)}: {r.status}" for r in table.itertuples() if r.status != "ok"]
    )
    fig.suptitle(
        "Accuracy at an equal budget (hier-linear): mean over seeds, error bars ±1 sd over seeds (ddof=1)",
        y=1.03,
    )
    if not_ok:  # the runs without a point: infeasible dense, diverged or failed seeds
        fig.text(
            0.0,
            -0.05,
            textwrap.fill("runs not all ok (no point or fewer seeds): " + "; ".join(not_ok), 200),
            fontsize=6,
            color="0.3",
            ha="left",
            va="top",
        )
    fig.tight_layout()
    return save_figure(fig, out, FIGURE, source, command)


def make_accuracy(source: Source, out: Path, command: str, quick: bool) -> list[Path]:
    """Figure 2 and Table 2."""
    table = accuracy_table(source.records)
    show = table.copy()
    if not show.empty:
        for col in ACCURACY_METRICS:
            show[col] = mean_pm(table, col, ".3g")
        show = show[["N", "method", "status", "seeds", "seeds_ok", *ACCURACY_METRICS]]
    md = (
        header("Table 2: accuracy at an equal budget (hier-linear, d = 10)", source, command, quick)
        + "Per (N, method): mean ± sd over the seeds whose runs ended ok (sd with ddof = 1; none for one "
        "seed) of the final KL/N (exact) and of the standardized mean error |E_q − E| / sd and sd-ratio "
        "error |sd_q / sd − 1| (means over coordinates) of the global (θ) and local (z) blocks against the "
        "exact posterior. The CSV has the means and sds in separate columns.\n\n"
        + markdown_table(show, {})
        + "\n"
    )
    paths = write_table(out, TABLE, table, md)
    paths += accuracy_figure(table, source.records, out, source, command)
    return paths
