"""Running cells: in this process, in local worker processes, or on a Dask cluster.

Every executor calls a runner (:func:`run_cell` by default) per cell and hands each record to the
driver's ``finish`` (:func:`hierbench.suites.sweep.run_sweep`), which alone writes records; a cell
whose run raises, or whose worker process dies, gets an ``error`` record and the other cells go on.
Local workers are spawned, never forked; with K > 1 jobs each is pinned to its 1/K share of the CPUs.

Isolation and the watchdog
--------------------------
Two experiment-level options (``[experiment]``, or :func:`~hierbench.suites.sweep.run_sweep`'s
arguments; not cell keys, so they change no cell id) apply to local worker processes (``jobs`` ≥ 1):

- ``isolate = true``: every cell runs in a fresh spawned process (``max_tasks_per_child=1``), so its
  record's peak RSS (:func:`hierbench.harness.memory.memory_info`) is that cell's own.
- ``stall_s = S``: a no-progress watchdog.  Each worker stamps the time into memory the driver reads
  whenever the run makes progress (:func:`hierbench.harness.loop.beat`: after every compile, chunk and
  score, and every chunk of users the chunked scorer scores).  A worker silent for ``S`` seconds is
  killed and its cell recorded as an ``error`` ("no progress for S s": XLA:CPU has deadlocked on 2
  cores, every thread parked, see the README's "Pinned versions"); the sweep goes on.  A worker's
  start-up, before its cell starts, may take up to ``max(S, STARTUP_S)`` (120 s).  Such a cell is
  not rerun as a crash suspect (it did not crash, it was killed); cells the kill broke the pool under
  run again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from hierbench.datasets.base import ParamError
from hierbench.records import Record, failed_record
from hierbench.suites.experiment import Cell

EXECUTORS = ("local", "dask")

Runner = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]  # (cell kwargs, run options) -> record
Finish = Callable[[Cell, dict[str, Any]], None]  # the driver's: record one cell


def run_cell(kwargs: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one cell and return its record; an exception becomes an ``error`` record (never raises).

    This is what worker processes (local or Dask) execute; it is importable by name so it pickles.

    Parameters
    ----------
    kwargs : dict
        The cell: keyword arguments of :func:`~hierbench.harness.run_one`.
    options : dict, optional
        ``references`` (the reference store, default none) and ``compilation_cache`` (switch on JAX's
        persistent compilation cache in ``.cache/hierbench/jax``, or ``$HIERBENCH_CACHE_DIR/jax``).
    """
    options = options or {}
    try:
        from hierbench.harness import run_one

        if options.get("compilation_cache"):
            from hierbench._jax import enable_compilation_cache

            enable_compilation_cache()
        return run_one(**kwargs, progress=False, references=options.get("references"))
    except Exception as err:
        return _exception_record(kwargs, err, traceback.format_exc())


WORKER_CRASHED = "WorkerCrashed: the worker process running this cell died (a segfault, or out of memory?)"


def _exception_record(kwargs: dict[str, Any], err: BaseException, tb: str | None = None) -> Record:
    """The ``error`` record (:func:`hierbench.records.failed_record`) of a cell whose run raised."""
    return failed_record(kwargs, "error", f"{type(err).__name__}: {err}", **({"traceback": tb} if tb else {}))


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _threads_per_worker(jobs: int) -> int:
    return max(1, (len(_cpus()) or os.cpu_count() or 1) // max(1, jobs))


@contextlib.contextmanager
def _worker_env(threads: int) -> Iterator[None]:
    """BLAS/OpenMP thread counts for spawned workers, which inherit the environment when they start
    (values the user set win).  XLA ignores them: workers are pinned to CPUs instead (_init_worker)."""
    settings = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {name: os.environ.get(name) for name in settings}
    for name, value in settings.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Set in each spawned worker by _init_worker: the driver's shared heartbeat and pid slots, and the slot
# of the cell this worker runs now (None between cells).
_BEATS: Any = None
_PIDS: Any = None
_SLOT: int | None = None
STARTUP_S = 120.0  # a worker's start-up (spawn, imports) may stay silent this long, whatever stall_s
STALLED = (
    "no progress for {stall_s:g} s: the worker was killed (an XLA:CPU deadlock? every thread parked, see "
    "the README's 'Pinned versions'); --retry-failed reruns the cell, or pin it to one core with taskset"
)


def _init_worker(driver_pid: int, slots: Any, jobs: int, isolate: bool, beats: Any, pids: Any) -> None:
    """Set up a spawned worker before it imports JAX's backend: ignore Ctrl-C (the driver stops the
    workers), pin it to its share of the CPUs (XLA sizes its thread pool from the CPUs it may use,
    and no XLA flag or environment variable reliably limits it; an isolated worker, which runs one
    cell, is pinned by that cell's slot instead: :func:`_watched`), exit if the driver dies, and
    point the loop's heartbeat (:func:`hierbench.harness.loop.set_heartbeat`) at the driver's memory."""
    global _BEATS, _PIDS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not isolate:
        with slots.get_lock():
            slot = slots.value
            slots.value += 1
        _pin(slot, jobs)

    def exit_with_driver() -> None:  # a killed driver must not leave workers computing for nobody
        while os.getppid() == driver_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_driver, daemon=True, name="hierbench-watch-driver").start()
    _BEATS, _PIDS = beats, pids
    # imports jax but starts no backend: XLA sizes its threads later, from the CPUs pinned by then
    from hierbench.harness.loop import set_heartbeat

    set_heartbeat(_stamp)


