"""The one budget rule: a run with a budget of optimization seconds gets the steps that fit it.

A probe, off the record's clock, measures the method's steps/s on this model and backend: it compiles
a chunk program of ``chunk`` steps (the run's own chunk length where the plan fixes one, else
:data:`PROBE_STEPS`), discards the first (cold) call, and times warm calls until :data:`PROBE_MIN_S`
is measured.  The run then gets ``min(steps, budget_s × rate)`` steps, so its learning-rate schedule
spans the budget, and it stops after the chunk that takes its wall time past
:data:`BUDGET_OVERRUN` × ``budget_s`` (``stopped="budget"``).  The record keeps ``budget_s``,
``planned_steps`` and the probe; once the run has ended, ``probe["rate_ratio"]`` says how far the probe
was off (the run's own steps/s over the probe's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from hierbench.harness.loop import Plan, beat, chunking

PROBE_STEPS = 5  # steps per compiled chunk of the probe, when the plan does not fix one
PROBE_SCHEDULE = 10_000  # the probe's method is built for this many steps (its speed does not depend on it)
PROBE_MIN_S = 1.0  # the probe times warm chunks until this much time is measured
BUDGET_OVERRUN = 1.25  # a run with a seconds budget stops once it has used this multiple of it


def plan_run(
    backend: Any,
    model: Any,
    build: Callable[[int], Any],
    seed: int,
    *,
    steps: int | None,
    checkpoints: int,
    budget_s: float | None = None,
    chunk: int | None = None,
) -> tuple[Plan, dict[str, float] | None]:
    """The plan of a run, and its probe (None without a budget).

    ``build(steps) -> Method`` builds the method for a schedule of ``steps``.  Without ``budget_s``:
    ``steps`` in ``checkpoints`` chunks (or in chunks of ``chunk``).  With it: the probe, then at most
    ``steps`` (None: no cap) of the steps that fit the budget (module docstring).
    """
    if budget_s is None:
        if chunk is None:
            return chunking(steps, checkpoints), None
        return fixed_chunks(steps, chunk, checkpoints), None
    probe = probe_speed(backend, model, build(PROBE_SCHEDULE), seed, chunk or PROBE_STEPS)
    return budget_plan(budget_s, probe["steps_per_s"], steps, checkpoints, chunk), probe


def probe_speed(
    backend: Any, model: Any, method: Any, seed: int, chunk: int = PROBE_STEPS
) -> dict[str, float]:
    """Steps/s of ``method`` on ``model`` and ``backend``, off the clock (module docstring)."""
    runner = backend.runner(model, method, seed, chunk)
    try:
        compile_s = runner.compile()
        beat()
        runner.run_chunk(0)  # cold: first touches of the outputs' memory, lazy initializations
        runner.sync()
        beat()
        steps, wall_s, c = 0, 0.0, 1
        while wall_s < PROBE_MIN_S or steps < 2 * chunk:
            t0 = time.perf_counter()
            runner.run_chunk(c)
            runner.sync()
            wall_s += time.perf_counter() - t0
            steps, c = steps + chunk, c + 1
            beat()
    finally:
        runner.close()
    return {
        "steps_per_s": steps / wall_s,
        "steps": steps,
        "wall_s": wall_s,
        "compile_s": compile_s,
        "chunk": chunk,
    }


def budget_plan(
    budget_s: float, steps_per_s: float, max_steps: int | None, checkpoints: int, chunk: int | None = None
) -> Plan:
    """The plan of a run with ``budget_s`` seconds at ``steps_per_s``: at most ``max_steps`` steps,
    ``checkpoints`` trace points; with ``chunk`` fixed, whole chunks of it (at least one)."""
    steps = max(1, int(budget_s * steps_per_s))
    if max_steps is not None:
        steps = min(steps, max_steps)
    if chunk is None:
        plan = chunking(steps, min(checkpoints, steps))
    else:
        plan = fixed_chunks(max(chunk, chunk * (steps // chunk)), chunk, checkpoints)
    return plan._replace(max_wall_s=BUDGET_OVERRUN * budget_s)


def fixed_chunks(steps: int, chunk: int, checkpoints: int) -> Plan:
    """``steps`` (rounded up to whole chunks) in chunks of ``chunk`` steps, a trace point every
    ⌈chunks / checkpoints⌉ chunks and after the last."""
    num_chunks = max(1, math.ceil(steps / chunk))
    return Plan(chunk, num_chunks, score_every=max(1, math.ceil(num_chunks / checkpoints)))
