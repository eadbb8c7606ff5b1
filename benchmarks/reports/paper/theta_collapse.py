"""Experiment 4, ``theta_collapse``: figure ``fig4_theta_collapse`` and table ``table4_theta_collapse``.

Final KL/N of amortized VI with q(z_i | θ) and with q(z_i) (``condition_on_theta=false``) against N
for each head, and the gap (without − with), paired by seed, mean ± 1 sd over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierbench.reports.paper.markdown import header, markdown_table, mean_pm, write_table
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
    method_params,
    num_groups,
    status_summary,
    status_text,
)
from hierbench.reports.paper.sources import Source

TITLE = "θ collapse"
FIGURE, TABLE = "fig4_theta_collapse", "table4_theta_collapse"
FIGURE_TEXT = (
    "Final KL/N of amortized VI with and without conditioning q(z_i | θ) on θ vs N, and "
    "the gap (without − with); mean over seeds ± 1 sd."
)


def _theta_key(rec: dict[str, Any]) -> tuple[str, bool]:
    mp = method_params(rec)
    return str(mp.get("head", "?")), bool(mp.get("condition_on_theta", True))


def theta_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 4: per (head, N), final KL/N with and without conditioning on θ (mean, sd over seeds,
    ddof = 1, count) and the gap without − with, paired by seed (mean, sd, pairs)."""
    kl: dict[tuple[str, Any], dict[bool, dict[Any, float]]] = {}
    statuses: dict[tuple[str, Any], list[str]] = {}
    for rec in records:
        if rec["method"] != "amortized":
            continue
        head, conditioned = _theta_key(rec)
        key = (head, num_groups(rec))
        statuses.setdefault(key, []).append(status_text(rec))
        per_seed = kl.setdefault(key, {True: {}, False: {}})[conditioned]
        if is_ok(rec) and rec["kl_per_group"] is not None:
            per_seed[rec["seed"]] = float(rec["kl_per_group"])
    rows = []
    for (head, size), variants in kl.items():
        row: dict[str, Any] = {"head": head, "N": size, "status": status_summary(statuses[(head, size)])}
        for conditioned, name in ((True, "with_theta"), (False, "without_theta")):
            mean, sd, count = mean_sd(list(variants[conditioned].values()))
            row |= {f"kl_per_group_{name}_mean": mean, f"kl_per_group_{name}_sd": sd, f"{name}_seeds": count}
        paired = sorted(set(variants[True]) & set(variants[False]), key=str)
        mean, sd, count = mean_sd([variants[False][s] - variants[True][s] for s in paired])
        row |= {"gap_mean": mean, "gap_sd": sd, "gap_pairs": count}
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["head", "N"], kind="stable").reset_index(drop=True)


def theta_figure(table: pd.DataFrame, out: Path, source: Source, command: str) -> list[Path]:
    """Figure 4: KL/N with and without q(z_i | θ)'s conditioning vs N (left), and the gap (right)."""
    fig, axes = subplots(1, 2, width=4.2, height=3.2)
    ax_kl, ax_gap = axes[0]
    heads = list(dict.fromkeys(table["head"])) if not table.empty else []
    colors = palette(heads)
    styles = {
        "with θ: q(z_i | θ)": {"ls": "-", "marker": "o"},
        "without θ: q(z_i)": {"ls": "--", "marker": "s"},
    }
    for head in heads:
        sub = table[table["head"] == head]
        for name, style in zip(("with_theta", "without_theta"), styles.values(), strict=True):
            col = f"kl_per_group_{name}"
            part = sub.dropna(subset=[f"{col}_mean"])
            if part.empty:
                continue
            ax_kl.errorbar(
                part["N"].astype(float),
                np.maximum(part[f"{col}_mean"].astype(float), GAP_FLOOR),
                yerr=part[f"{col}_sd"].astype(float).fillna(0.0),
                color=colors[head],
                capsize=2,
                ms=3.5,
                **style,
            )
        part = sub.dropna(subset=["gap_mean"])
        if not part.empty:
            ax_gap.errorbar(
                part["N"].astype(float),
                part["gap_mean"].astype(float),
                yerr=part["gap_sd"].astype(float).fillna(0.0),
                color=colors[head],
                marker="o",
                ms=3.5,
                capsize=2,
            )
    if ax_kl.has_data():
        log_x(ax_kl)
        ax_kl.set_yscale("log", nonpositive="clip")
    else:
        empty_panel(ax_kl, "no ok runs")
    if ax_gap.has_data():
        log_x(ax_gap)
        if (table["gap_mean"].dropna() > 0).all():
            ax_gap.set_yscale("log", nonpositive="clip")
        else:  # a gap of either sign (noise) that spans decades: symmetric log, linear near 0
            ax_gap.set_yscale("symlog", linthresh=10 * GAP_FLOOR)
            ax_gap.axhline(0.0, color="0.5", lw=0.8)
    else:
        empty_panel(ax_gap, "no seed with both variants ok")
    ax_kl.set(xlabel="N (groups)", ylabel=f"final KL / N (nats; floor {GAP_FLOOR:g})", title="KL / N")
    ax_gap.set(xlabel="N (groups)", ylabel="KL/N without θ − with θ (nats)", title="cost of dropping θ")
    figure_legend(fig, {h: colors[h] for h in heads}, heads, **styles)
    fig.suptitle(
        "θ collapse (amortized VI, hier-linear): mean over seeds, error bars ±1 sd over seeds", y=1.03
    )
    fig.tight_layout()
    return save_figure(fig, out, FIGURE, source, command)


def make_theta(source: Source, out: Path, command: str, quick: bool) -> list[Path]:
    """Figure 4 and Table 4."""
    table = theta_table(source.records)
    show = table.copy()
    if not show.empty:
        show["KL/N with θ"] = mean_pm(table, "kl_per_group_with_theta", ".3g")
        show["KL/N without θ"] = mean_pm(table, "kl_per_group_without_theta", ".3g")
        show["gap (without − with)"] = mean_pm(table, "gap", ".3g")
        show = show[
            [
                "head",
                "N",
                "status",
                "KL/N with θ",
                "with_theta_seeds",
                "KL/N without θ",
                "without_theta_seeds",
            ]
            + ["gap (without − with)", "gap_pairs"]
        ]
    md = (
        header("Table 4: θ collapse (amortized VI, hier-linear, d = 10)", source, command, quick)
        + "Per (head, N): final KL/N (exact) with q(z_i | θ) and with q(z_i) (`condition_on_theta=false`), "
        "mean ± sd over the seeds that ended ok (ddof = 1), and the gap KL/N without − with θ, paired by "
        "seed (> 0: conditioning on θ helps).\n\n" + markdown_table(show, {}) + "\n"
    )
    paths = write_table(out, TABLE, table, md)
    paths += theta_figure(table, out, source, command)
    return paths