def _pin(slot: int, jobs: int) -> None:
    """Pin this process to the ``slot``-th of ``jobs`` equal shares of the CPUs (with ``jobs`` > 1)."""
    cpus = _cpus()
    if jobs > 1 and len(cpus) > 1:
        share = max(1, len(cpus) // jobs)
        start = (slot % jobs) * share % len(cpus)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus[start : start + share])


def _stamp() -> None:
    """The worker's heartbeat hook: the time of this progress, in the running cell's slot."""
    if _SLOT is not None:
        _BEATS[_SLOT] = time.time()


def _watched(runner: Runner, kwargs: dict[str, Any], options: dict[str, Any], slot: int, pin: int) -> Any:
    """Run one cell in a worker, its progress stamped in ``slot`` (pinned by the slot if ``pin`` > 0:
    the number of jobs of an isolated pool)."""
    global _SLOT
    _SLOT = slot
    _stamp()  # before the pid: the driver times a slot with a pid from its latest stamp
    _PIDS[slot] = os.getpid()
    if pin:
        _pin(slot, pin)
    try:
        return runner(kwargs, options)
    finally:
        _SLOT = None


def _terminate(pool: ProcessPoolExecutor) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _kill_worker(pool: ProcessPoolExecutor, pid: int) -> None:
    """Kill the worker ``pid`` (0: not known yet, so every worker of the pool)."""
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.kill()


