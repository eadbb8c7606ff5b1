"""Sweeps over an experiment's cells that survive failures and resume where they stopped.

:func:`run_sweep` expands an experiment (:mod:`hierbench.suites.experiment`), checks every cell
(:mod:`hierbench.suites.validate`), runs the cells that have no record yet
(:mod:`hierbench.suites.executors`) and appends one record per cell to a JSON-lines records file.
Each record gets the fields ``experiment``, ``cell_id``, ``label``, ``quick``, ``cell`` (the
requested keyword arguments) and ``compilation_cache`` on top of :func:`~hierbench.harness.run_one`'s.

Failures and resuming
---------------------
The records file is the sweep's state.  On start the sweep reads it and skips every cell that has a
record, so an interrupted sweep loses nothing and a rerun never duplicates a cell; ``retry_failed``
reruns the cells whose only records are errors.  A cell whose run raises, or whose worker process
dies (a segfault, the out-of-memory killer), is recorded with ``status="error"`` and its error
message, and the sweep goes on.  Only the driver process writes records, one locked, fsynced line per
cell, and a lock file (``<records>.lock``) keeps a second sweep from writing the same file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hierbench._io import REFERENCES_DIR, SWEEPS_DIR, file_lock, seal
from hierbench.datasets.base import ParamError
from hierbench.records import Record, append_record, error_line, failed_record, read_records
from hierbench.records import validate as validate_record
from hierbench.suites.executors import EXECUTORS, Runner, run_cell, run_dask, run_in_process, run_local
from hierbench.suites.experiment import (
    Cell,
    Experiment,
    check_stall_s,
    expand,
    find_experiment,
    load_experiment,
)
from hierbench.suites.tuning import latest, tuned_cell, tuning_cells, untuned
from hierbench.suites.validate import validate


@dataclasses.dataclass
class SweepResult:
    """What a sweep did: counts of cells, statuses of the cells run now, and the failed cells."""

    experiment: str
    out: Path
    cells: int
    skipped: int = 0
    ran: Counter = dataclasses.field(default_factory=Counter)  # status -> cells run now
    failed: list[str] = dataclasses.field(default_factory=list)  # cell ids whose records are all errors
    wall_s: float = 0.0
    dry_run: bool = False

    def summary(self) -> str:
        """The final one-line summary."""
        statuses = (
            "" if self.dry_run else ", ".join(f"{n} {status}" for status, n in sorted(self.ran.items()))
        )
        verb = "to run" if self.dry_run else "run now"
        line = (
            f"sweep {self.experiment}: {self.cells} cells; {sum(self.ran.values())} {verb}"
            f"{f' ({statuses})' if statuses else ''}, {self.skipped} skipped (already recorded)"
        )
        if not self.dry_run:
            line += f"; {len(self.failed)} failed in all; {self.wall_s:.0f} s"
        return line + f"; records: {self.out}"


def pending(
    cells: list[Cell], records: list[dict[str, Any]], retry_failed: bool = False
) -> tuple[list[Cell], list[Cell]]:
    """Split cells into (to run, to skip) given the records already written.

    A cell with any record is skipped; with ``retry_failed``, a cell whose only records are errors
    runs again."""
    statuses: dict[str, set[str]] = {}
    for rec in records:
        if rec.get("cell_id"):  # records are validated (status is there); cell_id is a sweep's field
            statuses.setdefault(rec["cell_id"], set()).add(rec["status"])
    todo, skip = [], []
    for cell in cells:
        seen = statuses.get(cell.cell_id)
        if not seen or (retry_failed and seen <= {"error"}):
            todo.append(cell)
        else:
            skip.append(cell)
    return todo, skip


def default_out(experiment: str, quick: bool = False) -> Path:
    """``results/sweeps/<experiment>[-quick]/records.jsonl``."""
    return SWEEPS_DIR / f"{experiment}{'-quick' if quick else ''}" / "records.jsonl"


def _sweep_lock(out: Path) -> contextlib.ExitStack:
    """Hold ``<out>.lock`` (:func:`hierbench._io.file_lock`) for the sweep, or raise :class:`ParamError`
    at once if another sweep holds it."""
    lock_path = out.with_name(out.name + ".lock")
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(file_lock(lock_path, blocking=False))
    except BlockingIOError:
        raise ParamError(
            f"another sweep is writing {out} (lock {lock_path}); wait for it or choose another --out"
        ) from None
    return stack


def _describe(cell: Cell) -> str:
    kw = cell.kwargs
    data = " ".join(f"{k}={v}" for k, v in kw["data_params"].items())
    options = " ".join(f"{k}={v}" for k, v in (kw.get("backend_options") or {}).items())
    backend = f" | {kw['backend']} {options}".rstrip() if "backend" in kw else ""
    steps = f"{kw['steps']} steps" if kw["steps"] is not None else f"the steps that fit {kw['budget_s']:g} s"
    line = f"{cell.label} | {kw['dataset']} {data}{backend} | run seed {kw['seed']}, {steps}"
    return line.replace("  ", " ")


def _outcome(record: Record) -> str:
    """The progress line's end: the status, a score only for a run that ended ok (a diverged run's last
    ELBO is not a result), the wall time, and the first line of any other run's error."""
    ok = record["status"] == "ok"
    parts = [record["status"]]
    if ok and record["kl_per_group"] is not None:
        parts.append(f"KL/N {record['kl_per_group']:.3g}")
    elif ok and record["elbo"] is not None:
        parts.append(f"ELBO {record['elbo']:.4g}")
    if record["wall_s"]:
        parts.append(f"{record['wall_s']:.1f} s")
    if not ok and error_line(record):
        parts.append(error_line(record))
    return ", ".join(parts)


