"""Scale: minibatch VI on MovieLens-25M-shaped data, never padded: an ordinary experiment.

``benchmarks/experiments/scale.toml`` is the plan: amortized VI (potential and moments heads) and branch
VI on ``movielens-synth`` at 162,541 users with its ratings kept compressed (``layout = "store"``), 256
users a step over 16 size strata, 600 s of optimization each; dense is recorded ``infeasible``.  The one
sweep path runs it (:func:`hierbench.suites.sweep.run_sweep`), each cell a :func:`hierbench.harness.run_one`
call: the batch source gathers each step's rows from the store
(:mod:`hierbench.methods.store_batches`), the chunked scorer scores over user chunks
(:mod:`hierbench.scoring_store`), every cell runs in a fresh process (its own peak RSS) under the
sweep's no-progress watchdog (``[experiment] isolate``, ``stall_s``).

What remains here is :func:`run_scale`, ``hierbench scale`` (``make scale``): that sweep into
``<out>/records.jsonl``, then the study's report from the records (:mod:`hierbench.scale.report`).
"""

from __future__ import annotations

import os
from pathlib import Path

from hierbench._io import RESULTS_DIR, SWEEPS_DIR
from hierbench.datasets.base import ParamError

EXPERIMENT = "scale"  # experiments/scale.toml
DEFAULT_OUT = RESULTS_DIR / "scale"
QUICK_OUT = SWEEPS_DIR / "scale-quick"  # a smoke check's records stay out of the study's folder


def run_scale(
    out: str | os.PathLike[str] | None = None,
    quick: bool = False,
    jobs: int = 1,
    retry_failed: bool = False,
    report_only: bool = False,
    progress: bool | None = None,
) -> int:
    """Run ``experiments/scale.toml`` into ``out/records.jsonl`` (resumable: recorded cells are skipped),
    then write ``summary.md`` and ``scale.png`` from every record there; returns the exit code.

    Parameters
    ----------
    out : path, optional
        The folder (default ``results/scale``; with ``quick``, ``results/sweeps/scale-quick``).
    quick : bool
        The experiment's ``[quick]`` smoke check (2,000 users, 40 steps; about 35 s on 2 cores).
    jobs : int
        Local worker processes (each cell in a fresh one: the experiment isolates its cells).
    retry_failed : bool
        Rerun cells whose only records are errors.
    report_only : bool
        Rebuild the report from the records without running anything.
    progress : bool, optional
        The sweep's progress bar.

    Returns
    -------
    int
        0 when every cell has a record of its own (``ok``, ``infeasible``, ``diverged``); 1 when a cell's
        records are all errors.

    Raises
    ------
    ParamError
        Bad options, or ``report_only`` without records.
    """
    from hierbench.records import read_records
    from hierbench.scale.report import write_summary
    from hierbench.suites.sweep import run_sweep

    out = Path(out) if out is not None else (QUICK_OUT if quick else DEFAULT_OUT)
    records_path = out / "records.jsonl"
    failed = False
    if not report_only:
        result = run_sweep(
            EXPERIMENT, records_path, quick=quick, jobs=jobs, retry_failed=retry_failed, progress=progress
        )
        print(result.summary())
        failed = bool(result.failed)
    if not records_path.is_file():
        raise ParamError(f"no records at {records_path}: run `hierbench scale` first")
    paths = write_summary(read_records([records_path]), out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 1 if failed else 0