def _pool_pass(
    queue: deque[Cell],
    jobs: int,
    runner: Runner,
    options: dict[str, Any],
    finish: Finish,
    isolate: bool = False,
    stall_s: float | None = None,
) -> tuple[list[Cell], int]:
    """Run cells from ``queue`` on a fresh pool of ``jobs`` spawned workers until the queue is empty
    or the pool breaks.  Returns (the cells in flight when it broke, cells finished).

    ``isolate``: a fresh worker per cell.  ``stall_s``: a cell whose worker stamps no progress for this
    long is killed and recorded (module docstring); the pool then breaks, and the other cells in flight
    go back to the queue, not to the suspects (the cause is known)."""
    suspects: list[Cell] = []
    finished = 0
    killed = False
    poll_s = None if stall_s is None else min(1.0, stall_s / 4)
    with _worker_env(_threads_per_worker(jobs)):
        ctx = multiprocessing.get_context("spawn")
        beats, pids = ctx.Array("d", jobs, lock=False), ctx.Array("q", jobs, lock=False)
        pool = ProcessPoolExecutor(
            jobs,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(os.getpid(), ctx.Value("i", 0), jobs, isolate, beats, pids),
            max_tasks_per_child=1 if isolate else None,
        )
        inflight: dict[Future, tuple[Cell, int]] = {}
        free = list(range(jobs - 1, -1, -1))  # heartbeat slots; one per cell in flight
        try:
            while queue or inflight:
                while queue and len(inflight) < jobs and not suspects and not killed:
                    cell, slot = queue.popleft(), free.pop()
                    beats[slot], pids[slot] = time.time(), 0  # start-up: limit max(stall_s, STARTUP_S)
                    try:
                        fut = pool.submit(
                            _watched, runner, cell.kwargs, options, slot, jobs if isolate else 0
                        )
                    except BrokenProcessPool:
                        queue.appendleft(cell)
                        free.append(slot)
                        break
                    inflight[fut] = (cell, slot)
                if not inflight:
                    break
                done, _ = wait(inflight, timeout=poll_s, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done, _ = wait(inflight)  # a broken pool fails every future it holds
                for fut in done:
                    cell, slot = inflight.pop(fut)
                    free.append(slot)
                    err = fut.exception()
                    if isinstance(err, BrokenProcessPool):
                        # after a kill the cause is known: the others only lost their pool; run them again
                        (queue.appendleft if killed else suspects.append)(cell)
                        continue
                    finish(
                        cell,
                        fut.result() if err is None else _exception_record(cell.kwargs, err),
                    )
                    finished += 1
                if stall_s is not None:
                    now = time.time()
                    for fut, (cell, slot) in list(inflight.items()):
                        # until its task starts (pid stamped), a worker is still starting up: on a
                        # loaded machine spawning and importing JAX take seconds, not a deadlock
                        limit = stall_s if pids[slot] else max(stall_s, STARTUP_S)
                        if fut.done() or now - beats[slot] <= limit:
                            continue
                        _kill_worker(pool, int(pids[slot]))
                        del inflight[fut]
                        free.append(slot)
                        finish(cell, failed_record(cell.kwargs, "error", STALLED.format(stall_s=stall_s)))
                        finished += 1
                        killed = True
                if suspects or (killed and not inflight):
                    break
        except BaseException:  # KeyboardInterrupt: stop the workers; their cells stay unrecorded
            _terminate(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
    return suspects, finished


def run_in_process(todo: list[Cell], runner: Runner, options: dict[str, Any], finish: Finish) -> None:
    """Run cells one by one in this process (``jobs=0``: no isolation from crashes; for debugging)."""
    for cell in todo:
        try:
            record = runner(cell.kwargs, options)
        except Exception as err:  # a custom runner that raises
            record = _exception_record(cell.kwargs, err, traceback.format_exc())
        finish(cell, record)


def run_local(
    todo: list[Cell],
    jobs: int,
    runner: Runner,
    options: dict[str, Any],
    finish: Finish,
    isolate: bool = False,
    stall_s: float | None = None,
) -> None:
    """Run cells in ``jobs`` spawned worker processes; a crashed worker's cell is found and recorded,
    a stalled one killed and recorded (:func:`_pool_pass`)."""
    queue = deque(todo)
    while queue:
        suspects, finished = _pool_pass(queue, jobs, runner, options, finish, isolate, stall_s)
        if not suspects and not finished and queue:
            raise RuntimeError("the worker processes died before running any cell")
        if len(suspects) == 1:  # the only cell in flight killed its worker
            finish(suspects[0], failed_record(suspects[0].kwargs, "error", WORKER_CRASHED))
        elif suspects:  # several were in flight: rerun them one at a time to find the culprit(s)
            run_local(suspects, 1, runner, options, finish, isolate, stall_s)


def run_dask(
    todo: list[Cell], scheduler: Any, runner: Runner, options: dict[str, Any], finish: Finish
) -> None:
    """Send cells to a Dask cluster; the workers return records and only this process writes them."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ParamError("--executor dask needs dask and distributed: pip install dask distributed") from None
    if not scheduler:
        raise ParamError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    try:
        client = Client(scheduler)
    except (OSError, TimeoutError, ValueError) as err:
        raise ParamError(f"cannot connect to the Dask scheduler {scheduler!r}: {err}") from None
    with client:
        futures = {
            client.submit(
                runner,
                cell.kwargs,
                options,
                key=f"hierbench-{cell.cell_id}-{uuid.uuid4().hex[:8]}",
                pure=False,
            ): cell
            for cell in todo
        }
        try:
            for fut in as_completed(futures):
                cell = futures[fut]
                try:
                    record = fut.result()
                except Exception as err:  # e.g. KilledWorker: the cell kept killing its workers
                    record = _exception_record(cell.kwargs, err)
                finish(cell, record)
                fut.release()
        except BaseException:
            client.cancel(list(futures))
            raise