def run_sweep(
    experiment: Experiment | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    jobs: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    references: str | os.PathLike | None = REFERENCES_DIR,
    compilation_cache: bool = False,
    progress: bool | None = None,
    runner: Runner = run_cell,
    cells: list[Cell] | None = None,
    isolate: bool | None = None,
    stall_s: float | None = None,
) -> SweepResult:
    """Run an experiment's cells that have no record yet, appending one record per cell to ``out``.

    Parameters
    ----------
    experiment : Experiment, str or path
        A loaded experiment, a file, or the name of a shipped experiment.
    out : path, optional
        The records file (JSON lines); default ``results/sweeps/<name>[-quick]/records.jsonl``.
    quick : bool
        Apply the experiment's ``--quick`` overrides.
    jobs : int
        Local worker processes (spawned, never forked; with K > 1 each is pinned to its 1/K share of
        the CPUs).  0 runs the cells in this process (no isolation from crashes; for debugging).
    executor : {"local", "dask"}
        Where cells run: local processes, or a Dask cluster at ``scheduler``.
    scheduler : str or object, optional
        The Dask scheduler address (``tcp://host:8786``), or anything ``distributed.Client`` accepts.
    retry_failed : bool
        Also rerun cells whose only records are errors.
    dry_run : bool
        Validate and list the cells (``todo`` or ``done``) without running anything.
    references : path, optional
        The reference store passed to run_one (None: none).
    compilation_cache : bool
        Switch on JAX's persistent compilation cache in every worker (see :func:`run_cell`): cells of
        the same shapes then compile once, and their ``compile_s`` is the time to load the program.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal).
    runner : callable
        ``runner(kwargs, options) -> record`` executed per cell (default :func:`run_cell`); it must be
        importable by name to reach worker processes.
    cells : list of Cell, optional
        The cells to run (default: all of :func:`expand`'s): a command that offers a subset of an
        experiment (e.g. ``hierbench bench --sizes``) selects them from :func:`expand`'s list.
    isolate : bool, optional
        One fresh worker process per cell (default: the experiment's ``isolate``); local workers only.
    stall_s : float, optional
        Kill a worker that reports no progress for this many seconds and record its cell as an error
        (default: the experiment's ``stall_s``, else no watchdog); local workers only
        (:mod:`hierbench.suites.executors`).

    Returns
    -------
    SweepResult
        Counts of skipped cells, statuses of cells run now, and the cells whose records are all errors.

    Raises
    ------
    ParamError
        For a bad experiment (unknown name, bad TOML, unknown method, dataset or parameter, bad
        value), bad options, or a records file another sweep holds; nothing has run then.
    """
    from tqdm.auto import tqdm

    if not isinstance(experiment, Experiment):
        experiment = load_experiment(find_experiment(experiment))
    if executor not in EXECUTORS:
        raise ParamError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if not isinstance(jobs, int) or jobs < 0:
        raise ParamError(f"jobs must be an integer >= 0, got {jobs!r}")
    if executor == "dask" and not scheduler:
        raise ParamError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    isolate = experiment.isolate if isolate is None else bool(isolate)
    stall_s = experiment.stall_s if stall_s is None else check_stall_s(stall_s)
    cells = expand(experiment, quick=quick) if cells is None else list(cells)
    validate(cells, str(experiment.path or experiment.name))
    out = Path(out) if out is not None else default_out(experiment.name, quick)
    options = {
        "references": None if references is None else str(Path(references).resolve()),
        "compilation_cache": bool(compilation_cache),
    }
    name = experiment.name + ("-quick" if quick else "")

    def read_existing() -> list[Record]:  # validated; unreadable lines are skipped with a warning
        return read_records([out]) if out.is_file() else []

    if dry_run:
        todo, skip = pending(cells, read_existing(), retry_failed)
        todo_ids = {c.cell_id for c in todo}
        if experiment.description:
            print(experiment.description)
        for tuner in {t.cell_id: t for t in tuning_cells(cells).values()}.values():
            print(f"tune  {tuner.cell_id}  {_describe(tuner)}")
        for cell in cells:
            print(f"{'todo' if cell.cell_id in todo_ids else 'done'}  {cell.cell_id}  {_describe(cell)}")
        return SweepResult(name, out, len(cells), len(skip), Counter({"todo": len(todo)}), dry_run=True)

    tuners = tuning_cells(cells)  # cells with tune_once -> their configuration's tuning cell
    tuning = list({t.cell_id: t for t in tuners.values()}.values())
    t0 = time.perf_counter()
    with _sweep_lock(out):
        seal(out)
        existing = read_existing()
        todo, skip = pending(cells, existing, retry_failed)
        tune_todo, _ = pending(
            [t for t in tuning if any(tuners[c.cell_id] is t for c in todo if c.cell_id in tuners)],
            existing,
            retry_failed,
        )
        result = SweepResult(name, out, len(cells), skipped=len(skip))
        statuses: dict[str, set[str]] = {}
        for rec in existing:
            statuses.setdefault(rec.get("cell_id"), set()).add(rec["status"])
        bar = tqdm(
            total=len(todo) + len(tune_todo),
            desc=f"sweep {name}",
            unit="cell",
            disable=None if progress is None else not progress,
            file=sys.stderr,
        )
        counter = itertools.count(1)
        requested: dict[str, dict[str, Any]] = {}  # cell id -> the keyword arguments the experiment asked
        extra: dict[str, dict[str, Any]] = {}  # cell id -> fields its record gets (role, shared tuning)

        def finish(cell: Cell, record: dict[str, Any]) -> None:
            problems = validate_record(record)
            if problems:  # written as is, the line would be skipped on resume and the cell rerun forever
                record = failed_record(
                    cell.kwargs, "error", f"the runner returned an invalid record: {'; '.join(problems)}"
                )
            record = dict(record) | {
                "experiment": experiment.name,
                "cell_id": cell.cell_id,
                "label": cell.label,
                "quick": quick,
                "cell": requested.get(cell.cell_id, cell.kwargs),
                "compilation_cache": options["compilation_cache"],
            }
            record |= extra.get(cell.cell_id, {})
            append_record(out, record)
            status = record["status"]
            statuses.setdefault(cell.cell_id, set()).add(status)
            if record.get("role") != "tuning":
                result.ran[status] += 1
            bar.update(1)
            failed = sum(n for s, n in result.ran.items() if s == "error")
            bar.set_postfix_str(f"done {sum(result.ran.values())}, skipped {result.skipped}, failed {failed}")
            total = len(todo) + len(tune_todo)
            bar.write(f"[{next(counter)}/{total}] {_describe(cell)}: {_outcome(record)}", file=sys.stdout)

        def run(batch: list[Cell]) -> None:
            if batch and executor == "dask":
                run_dask(batch, scheduler, runner, options, finish)
            elif batch and jobs == 0:
                run_in_process(batch, runner, options, finish)
            elif batch:
                run_local(batch, jobs, runner, options, finish, isolate, stall_s)

        with bar:
            bar.set_postfix_str(f"done 0, skipped {result.skipped}, failed 0")
            extra |= {t.cell_id: {"role": "tuning"} for t in tune_todo}
            run(tune_todo)  # first every configuration's tuning run, then the cells at their choices
            chosen = latest(read_existing(), {t.cell_id for t in tuning})
            ready = []
            for cell in todo:
                if cell.cell_id not in tuners:
                    ready.append(cell)
                    continue
                requested[cell.cell_id] = cell.kwargs
                tuner_record = chosen.get(tuners[cell.cell_id].cell_id)
                if (tuner_record or {}).get("status") == "infeasible":  # nothing to tune: its run says why
                    ready.append(untuned(cell))
                    continue
                try:
                    resolved, block = tuned_cell(cell, tuner_record)
                except ParamError as err:
                    finish(cell, failed_record(cell.kwargs, "error", f"ParamError: {err}"))
                    continue
                extra[cell.cell_id] = {"tuning": block}
                ready.append(resolved)
            run(ready)
    result.failed = [c.cell_id for c in cells if statuses.get(c.cell_id, set()) == {"error"}]
    result.wall_s = time.perf_counter() - t0
    return result
