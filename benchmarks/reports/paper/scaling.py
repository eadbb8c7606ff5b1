"""Experiment 1, ``scaling``: figure ``fig1_scaling_gap``, table ``table1_scaling`` and the headline ratio.

The figure: the ELBO gap to the exact log evidence per group, (log Z − ELBO) / N at every trace point,
against optimization wall time (top row) and against steps (bottom row), one column per N, log-log.
The gap is clipped below at :data:`~hierbench.reports.paper.plotting.GAP_FLOOR` nats/group (a
converged fit's gap is Monte Carlo noise around zero and may be negative); the start point (step 0,
time 0) has no place on a log axis and is left out.

The table gives, per record, the final KL and KL/N, the time to come within 1% and within 0.1
nats/group of the best final ELBO among the runs at that N (see
:func:`~hierbench.reports.targets.time_to_target`), steps/s, compile time and status; a run that never
comes within the target has an empty cell, and a cell that was not run because it would not fit
(dense above its ``max_dim``) reads ``infeasible (needs X GiB)``.  The headline ratio is explained in
:func:`headline_ratio`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from hierbench.reports.paper.markdown import header, markdown_table, num_text, write_table
from hierbench.reports.paper.plotting import (
    GAP_FLOOR,
    empty_panel,
    figure_legend,
    log_x,
    palette,
    panel_title,
    save_figure,
    subplots,
)
from hierbench.reports.paper.runs import (
    is_amortized_moments,
    is_amortized_potential,
    is_branch_full,
    is_ok,
    method_label,
    method_order,
    num_groups,
    sort_rows,
    status_text,
)
from hierbench.reports.paper.sources import Source
from hierbench.reports.tables import trace_table
from hierbench.reports.targets import time_to_target, trace_columns

HEADLINE_N = 10_000
HEADLINE_SE = 3.0  # the headline target: branch's final ELBO minus max(3 se, HEADLINE_TINY)
HEADLINE_TINY = 1e-3  # nats (total), for a final ELBO whose se is ~0
WITHIN_FRACTION = 0.01  # "within 1%" of the best final ELBO
WITHIN_PER_GROUP = 0.1  # "within 0.1 nats/group" of the best final ELBO
PAPER_CLAIM = "the paper's claim: ≥ 5× faster, target 10×"
# the headline's fast runs: the paper's net (moments head) and the potential head, each against branch
HEADLINE_FAST = (is_amortized_moments, is_amortized_potential)
TITLE = "Scaling in N"
FIGURE, TABLE = "fig1_scaling_gap", "table1_scaling"
FIGURE_TEXT = (
    "ELBO gap to the exact log evidence per group vs optimization wall time (top) and vs steps "
    f"(bottom), one column per N; log-log, clipped at {GAP_FLOOR:g} nats/group."
)


def _trace(rec: dict[str, Any], key: str = "wall_s") -> tuple[list[float], list[float | None]]:
    times, elbos, _ = trace_columns(rec, key)
    return times, elbos


def headline_ratio(
    records: list[dict[str, Any]],
    n: int = HEADLINE_N,
    fast: Callable[[dict[str, Any]], bool] = is_amortized_potential,
    slow: Callable[[dict[str, Any]], bool] = is_branch_full,
) -> list[dict[str, Any]]:
    """How much sooner amortized (``fast``: the potential head by default) reaches branch (full data)'s
    final ELBO, at N = ``n``.

    The rule, the same for both runs: the target is branch's final ELBO minus
    max(:data:`HEADLINE_SE` · its standard error, :data:`HEADLINE_TINY` nats), so that branch itself
    reaches it despite Monte Carlo noise in its last estimate; each run's time to the target is the
    optimization wall time (compile excluded) where its trace first crosses it, interpolated linearly
    between trace points (:func:`time_to_target`).  Branch's time is thus at most its total wall time,
    and the ratio is branch's time / amortized's time (> 1: amortized is faster).  Amortized may never
    reach the target within its budget; the ratio is then None.

    Parameters
    ----------
    records : list of dict
        The scaling experiment's records.
    n : int
        The number of groups to compare at.  Where no pair of ``ok`` runs exists at ``n`` (e.g. in
        quick records) the largest N with one is used, and ``requested_n`` says what was asked.
    fast, slow : callable
        Pick the runs to compare.

    Returns
    -------
    list of dict
        One per seed both runs have: ``N``, ``requested_n``, ``seed``, ``target``, ``tolerance``,
        ``t_fast_s``, ``t_slow_s``, ``ratio``, ``fast_wall_s``, ``slow_wall_s``, ``fast_final_elbo``,
        ``slow_final_elbo``.  Empty when no N has both runs ``ok``.
    """
    pairs: dict[tuple[int, Any], dict[str, dict[str, Any]]] = {}
    for rec in records:
        if not is_ok(rec) or rec.get("elbo") is None:
            continue
        for role, pick in (("fast", fast), ("slow", slow)):
            if pick(rec):
                pairs.setdefault((num_groups(rec), rec.get("seed")), {}).setdefault(role, rec)
    complete = {key: pair for key, pair in pairs.items() if len(pair) == 2}
    sizes = sorted({size for size, _ in complete})
    if not sizes:
        return []
    size = n if n in sizes else sizes[-1]
    out = []
    for (size_k, seed), pair in sorted(complete.items(), key=lambda kv: str(kv[0][1])):
        if size_k != size:
            continue
        slow_rec, fast_rec = pair["slow"], pair["fast"]
        tol = max(HEADLINE_SE * (slow_rec.get("elbo_se") or 0.0), HEADLINE_TINY)
        target = slow_rec["elbo"] - tol
        t_slow = time_to_target(*_trace(slow_rec), target)
        t_fast = time_to_target(*_trace(fast_rec), target)
        ratio = t_slow / t_fast if t_slow is not None and t_fast not in (None, 0.0) else None
        out.append(
            {
                "N": size,
                "requested_n": n,
                "seed": seed,
                "target": target,
                "tolerance": tol,
                "t_fast_s": t_fast,
                "t_slow_s": t_slow,
                "ratio": ratio,
                "fast_label": method_label(fast_rec),
                "slow_label": method_label(slow_rec),
                "fast_wall_s": fast_rec.get("wall_s"),
                "slow_wall_s": slow_rec.get("wall_s"),
                "fast_final_elbo": fast_rec.get("elbo"),
                "slow_final_elbo": slow_rec["elbo"],
            }
        )
    return out


def headline_sentence(rows: list[dict[str, Any]], n: int = HEADLINE_N) -> str:
    """The headline ratio as one sentence per seed (or why it cannot be computed), and its spread over
    seeds, for each fast method in ``rows`` (in their order)."""
    if not rows:
        return (
            f"Headline ratio: not computable, no N has both an amortized and a branch (full data) run `ok` "
            f"(wanted N={n:,})."
        )
    sentences = []
    for label in dict.fromkeys(row["fast_label"] for row in rows):
        group = [row for row in rows if row["fast_label"] == label]
        for row in group:
            where = f"N={row['N']:,}"
            if row["N"] != row["requested_n"]:
                where += f" (no N={row['requested_n']:,} pair in these records; the largest N with one)"
            head = (
                f"Headline ratio at {where}, seed {row['seed']}: the target is {row['slow_label']}'s final "
                f"ELBO {row['slow_final_elbo']:,.3f} − {row['tolerance']:.3g} nats; {row['slow_label']} "
                f"reaches it at {num_text(row['t_slow_s'], '.3g')} s (of {row['slow_wall_s']:.3g} s in all)"
            )
            if row["t_fast_s"] is None:
                sentences.append(
                    f"{head}, and {label} never does within its {row['fast_wall_s']:.3g} s "
                    f"(final ELBO {row['fast_final_elbo']:,.3f}), so there is no ratio ({PAPER_CLAIM})."
                )
            else:
                sentences.append(
                    f"{head}, {label} at {row['t_fast_s']:.3g} s: "
                    f"**{num_text(row['ratio'], '.3g')}×** faster ({PAPER_CLAIM})."
                )
        sentences.append(f"{label}: {headline_spread(group)}")
    return " ".join(sentences)


def headline_spread(rows: list[dict[str, Any]]) -> str:
    """The headline ratio over seeds: median and range, counting seeds where amortized never got there."""
    ratios = sorted(row["ratio"] for row in rows if row["ratio"] is not None)
    missing = len(rows) - len(ratios)
    never = f"; {missing} of {len(rows)} seeds have no ratio" if missing else ""
    if not ratios:
        return f"Over {len(rows)} seed(s): no ratio{never}."
    if len(ratios) == 1:
        return f"Over {len(rows)} seed(s): {ratios[0]:.3g}× (one seed, no spread){never}."
    return (
        f"Over {len(ratios)} seeds: median **{float(np.median(ratios)):.3g}×**, range "
        f"{ratios[0]:.3g}–{ratios[-1]:.3g}×{never}."
    )


def scaling_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 1: one row per record of the scaling experiment.

    ``t_within_1pct_s`` and ``t_within_0.1_per_group_s`` are the wall times at which the run first
    comes within 1% (of |ELBO|) and within 0.1 nats/group of ``best_final_elbo``, the best final ELBO of
    the ``ok`` runs at that N (:func:`time_to_target`; empty if never).
    """
    best: dict[int | None, float] = {}
    for rec in records:
        if is_ok(rec) and rec.get("elbo") is not None:
            size = num_groups(rec)
            best[size] = max(best.get(size, -math.inf), rec["elbo"])
    rows = []
    for rec in records:
        size = num_groups(rec)
        row = {
            "N": size,
            "method": method_label(rec),
            "seed": rec.get("seed"),
            "status": status_text(rec),
            "elbo": rec.get("elbo"),
            "elbo_se": rec.get("elbo_se"),
            "kl": rec.get("kl"),
            "kl_per_group": rec.get("kl_per_group"),
            "best_final_elbo": best.get(size),
            "t_within_1pct_s": None,
            "t_within_0.1_per_group_s": None,
            "steps": rec.get("steps"),
            "wall_s": rec.get("wall_s"),
            "steps_per_s": rec.get("steps_per_s"),
            "compile_s": rec.get("compile_s"),
            "memory_bytes": rec.get("memory_bytes"),
        }
        if is_ok(rec) and size in best:
            top = best[size]
            row["t_within_1pct_s"] = time_to_target(*_trace(rec), top - WITHIN_FRACTION * abs(top))
            row["t_within_0.1_per_group_s"] = time_to_target(*_trace(rec), top - WITHIN_PER_GROUP * size)
        rows.append(row)
    return sort_rows(pd.DataFrame(rows), records, ["N"])


