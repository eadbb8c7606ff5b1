"""The JAX vs PyTorch table and figure of ``hierbench torch-bench`` (``results/torch/``), from its records.

- **steps/s** is steps / ``wall_s`` (the timed chunks only); compile time (``compile_s``: XLA for JAX,
  the warm-up steps for torch, see :mod:`hierbench.harness.backends.torch_backend`) is reported
  separately.
- **time to target** is the wall time at which a run's trace first reaches the JAX run's final ELBO
  less max(3 standard errors, 0.01 nats per group), interpolated linearly between checkpoints
  (:func:`hierbench.reports.targets.time_to_target`); empty when a run never gets there.  Every engine
  runs the same algorithm, so this mostly reflects speed, plus the run-to-run noise of different random
  streams.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierbench._io import atomic_write, atomic_write_text
from hierbench.reports.targets import time_to_target, trace_columns

TARGET_NATS_PER_GROUP = 0.01
ENGINES = ("JAX jit", "torch eager", "torch.compile")  # the table's and figure's order


def engine_of(backend: str | None, options: dict[str, Any] | None) -> str:
    """The engine label of a run: its backend, and for torch whether it compiles the loss."""
    if (backend or "jax") == "jax":
        return "JAX jit"
    return "torch.compile" if (options or {}).get("compile") else "torch eager"


def _engine(rec: dict[str, Any]) -> str:
    cell = rec.get("cell") or {}
    return rec.get("engine") or engine_of(rec.get("backend"), cell.get("backend_options"))


def _family(rec: dict[str, Any]) -> str:
    return rec.get("family") or rec.get("label") or rec["method"]


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: speed, compile time, final ELBO and time to the JAX run's target."""
    rows = []
    targets: dict[tuple[str, int], float] = {}
    for rec in records:
        if _engine(rec) == "JAX jit" and rec["status"] == "ok":
            slack = max(3 * rec["elbo_se"], TARGET_NATS_PER_GROUP * rec["num_groups"])
            targets[(_family(rec), rec["num_groups"])] = rec["elbo"] - slack
    for rec in records:
        n = rec.get("num_groups")  # every record whose model was built has it (no guessing from N)
        target = targets.get((_family(rec), n))
        ok = rec["status"] == "ok"
        rows.append(
            {
                "family": _family(rec),
                "N": n,
                "engine": _engine(rec),
                "status": rec["status"],
                "steps": rec["steps"],
                "steps_per_s": rec.get("steps_per_s") if ok else None,
                "wall_s": rec["wall_s"] if ok else None,
                "compile_s": rec["compile_s"],
                "elbo": rec["elbo"],
                "elbo_se": rec["elbo_se"],
                "kl_per_group": rec["kl_per_group"],
                "target_elbo": target,
                "time_to_target_s": time_to_target(*trace_columns(rec)[:2], target)
                if ok and target is not None
                else None,
                "threads": rec.get("torch_threads"),
            }
        )
    df = pd.DataFrame(rows)
    jax_rate = df[df.engine == "JAX jit"].set_index(["family", "N"])["steps_per_s"]
    df["speed_vs_jax"] = [
        r.steps_per_s / jax_rate.get((r.family, r.N), np.nan) if r.steps_per_s else np.nan
        for r in df.itertuples()
    ]
    return df


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """(family, N) rows; for each engine: steps/s (× JAX), compile s, time to target s."""
    engines = [e for e in ENGINES if e in set(df.engine)]
    head = ["family", "N"]
    for e in engines:
        head += [f"{e} steps/s", f"{e} compile s", f"{e} to target s"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":--", "--:"] + ["--:"] * (3 * len(engines))) + "|",
    ]
    for (family, n), grp in df.groupby(["family", "N"], sort=False):
        cells = [family, f"{n:,}"]
        by = grp.set_index("engine")
        for e in engines:
            if e not in by.index:
                cells += ["", "", ""]
                continue
            r = by.loc[e]
            if r.status != "ok":
                cells += [r.status, "", ""]
                continue
            rate = _fmt(r.steps_per_s)
            if e != "JAX jit" and np.isfinite(r.speed_vs_jax):
                rate += f" (×{r.speed_vs_jax:.2f})"
            cells += [rate, _fmt(r.compile_s, 2), _fmt(r.time_to_target_s, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(df: pd.DataFrame, path: Path) -> None:
    """Steps/s and time to target per family, one column per N, one colour per engine (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    long = df[df.status == "ok"].melt(
        id_vars=["family", "N", "engine"],
        value_vars=["steps_per_s", "time_to_target_s"],
        var_name="metric",
        value_name="value",
    )
    long["metric"] = long["metric"].map(
        {"steps_per_s": "steps / s", "time_to_target_s": "time to target (s)"}
    )
    import matplotlib.pyplot as plt

    long = long.dropna(subset=["value"]).astype({"family": object, "engine": object, "metric": object})
    sizes = sorted(set(long["N"]))
    metrics = ["steps / s", "time to target (s)"]
    families = [f for f in dict.fromkeys(df["family"]) if f in set(long["family"])]
    engines = [e for e in ENGINES if e in set(df.engine)]
    # one barplot per panel (seaborn's faceted catplot drew empty log-scale panels here)
    fig, axes = plt.subplots(
        len(metrics), len(sizes), figsize=(4.0 * len(sizes), 6.4), sharey="row", squeeze=False
    )
    for r, metric in enumerate(metrics):
        for c, n in enumerate(sizes):
            ax = axes[r, c]
            sub = long[(long["metric"] == metric) & (long["N"] == n)]
            sns.barplot(
                data=sub, x="family", y="value", hue="engine", order=families, hue_order=engines, ax=ax
            )
            ax.set_yscale("log")
            ax.set_title(f"N = {n:,}   {metric}")
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(axis="x", rotation=60)
            if ax.get_legend() is not None and (r, c) != (0, len(sizes) - 1):
                ax.get_legend().remove()
    fig.suptitle("hier-linear (n=20, d=10): JAX jit vs PyTorch eager vs torch.compile, 2 CPU cores")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def write_outputs(records: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """summary.md, summary.csv and jax_vs_torch.png from the records."""
    df = summarize(records)
    paths = {"csv": out / "summary.csv", "md": out / "summary.md", "figure": out / "jax_vs_torch.png"}
    atomic_write_text(paths["csv"], df.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(paths["md"], markdown_table(df))
    figure(df, paths["figure"])
    return paths
