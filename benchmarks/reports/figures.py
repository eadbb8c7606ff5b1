"""The figure of ``hierbench report``: a dataset's convergence, drawn from its
:class:`~hierbench.reports.convergence.Plan` (what to draw and why is decided there); and :func:`log_x`,
the log time axis the paper's figures share."""

from __future__ import annotations

import io
import math
import textwrap

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from hierbench.reports.convergence import Plan  # noqa: E402

PANEL_COLUMNS = 3


def palette(labels: list[str]) -> dict[str, tuple[float, float, float]]:
    """A colour per label, in the labels' order (tab10, tab20 beyond ten, husl beyond twenty)."""
    name = "tab10" if len(labels) <= 10 else "tab20" if len(labels) <= 20 else "husl"
    colors = sns.color_palette(name, max(len(labels), 1))
    return {lab: colors[i] for i, lab in enumerate(labels)}


def log_x(ax: plt.Axes) -> None:
    """Log x with plain tick labels (10, 20, 50); minor ones (2, 5 per decade) only on an axis under two
    decades, where major ticks alone may be one or none, and where more of them would overlap."""
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_xlim()
    if lo > 0 and hi / lo < 100:
        ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
    else:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def trace_figure(plan: Plan) -> bytes:
    """The convergence figure of one dataset as PNG bytes: a panel per data configuration, a colour per
    run configuration, the caption (``plan.notes``) under it."""
    sns.set_theme(style="whitegrid", context="paper")
    ncols = min(len(plan.panels), PANEL_COLUMNS)
    nrows = math.ceil(len(plan.panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.8 * ncols, 6.0), 3.2 * nrows), squeeze=False)
    colors = palette(plan.labels)
    for ax, panel in zip(axes.flat, plan.panels, strict=False):
        seeds: dict[str, int] = {}
        for c in panel.curves:
            seeds[c.label] = seeds.get(c.label, 0) + 1
        for c in panel.curves:
            thin = seeds[c.label] > 1
            ax.plot(
                c.x,
                c.y,
                color=colors[c.label],
                lw=0.9 if thin else 1.5,
                alpha=0.8 if thin else 1.0,
                marker="o",
                markersize=2.5,
            )
            if panel.floor is not None and (c.noise_x or c.bad_x):
                ax.plot(
                    c.noise_x,
                    [panel.floor] * len(c.noise_x),
                    ls="none",
                    marker="v",
                    markersize=5,
                    markerfacecolor="none",
                    color=colors[c.label],
                )
                ax.plot(
                    c.bad_x, [panel.floor] * len(c.bad_x), ls="none", marker="x", markersize=6, color="red"
                )
        log_x(ax)
        if panel.metric == "kl_per_group":
            ax.set_yscale("log")
            ax.set_ylabel("KL(q‖p) per group (nats)")
            if any(c.noise_x or c.bad_x for c in panel.curves):  # the floor, named where it is used
                ax.axhline(panel.floor, color="0.6", lw=0.6, ls=":")
                ax.annotate(
                    f"floor {panel.floor:.0e}: ▽ KL estimate ≤ 0",
                    (0.0, panel.floor),
                    xycoords=("axes fraction", "data"),
                    xytext=(2, 3),
                    textcoords="offset points",
                    ha="left",
                    va="bottom",
                    fontsize=6.5,
                    color="0.35",
                )
        else:
            ax.set_ylabel("ELBO (nats)")
        ax.set_xlabel("optimization wall time (s)")
        title = panel.title
        if panel.left_out:
            counts: dict[str, int] = {}
            for _, why in panel.left_out:
                counts[why] = counts.get(why, 0) + 1
            title += "\nnot drawn: " + ", ".join(f"{n} {why}" for why, n in counts.items())
        ax.set_title(title, fontsize=9)
        if not panel.curves:
            ax.text(
                0.5, 0.5, "no run ended ok", transform=ax.transAxes, ha="center", va="center", color="0.4"
            )
    for ax in list(axes.flat)[len(plan.panels) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=colors[lab], marker="o", markersize=3, lw=1.5, label=lab) for lab in plan.labels
    ]
    fig.suptitle(plan.title)
    fig.tight_layout()
    # below the panels: the legend, then the caption (placed once the legend's height is known)
    legend = fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.0, 0.0),
        frameon=False,
        fontsize=8,
        ncols=1 if ncols == 1 else 2,
    )
    fig.canvas.draw()
    bottom = legend.get_window_extent().transformed(fig.transFigure.inverted()).y0
    width = int(fig.get_figwidth() * 17)  # characters of 7-point text across the panels
    caption = "\n".join(textwrap.fill(note, width) for note in plan.notes)
    fig.text(0.0, bottom - 0.02, caption, fontsize=7, color="0.25", ha="left", va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
