"""JAX (jit) vs PyTorch (eager, ``torch.compile``): steps/s and time-to-target per VI family.

``make torch-bench`` (``hierbench torch-bench``) runs the grid of ``experiments/torch-bench.toml`` through
the sweep (:func:`hierbench.sweep.run_sweep`): every family on ``hier-linear`` (n=20 rows per group,
d=10) at N ∈ {100, 1000, 10⁴} with each engine, from the same initialization and the same step budget,
and writes ``results/torch/``: ``records.jsonl`` (one harness record per run, plus ``engine``; the run's
``label`` is its family), ``summary.md`` / ``summary.csv`` and ``jax_vs_torch.png``.

- **steps/s** is steps / ``wall_s`` (the timed chunks only); compile time (``compile_s``: XLA for JAX,
  the warm-up steps for torch, see :mod:`hierbench.torch_harness`) is reported separately.
- **time to target** is the wall time at which a run's trace first reaches the JAX run's final ELBO
  less max(3 standard errors, 0.01 nats per group), interpolated linearly between checkpoints
  (:func:`hierbench.reports.targets.time_to_target`); empty when a run never gets there.  Every engine
  runs the same algorithm, so this mostly reflects speed, plus the run-to-run noise of different random
  streams.
- Budgets (the experiment's ``size`` cases) are capped so that the whole benchmark takes about ten
  minutes on two CPU cores; at N=10⁴ they are far from convergence, so time to target there means
  "time to match JAX's progress within the same budget".
- torch.compile's cache is a fresh folder per benchmark run, so ``compile_s`` is a cold compile.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierbench.datasets.base import ParamError
from hierbench.reports.targets import time_to_target, trace_columns

EXPERIMENT = "torch-bench"  # experiments/torch-bench.toml
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


def cells(
    sizes: tuple[int, ...] | None = None,
    families: tuple[str, ...] | None = None,
    engines: tuple[str, ...] | None = None,
    steps: int | None = None,
    device: str = "cpu",
) -> list[Any]:
    """The experiment's cells (:class:`hierbench.sweep.Cell`), JAX first in each (family, N), narrowed
    to ``sizes``, ``families`` (run labels) and ``engines`` (None: all), with one step budget
    ``steps`` for every N if given and torch on ``device`` (JAX runs on its default device: a CUDA
    jaxlib's GPU where there is one).

    Raises
    ------
    ParamError
        For a size, family or engine the experiment does not have.
    """
    from hierbench.sweep import Cell, cell_id, expand, find_experiment, load_experiment

    grid = expand(load_experiment(find_experiment(EXPERIMENT)))
    choices = {
        "size": sorted({c.kwargs["data_params"]["N"] for c in grid}),
        "family": list(dict.fromkeys(c.label for c in grid)),
        "engine": list(ENGINES),
    }
    for what, asked in (("size", sizes), ("family", families), ("engine", engines)):
        unknown = [x for x in asked or () if x not in choices[what]]
        if unknown:
            raise ParamError(f"unknown {what}(s) {unknown}; valid: {choices[what]}")
    out = []
    for cell in grid:
        kw = dict(cell.kwargs)
        engine = engine_of(kw.get("backend"), kw.get("backend_options"))
        if (
            (sizes and kw["data_params"]["N"] not in sizes)
            or (families and cell.label not in families)
            or (engines and engine not in engines)
        ):
            continue
        if steps is not None:
            kw["steps"] = steps
        if kw.get("backend") == "torch":
            kw["backend_options"] = dict(kw.get("backend_options") or {}) | {"device": device}
        out.append(Cell(cell_id(kw), cell.label, cell.run_index, kw))
    return out


def run_cell(kwargs: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`hierbench.sweep.run_cell`, with the run's ``engine`` and the machine's load average before
    and after it (``loadavg_1min``): other processes distort timings, torch's spinning OpenMP workers most."""
    from hierbench.sweep import run_cell as sweep_run_cell

    load_start = os.getloadavg()[0]
    record = sweep_run_cell(kwargs, options)
    record["engine"] = engine_of(kwargs.get("backend"), kwargs.get("backend_options"))
    record["loadavg_1min"] = [load_start, os.getloadavg()[0]]
    return record


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
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_outputs(records: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """summary.md, summary.csv and jax_vs_torch.png from the records."""
    df = summarize(records)
    paths = {"csv": out / "summary.csv", "md": out / "summary.md", "figure": out / "jax_vs_torch.png"}
    df.to_csv(paths["csv"], index=False, float_format="%.6g")
    paths["md"].write_text(markdown_table(df))
    figure(df, paths["figure"])
    return paths


def run_torch_bench(
    out: str | Path = "results/torch",
    sizes: tuple[int, ...] | None = None,
    families: tuple[str, ...] | None = None,
    engines: tuple[str, ...] | None = None,
    steps: int | None = None,
    device: str = "cpu",
    report_only: bool = False,
    progress: bool | None = None,
) -> int:
    """Run the benchmark (or only rebuild its outputs from the records) and write them; see :func:`cells`
    for the selection arguments.  Returns 0, or 1 when a cell raised or its worker died."""
    from hierbench.records import read_records
    from hierbench.sweep import run_sweep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    failed = False
    if not report_only:
        todo = cells(sizes, families, engines, steps, device)
        if records_path.exists():  # keep the previous run rather than lose it
            shutil.move(records_path, out / "records.prev.jsonl")
        # a cold torch.compile cache, so compile_s is what a first run pays (the workers inherit it)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="hierbench-inductor-")
        t0 = time.perf_counter()
        result = run_sweep(
            EXPERIMENT, records_path, references=None, progress=progress, runner=run_cell, cells=todo
        )
        failed = bool(result.failed)
        print(f"torch-bench finished in {time.perf_counter() - t0:.0f}s", flush=True)
    paths = write_outputs(read_records([records_path]), out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 1 if failed else 0