def scaling_figure(records: list[dict[str, Any]], out: Path, source: Source, command: str) -> list[Path]:
    """Figure 1: ELBO gap per group vs wall time (top row) and vs steps (bottom row), a column per N."""
    labels = method_order(records)
    colors = palette(labels)
    frames = []
    for rec in records:
        if is_ok(rec) and rec.get("log_evidence") is not None:
            df = trace_table([rec])  # its kl_per_group is (log Z − ELBO) / N at each trace point
            if not df.empty:
                frames.append(df.assign(method=method_label(rec), run=rec.get("record_id") or id(rec)))
    traces = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    sizes = sorted({s for s in (num_groups(r) for r in records) if s is not None})
    fig, axes = subplots(2, len(sizes))
    for j, size in enumerate(sizes):
        here = [r for r in records if num_groups(r) == size]
        sub = traces[traces["N"] == size] if not traces.empty else traces
        for i, x in enumerate(("wall_s", "step")):
            ax = axes[i, j]
            pts = (
                sub[sub[x] > 0].assign(gap=lambda d: d["kl_per_group"].clip(lower=GAP_FLOOR))
                if len(sub)
                else sub
            )
            if len(pts):
                sns.lineplot(
                    data=pts,
                    x=x,
                    y="gap",
                    hue="method",
                    hue_order=[lab for lab in labels if lab in set(pts["method"])],
                    palette=colors,
                    units="run",
                    estimator=None,
                    marker="o",
                    markersize=3,
                    legend=False,
                    ax=ax,
                )
                log_x(ax)
                ax.set_yscale("log")
                if pts["gap"].min() <= 10 * GAP_FLOOR:  # else the line would only squash the curves
                    ax.axhline(GAP_FLOOR, color="0.6", lw=0.8, ls=":")
            else:
                empty_panel(ax, "no ok run with a trace")
            if i == 0:
                panel_title(ax, f"N = {size:,}", here)
            ax.set_xlabel("optimization wall time (s)" if x == "wall_s" else "steps")
            ax.set_ylabel("(log Z − ELBO) / N (nats)" if j == 0 else "")
    if not sizes:
        empty_panel(axes[0, 0], "no records with N")
    figure_legend(fig, colors, [lab for lab in labels if not traces.empty and lab in set(traces["method"])])
    fig.suptitle(
        "Scaling in N (hier-linear): ELBO gap to the exact log evidence per group\n"
        f"clipped at {GAP_FLOOR:g} (dotted where reached); wall time excludes compilation; the start "
        "(step 0) is not shown",
        y=1.02,
    )
    fig.tight_layout()
    return save_figure(fig, out, FIGURE, source, command)


