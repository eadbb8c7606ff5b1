"""What every figure of the paper shares: the theme, panels, colours, legends, log axes and saving.

A saved figure names its records file and the command that made it in small print below it, and its
PDF has no creation date, so that the same records give the same file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from hierbench._io import atomic_write  # noqa: E402
from hierbench.reports.figures import log_x  # noqa: E402, F401  (shared with hierbench report's figure)
from hierbench.reports.paper.runs import is_ok, method_label, status_text  # noqa: E402
from hierbench.reports.paper.sources import Source  # noqa: E402

GAP_FLOOR = 1e-5  # nats/group: log-scale floor of ELBO gaps and KLs (a converged fit's is noise around 0)


def palette(labels: Sequence[str]) -> dict[str, Any]:
    """A colour per label, tab10 in the labels' order (the same method keeps its colour across panels)."""
    colors = sns.color_palette("tab10", max(10, len(labels)))
    return {lab: colors[i] for i, lab in enumerate(labels)}


def save_figure(fig: plt.Figure, out: Path, stem: str, source: Source, command: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf`` into ``out``, with the records and the command in
    small print below the figure, and close it; returns both paths."""
    fig.text(
        0.0,
        -0.01,
        f"records: {os.fspath(source.path)} · made by: {command}",
        fontsize=6,
        color="0.4",
        ha="left",
        va="top",
    )
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    atomic_write(paths[0], lambda fh: fig.savefig(fh, format="png", dpi=150, bbox_inches="tight"))
    # no creation date in the PDF, so that the same records give the same file
    atomic_write(
        paths[1],
        lambda fh: fig.savefig(fh, format="pdf", bbox_inches="tight", metadata={"CreationDate": None}),
    )
    plt.close(fig)
    return paths


def figure_legend(
    fig: plt.Figure, colors: dict[str, Any], labels: Sequence[str], **styles: dict[str, Any]
) -> None:
    """One legend right of the figure: a coloured marker per label, then a grey line per named style."""
    handles = [Line2D([], [], color=colors[lab], marker="o", markersize=4, label=lab) for lab in labels]
    handles += [Line2D([], [], color="0.3", label=name, **style) for name, style in styles.items()]
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def panel_title(ax: plt.Axes, title: str, recs: list[dict[str, Any]]) -> None:
    """A panel title that names, on lines below it, the runs without a curve (infeasible, diverged, error);
    the seeds of one method with the same status share an entry ("× 3").  An entry takes two lines, the
    method then its status, so that it fits above a panel and does not run into the next one's."""
    counts = Counter((method_label(r), status_text(r)) for r in recs if not is_ok(r))
    lines = []
    for (label, status), k in counts.items():
        lines += [f"not plotted: {label}" + ("" if k == 1 else f" × {k}") + ":", status]
    ax.set_title("\n".join([title, *lines]), fontsize=9 if lines else None)


def empty_panel(ax: plt.Axes, text: str) -> None:
    """Say in the middle of an empty panel why it is empty."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.3")


def subplots(rows: int, cols: int, width: float = 3.3, height: float = 2.8) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``rows`` × ``cols`` panels (at least one column) of ``width`` × ``height`` inches each, in
    the paper's theme; the axes as a 2-d array."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(rows, max(1, cols), figsize=(width * max(1, cols), height * rows), squeeze=False)
    return fig, axes
