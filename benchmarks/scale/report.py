"""The scale study's report, from its records only: ``summary.md`` (one row a record) and ``scale.png``
(held-out log predictive density and ELBO per user against optimization time).

It reads any records of ``experiments/scale.toml``'s cells (``hierbench scale``, ``hierbench sweep
scale``), and those the former runner wrote (``results/scale/records.jsonl``): nothing here depends on
how a record was made, only on its fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = (
    "method",
    "variant",
    "N",
    "status",
    "elbo_per_user",
    "elbo_se",
    "heldout_lpd_per_obs",
    "steps",
    "wall_s",
    "compile_s",
    "steps_per_s",
    "peak_rss_gib",
    "memory_gib",
)
FORMATS = {
    "elbo_per_user": "{:.4f}",
    "elbo_se": "{:.1f}",
    "heldout_lpd_per_obs": "{:.4f}",
    "wall_s": "{:.1f}",
    "compile_s": "{:.1f}",
    "steps_per_s": "{:.2f}",
    "peak_rss_gib": "{:.2f}",
    "memory_gib": "{:,.2f}",
}


def variant(rec: dict[str, Any]) -> str:
    """The amortized head of a record ("" for other methods)."""
    return (rec.get("method_params") or {}).get("head") or ""


def label(rec: dict[str, Any]) -> str:
    """``method (head)``, or the method."""
    return f"{rec['method']} ({variant(rec)})" if variant(rec) else rec["method"]


def summary_frame(records: list[dict[str, Any]]):
    """One row per record (pandas DataFrame, :data:`SUMMARY_COLUMNS`); for an ``infeasible`` record the
    memory column is what it would need, else the run's estimate."""
    import pandas as pd

    rows = []
    for rec in records:
        n = rec.get("num_groups") or 0
        mem = rec.get("memory_bytes") or rec.get("memory_estimate_bytes")
        ok = rec["status"] == "ok"  # a diverged run's last scores are not a result: no number shown
        rows.append(
            {
                "method": rec["method"],
                "variant": variant(rec),
                "N": n,
                "status": rec["status"],
                "elbo_per_user": rec["elbo"] / n if ok and rec.get("elbo") is not None and n else None,
                "elbo_se": rec.get("elbo_se") if ok else None,
                "heldout_lpd_per_obs": rec.get("heldout_lpd_per_obs") if ok else None,
                "steps": rec.get("steps"),
                "wall_s": rec.get("wall_s"),
                "compile_s": rec.get("compile_s"),
                "steps_per_s": rec.get("steps_per_s"),
                "peak_rss_gib": (rec.get("peak_rss_bytes") or 0) / 2**30,
                "memory_gib": mem / 2**30 if mem else None,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def latest_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the figure shows: on the dataset and size of the last record, the last record of each
    method (and head) that ended ok and has a trace of scores (a failed run is never drawn)."""
    if not records:
        return []
    last = records[-1]
    chosen: dict[str, dict[str, Any]] = {}
    for rec in records:
        same = rec["dataset"] == last["dataset"] and rec.get("num_groups") == last.get("num_groups")
        if same and rec["status"] == "ok" and any(p.get("elbo") is not None for p in rec.get("trace") or []):
            chosen[label(rec)] = rec  # a later record of the same method replaces an earlier one
    return list(chosen.values())


def write_summary(records: list[dict[str, Any]], out: str | os.PathLike[str]) -> dict[str, Path]:
    """``summary.md`` (every record) and ``scale.png`` (:func:`latest_runs`' traces) in ``out``;
    returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    show = summary_frame(records)
    for col, fmt in FORMATS.items():
        show[col] = show[col].map(lambda v, f=fmt: "" if v is None or pd.isna(v) else f.format(v))
    paths = {"summary_md": out / "summary.md"}
    paths["summary_md"].write_text(
        "# hierbench scale\n\nMovieLens-25M-shaped data trained without padding (`hierbench scale`: the "
        "sweep of `benchmarks/experiments/scale.toml`). ELBO per user (float64, ± its Monte Carlo se in "
        "nats), held-out log predictive density per held-out rating, optimization wall time (compile "
        "excluded), peak RSS of the run's process, and the memory a method needs (estimated; for "
        "`infeasible` rows, what it would need).\n\n" + show.to_markdown(index=False) + "\n"
    )
    rows = []
    shown = latest_runs(records)
    for rec in shown:
        for p in rec.get("trace") or []:
            if p.get("elbo") is not None:
                rows.append(
                    {
                        "method": label(rec),
                        "optimization time (s)": p["wall_s"],
                        "held-out lpd per rating": p.get("heldout_lpd_per_obs"),
                        "ELBO per user": p["elbo"] / rec["num_groups"],
                    }
                )
    if rows:
        df = pd.DataFrame(rows)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, col in zip(axes, ("held-out lpd per rating", "ELBO per user"), strict=True):
            sns.lineplot(data=df, x="optimization time (s)", y=col, hue="method", marker="o", ax=ax)
        fig.suptitle(f"{shown[-1]['dataset']}, N = {shown[-1]['num_groups']:,} users")
        fig.tight_layout()
        paths["figure"] = out / "scale.png"
        fig.savefig(paths["figure"], dpi=120)
        plt.close(fig)
    return paths