def make_scaling(source: Source, out: Path, command: str, quick: bool) -> tuple[list[Path], list[dict]]:
    """Figure 1 and Table 1; returns the paths and the headline rows."""
    records = source.records
    table = scaling_table(records)
    headline = [row for fast in HEADLINE_FAST for row in headline_ratio(records, fast=fast)]
    md = (
        header("Table 1: scaling in N (hier-linear, d = 10)", source, command, quick)
        + "Per run: final ELBO ± se, KL = log Z − ELBO (exact) and KL/N; the optimization wall time (compile "
        f"excluded) at which the run first comes within {WITHIN_FRACTION:.0%} of |ELBO| and within "
        f"{WITHIN_PER_GROUP} nats/group of the best final ELBO of the runs at that N (linear interpolation "
        "between trace points; empty: never); steps/s, compile time and status. An infeasible cell states "
        "the memory it would have needed.\n\n"
        + headline_sentence(headline)
        + "\n\n"
        + markdown_table(
            table,
            {
                "elbo": ",.2f",
                "elbo_se": ".3f",
                "kl": ".4g",
                "kl_per_group": ".3g",
                "best_final_elbo": ",.2f",
                "t_within_1pct_s": ".3g",
                "t_within_0.1_per_group_s": ".3g",
                "wall_s": ".3g",
                "steps_per_s": ".0f",
                "compile_s": ".2f",
            },
            drop=("memory_bytes",),
        )
        + "\n"
    )
    paths = write_table(out, TABLE, table, md)
    paths += scaling_figure(records, out, source, command)
    return paths, headline
