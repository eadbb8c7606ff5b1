"""Experiment 3, ``movielens``: figure ``fig3_movielens`` and table ``table3_movielens``.

One column per (dataset, N): the ELBO (top) and the held-out log predictive density per observation
(bottom) against optimization time.  The harness scores the held-out density only at the end of a run
unless a trace point carries ``heldout_lpd_per_obs``; without it each run's final value is one point at
its final wall time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hierbench.reports.paper.accuracy import ACCURACY_METRICS
from hierbench.reports.paper.markdown import header, markdown_table, n_text, num_text, write_table
from hierbench.reports.paper.plotting import (
    empty_panel,
    figure_legend,
    log_x,
    palette,
    panel_title,
    save_figure,
    subplots,
)
from hierbench.reports.paper.runs import (
    is_ok,
    method_label,
    method_order,
    num_groups,
    sort_rows,
    status_text,
    value_at,
)
from hierbench.reports.paper.sources import Source

TITLE = "MovieLens"
FIGURE, TABLE = "fig3_movielens", "table3_movielens"
FIGURE_TEXT = (
    "ELBO (top) and held-out log predictive density per observation (bottom) vs optimization "
    "wall time, one column per (dataset, N)."
)


def movielens_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 3: one row per record: final ELBO ± se, held-out lpd per observation, times, and the
    standardized errors where a reference exists."""
    rows = []
    for rec in records:
        rows.append(
            {
                "dataset": rec["dataset"],
                "N": num_groups(rec),
                "method": method_label(rec),
                "seed": rec["seed"],
                "status": status_text(rec),
                "elbo": rec["elbo"],
                "elbo_se": rec["elbo_se"],
                "heldout_lpd_per_obs": rec.get(
                    "heldout_lpd_per_obs"
                ),  # optional: datasets with held-out rows
                "steps": rec["steps"],
                "wall_s": rec["wall_s"],
                "steps_per_s": rec.get("steps_per_s"),
                "compile_s": rec["compile_s"],
                "global_std_mean_err": value_at(rec, ACCURACY_METRICS["global_std_mean_err"]),
                "local_std_mean_err": value_at(rec, ACCURACY_METRICS["local_std_mean_err"]),
            }
        )
    return sort_rows(pd.DataFrame(rows), records, ["dataset", "N"])


def movielens_figure(records: list[dict[str, Any]], out: Path, source: Source, command: str) -> list[Path]:
    """Figure 3: ELBO (top) and held-out lpd per observation (bottom) vs wall time, per (dataset, N)."""
    labels = method_order(records)
    colors = palette(labels)
    keys = sorted({(str(r.get("dataset")), num_groups(r) or 0) for r in records})
    fig, axes = subplots(2, len(keys))
    any_trace_heldout = any_final_point = False
    for j, (dataset, size) in enumerate(keys):
        here = [r for r in records if str(r.get("dataset")) == dataset and (num_groups(r) or 0) == size]
        ok = [r for r in here if is_ok(r)]
        ax_elbo, ax_lpd = axes[0, j], axes[1, j]
        ax_lpd.sharex(ax_elbo)  # a lone final point per run needs the ELBO curves' time axis
        finals = []
        for rec in ok:
            color = colors[method_label(rec)]
            pts = [
                p for p in rec.get("trace") or [] if p.get("elbo") is not None and (p.get("wall_s") or 0) > 0
            ]
            if pts:
                ax_elbo.plot([p["wall_s"] for p in pts], [p["elbo"] for p in pts], "o-", ms=3, color=color)
            if rec.get("elbo") is not None:
                finals.append(rec["elbo"])
            held = [p for p in pts if p.get("heldout_lpd_per_obs") is not None]
            if held:
                any_trace_heldout = True
                ax_lpd.plot(
                    [p["wall_s"] for p in held],
                    [p["heldout_lpd_per_obs"] for p in held],
                    "o-",
                    ms=3,
                    color=color,
                )
            elif rec.get("heldout_lpd_per_obs") is not None and (rec.get("wall_s") or 0) > 0:
                ax_lpd.plot([rec["wall_s"]], [rec["heldout_lpd_per_obs"]], "D", ms=5, color=color)
                any_final_point = True
        if ax_elbo.has_data() or ax_lpd.has_data():
            log_x(ax_elbo)
        for ax in (ax_elbo, ax_lpd):
            if not ax.has_data():
                empty_panel(ax, "no ok runs" if not ok else "no values")
            ax.set_xlabel("optimization wall time (s)")
        if finals:  # the first trace points are far below: keep the end of the curves readable
            spread = max(finals) - min(finals)
            ax_elbo.set_ylim(bottom=min(finals) - max(3 * spread, 0.01 * abs(max(finals)), 1.0))
        panel_title(ax_elbo, f"{dataset}, N = {n_text(size)}", here)
        ax_elbo.set_ylabel("ELBO (nats)" if j == 0 else "")
        ax_lpd.set_ylabel("held-out lpd / observation" if j == 0 else "")
    if not keys:
        empty_panel(axes[0, 0], "no records")
    figure_legend(
        fig, colors, [lab for lab in labels if any(is_ok(r) and method_label(r) == lab for r in records)]
    )
    how = {
        (True, False): "along the trace",
        (True, True): "along the trace where recorded, else the final value at the final wall time (◆)",
    }.get(
        (any_trace_heldout, any_final_point),
        "final value at the final wall time (◆): the trace has ELBOs only",
    )
    fig.suptitle(f"MovieLens: ELBO and held-out log predictive density ({how})", y=1.02)
    fig.tight_layout()
    return save_figure(fig, out, FIGURE, source, command)


def make_movielens(source: Source, out: Path, command: str, quick: bool) -> list[Path]:
    """Figure 3 and Table 3."""
    table = movielens_table(source.records)
    show = table.copy()
    if not show.empty:
        show["elbo"] = [
            f"{num_text(e, ',.2f')} ± {num_text(s, '.3f')}" if num_text(e, ".2f") else ""
            for e, s in zip(table["elbo"], table["elbo_se"], strict=True)
        ]
        show = show.drop(columns="elbo_se").rename(columns={"elbo": "elbo ± se"})
    md = (
        header("Table 3: MovieLens", source, command, quick)
        + "Per run: final ELBO ± se, held-out log predictive density per held-out observation, optimization "
        "wall time (compile excluded), steps/s, compile time, and the standardized mean errors where a gated "
        "NUTS reference exists for the same data.\n\n"
        + markdown_table(
            show,
            {
                "heldout_lpd_per_obs": ".4f",
                "wall_s": ".3g",
                "steps_per_s": ".0f",
                "compile_s": ".2f",
                "global_std_mean_err": ".3f",
                "local_std_mean_err": ".3f",
            },
        )
        + "\n"
    )
    paths = write_table(out, TABLE, table, md)
    paths += movielens_figure(source.records, out, source, command)
    return paths
