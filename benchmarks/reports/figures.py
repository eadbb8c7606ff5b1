"""The figure of ``hierbench report``: a dataset's convergence, KL per group (or the ELBO) against time."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def trace_figure(df: pd.DataFrame) -> bytes:
    """The convergence figure of one dataset's trace points, as PNG bytes.

    Parameters
    ----------
    df : DataFrame
        One dataset's rows of :func:`hierbench.reports.tables.trace_table`.

    Returns
    -------
    bytes
        The PNG: KL(q‖p) per group against optimization wall time where every point has it (exact
        evidence), else the ELBO; one panel per N, one line per method, log axes.
    """
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
