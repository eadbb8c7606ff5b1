"""JAX (jit) vs PyTorch (eager, ``torch.compile``): steps/s and time-to-target per VI family.

``make torch-bench`` (``python -m hierbench.torch_bench``) runs every family on ``hier-linear``
(n=20 rows per group, d=10) at N ∈ {100, 1000, 10⁴} with each engine, from the same initialization
and the same step budget, and writes ``results/torch/``: ``records.jsonl`` (one harness record per
run, plus ``engine`` and ``family``), ``summary.md`` / ``summary.csv`` and ``jax_vs_torch.png``.

- **steps/s** is steps / ``wall_s`` (the timed chunks only); compile time (``compile_s``: XLA for JAX,
  the warm-up steps for torch, see :mod:`hierbench.torch_harness`) is reported separately.
- **time to target** is the wall time at which a run's trace first reaches the JAX run's final ELBO
  less max(3 standard errors, 0.01 nats per group), interpolated linearly between checkpoints; empty
  when a run never gets there.  Every engine runs the same algorithm, so this mostly reflects speed,
  plus the run-to-run noise of different random streams.
- Budgets (:data:`STEPS`) are capped so that the whole benchmark takes about ten minutes on two CPU
  cores; at N=10⁴ they are far from convergence, so time to target there means "time to match
  JAX's progress within the same budget".
- torch.compile's cache is a fresh folder per benchmark run, so ``compile_s`` is a cold compile.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATASET = "hier-linear"
DATA = {"n": 20, "d": 10, "seed": 0}
SIZES = (100, 1000, 10_000)
STEPS = {100: 1000, 1000: 300, 10_000: 60}  # per N; see the module docstring
CHECKPOINTS = 5
EVAL_DRAWS = 200  # per checkpoint (off the clock); the final ELBO's standard error is larger than at 1000
TARGET_NATS_PER_GROUP = 0.01

# label -> (backend, backend options)
ENGINES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "JAX jit": ("jax", None),
    "torch eager": ("torch", {"compile": False}),
    "torch.compile": ("torch", {"compile": True}),
}
# label -> (method, method params)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "meanfield": ("meanfield", {}),
    "dense": ("dense", {}),
    "lowrank (r=5)": ("lowrank", {"rank": 5}),
    "branch": ("branch", {}),
    "amortized (moments)": ("amortized", {"head": "moments", "batch_groups": 32}),
    "amortized (potential)": ("amortized", {"head": "potential", "batch_groups": 32}),
}


def plan(
    sizes: tuple[int, ...] = SIZES,
    families: tuple[str, ...] | None = None,
    engines: tuple[str, ...] | None = None,
    steps: dict[int, int] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """The runs, as ``{"engine", "family", "kwargs"}`` with ``kwargs`` for ``run_one``; JAX first in
    each (family, N), since its final ELBO sets the target.  ``device`` is torch's (JAX runs on its
    default device: a CUDA jaxlib's GPU where there is one)."""
    steps = STEPS | (steps or {})
    runs = []
    for num_groups in sizes:
        for family in families or tuple(FAMILIES):
            method, params = FAMILIES[family]
            for engine in engines or tuple(ENGINES):
                backend, options = ENGINES[engine]
                if backend == "torch":
                    options = (options or {}) | {"device": device}
                kwargs = {
                    "method": method,
                    "dataset": DATASET,
                    "data_params": DATA | {"N": num_groups},
                    "method_params": dict(params),
                    "steps": steps.get(num_groups, min(steps.values())),
                    "seed": 0,
                    "checkpoints": CHECKPOINTS,
                    "eval_draws": EVAL_DRAWS,
                    "references": None,
                    "backend": backend,
                    "backend_options": options,
                }
                runs.append({"engine": engine, "family": family, "kwargs": kwargs})
    return runs


def time_to_target(trace: list[dict[str, Any]], target: float) -> float | None:
    """Wall time at which the trace's ELBO first reaches ``target`` (linear between checkpoints)."""
    prev = None
    for point in trace:
        elbo = point.get("elbo")
        if elbo is not None and elbo >= target:
            if prev is None or prev["elbo"] is None:
                return point["wall_s"]
            frac = (target - prev["elbo"]) / (elbo - prev["elbo"])
            return prev["wall_s"] + frac * (point["wall_s"] - prev["wall_s"])
        prev = point
    return None


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: speed, compile time, final ELBO and time to the JAX run's target."""
    rows = []
    targets: dict[tuple[str, int], float] = {}
    for rec in records:
        if rec.get("engine") == "JAX jit" and rec["status"] == "ok":
            slack = max(3 * rec["elbo_se"], TARGET_NATS_PER_GROUP * rec["num_groups"])
            targets[(rec["family"], rec["num_groups"])] = rec["elbo"] - slack
    for rec in records:
        n = rec.get("num_groups")  # every record whose model was built has it (no guessing from N)
        target = targets.get((rec["family"], n))
        ok = rec["status"] == "ok"
        rows.append(
            {
                "family": rec["family"],
                "N": n,
                "engine": rec["engine"],
                "status": rec["status"],
                "steps": rec["steps"],
                "steps_per_s": rec.get("steps_per_s") if ok else None,
                "wall_s": rec["wall_s"] if ok else None,
                "compile_s": rec["compile_s"],
                "elbo": rec["elbo"],
                "elbo_se": rec["elbo_se"],
                "kl_per_group": rec["kl_per_group"],
                "target_elbo": target,
                "time_to_target_s": time_to_target(rec["trace"], target)
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
    families = [f for f in FAMILIES if f in set(long["family"])]
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or ``--report-only``) and write its outputs."""
    parser = argparse.ArgumentParser(
        prog="python -m hierbench.torch_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="results/torch")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of groups N")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), help="default: all")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), help="default: all")
    parser.add_argument("--steps", type=int, help="one budget for every N (default: STEPS per N)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch's device")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the table and figure from records"
    )
    args = parser.parse_args(argv)

    from hierbench.records import append_record, read_records

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    if not args.report_only:
        from hierbench.harness import run_one

        if records_path.exists():  # keep the previous run rather than lose it
            shutil.move(records_path, out / "records.prev.jsonl")
        # a cold torch.compile cache, so compile_s is what a first run pays
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="hierbench-inductor-")
        steps = {n: args.steps for n in args.sizes} if args.steps else None
        runs = plan(
            tuple(args.sizes),
            args.families and tuple(args.families),
            args.engines and tuple(args.engines),
            steps,
            args.device,
        )
        t0 = time.perf_counter()
        for i, run in enumerate(runs, 1):
            kw = run["kwargs"]
            print(f"[{i}/{len(runs)}] {run['family']} N={kw['data_params']['N']} {run['engine']}", flush=True)
            load_start = os.getloadavg()[0]
            record = run_one(**kw, progress=False) | {"engine": run["engine"], "family": run["family"]}
            # other processes on the machine distort timings (torch's spinning OpenMP workers most)
            record["loadavg_1min"] = [load_start, os.getloadavg()[0]]
            append_record(records_path, record)
            rate = record.get("steps_per_s")
            print(
                f"    {record['status']}: {record['steps']} steps, {rate or 0:.1f} steps/s, "
                f"compile {record.get('compile_s') or 0:.1f}s, ELBO {record.get('elbo')}",
                flush=True,
            )
        print(f"torch-bench finished in {time.perf_counter() - t0:.0f}s", flush=True)
    paths = write_outputs(read_records([records_path]), out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
