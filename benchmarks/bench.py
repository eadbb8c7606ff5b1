"""``hierbench bench`` (``make bench``): the default benchmark, or the accuracy plan, run by the sweep.

The grids are experiment files, run like any other by :func:`hierbench.suites.sweep.run_sweep`:

- ``experiments/bench.toml`` (``--plan default``): the five families on ``hier-linear`` (n = 20, d = 10),
  N ∈ {10, 100, 1000}, seed 0; ``dense`` is recorded ``infeasible`` where its D×D factor exceeds its
  ``max_dim``.
- ``experiments/bench-accuracy.toml`` (``--plan accuracy``): every VI method on every dataset with a
  reference, at its default size, scored against the stored references (``make references`` first).

A bench run starts a fresh records file (the previous one is kept as ``records.prev.jsonl``), then writes
the report (:func:`hierbench.reports.report.write_report`: ``summary.md``, ``summary.csv``, ``trace.csv`` and
figures) beside it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from hierbench.datasets.base import ParamError

PLANS = {"default": "bench", "accuracy": "bench-accuracy"}  # --plan -> experiment file


def select_sizes(cells: list[Any], sizes: tuple[int, ...] | None) -> list[Any]:
    """The cells whose number of groups ``data_params["N"]`` is one of ``sizes`` (None: all).

    Raises
    ------
    ParamError
        For a size the plan does not have (other sizes want an experiment file of their own).
    """
    if sizes is None:
        return list(cells)
    have = sorted({c.kwargs["data_params"].get("N") for c in cells} - {None})
    unknown = [n for n in sizes if n not in have]
    if unknown:
        raise ParamError(
            f"--sizes {' '.join(map(str, unknown))}: the plan has N in {have}; for other sizes copy "
            "benchmarks/experiments/bench.toml, edit its N and run `hierbench sweep FILE`"
        )
    return [c for c in cells if c.kwargs["data_params"].get("N") in sizes]


def run_bench(
    plan: str = "default",
    out: str | Path = "results/bench",
    sizes: tuple[int, ...] | None = None,
    jobs: int = 1,
    progress: bool | None = None,
) -> int:
    """Run a bench plan into ``out/records.jsonl`` and write its report; returns the exit code.

    Parameters
    ----------
    plan : {"default", "accuracy"}
        Which experiment file (:data:`PLANS`).
    out : path
        The output folder.
    sizes : tuple of int, optional
        Only the cells at these numbers of groups (default plan; None: all).
    jobs : int
        The sweep's worker processes (0: in this process).
    progress : bool, optional
        The sweep's progress bar (default: when stderr is a terminal).

    Returns
    -------
    int
        0 when every cell has a record of its own (``ok``, ``infeasible``, ``diverged``); 1 when a cell
        raised or its worker died (an ``error`` record).
    """
    from hierbench.records import read_records
    from hierbench.reports.report import write_report
    from hierbench.suites.experiment import expand, find_experiment, load_experiment
    from hierbench.suites.sweep import run_sweep

    if plan not in PLANS:
        raise ParamError(f"unknown plan {plan!r}; valid: {', '.join(PLANS)}")
    experiment = load_experiment(find_experiment(PLANS[plan]))
    cells = select_sizes(expand(experiment), sizes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    if records_path.exists():  # one bench per records file; keep the previous run rather than lose it
        shutil.move(records_path, out / "records.prev.jsonl")
    t0 = time.perf_counter()
    result = run_sweep(experiment, records_path, jobs=jobs, progress=progress, cells=cells)
    write_report(read_records([records_path]), out, sources=[str(records_path)])
    print(
        f"bench finished in {time.perf_counter() - t0:.0f}s; records: {records_path}; "
        f"summary: {out / 'summary.md'}"
    )
    return 1 if result.failed else 0
