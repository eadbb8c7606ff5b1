"""JAX (jit) vs PyTorch (eager, ``torch.compile``): steps/s and time-to-target per VI family.

``make torch-bench`` (``hierbench torch-bench``) runs the grid of ``experiments/torch-bench.toml`` through
the sweep (:func:`hierbench.suites.sweep.run_sweep`): every family on ``hier-linear`` (n=20 rows per group,
d=10) at N ∈ {100, 1000, 10⁴} with each engine, from the same initialization and the same step budget,
and writes ``results/torch/``: ``records.jsonl`` (one harness record per run, plus ``engine``; the run's
``label`` is its family), ``summary.md`` / ``summary.csv`` and ``jax_vs_torch.png``
(:mod:`hierbench.reports.jax_vs_torch`, which says what steps/s and time to target are).

- Budgets (the experiment's ``size`` cases) are capped so that the whole benchmark takes about ten
  minutes on two CPU cores; at N=10⁴ they are far from convergence, so time to target there means
  "time to match JAX's progress within the same budget".
- torch.compile's cache is a fresh folder per benchmark run, so ``compile_s`` is a cold compile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from hierbench.datasets.base import ParamError
from hierbench.reports.jax_vs_torch import ENGINES, engine_of, write_outputs

EXPERIMENT = "torch-bench"  # experiments/torch-bench.toml


def cells(
    sizes: tuple[int, ...] | None = None,
    families: tuple[str, ...] | None = None,
    engines: tuple[str, ...] | None = None,
    steps: int | None = None,
    device: str = "cpu",
) -> list[Any]:
    """The experiment's cells (:class:`hierbench.suites.experiment.Cell`), JAX first in each (family, N),
    narrowed to ``sizes``, ``families`` (run labels) and ``engines`` (None: all), with one step budget
    ``steps`` for every N if given and torch on ``device`` (JAX runs on its default device: a CUDA
    jaxlib's GPU where there is one).

    Raises
    ------
    ParamError
        For a size, family or engine the experiment does not have.
    """
    from hierbench.suites.experiment import Cell, cell_id, expand, find_experiment, load_experiment

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
    """:func:`hierbench.suites.executors.run_cell`, with the run's ``engine`` and the machine's load
    average before and after it (``loadavg_1min``): other processes distort timings, torch's spinning
    OpenMP workers most."""
    from hierbench.suites.executors import run_cell as sweep_run_cell

    load_start = os.getloadavg()[0]
    record = sweep_run_cell(kwargs, options)
    record["engine"] = engine_of(kwargs.get("backend"), kwargs.get("backend_options"))
    record["loadavg_1min"] = [load_start, os.getloadavg()[0]]
    return record


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
    from hierbench.suites.sweep import run_sweep

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
