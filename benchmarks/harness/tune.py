"""The tuning protocol: a grid of one hyperparameter, every point trained alike, the best chosen off
the clock on draws held apart.

``run_one(..., tune="lr")`` (``hierbench run --tune lr``, ``tune = "lr"`` in an experiment file) trains
the method once per value of :data:`GRIDS` ``["lr"]`` — the step sizes 0.1/4^k, k = 0 … 4, of Agrawal,
Sheldon & Domke (2020) — each with the same seed, the same plan (steps or seconds budget) and the same
scoring, then keeps the run whose final q has the highest ELBO on draws held apart from every trace
point's (:data:`~hierbench.harness.loop.HELD_APART_TAG`), so the choice is not the luck of the reported
estimate.  The record is the chosen run's (its trace, timings and scores: time to a target counts that
run only) with a ``tuning`` block: the grid, every point's status, reported and held-apart ELBO, wall
and compile time, the choice, and the grid's total cost, reported beside the chosen run, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hierbench.datasets.base import ParamError
from hierbench.records import Record

# The step-size grid of Agrawal, Sheldon & Domke (2020): 0.1, 0.025, 0.00625, 0.0015625, 0.000390625.
GRIDS: dict[str, tuple[float, ...]] = {"lr": tuple(0.1 / 4**k for k in range(5))}


def check_tune(tune: str | None, method_params: dict[str, Any] | None, grid: Sequence[float] | None) -> tuple:
    """The grid to tune over (empty: no tuning); :class:`ParamError` for an unknown setting, a grid
    without tuning, or a method parameter the grid would set."""
    if tune is None:
        if grid is not None:
            raise ParamError("tune_grid needs tune (e.g. tune='lr')")
        return ()
    if tune not in GRIDS:
        raise ParamError(f"tune must be one of {', '.join(GRIDS)}; got {tune!r}")
    if tune in (method_params or {}):
        raise ParamError(f"tune={tune} sets {tune} itself: drop it from the method parameters")
    values = tuple(GRIDS[tune] if grid is None else grid)
    if len(values) < 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ParamError(f"tune_grid must be two or more positive numbers, got {grid!r}")
    return values


def tuned(
    record: Record, param: str, grid: Sequence[float], run_point: Callable[[Record, float], Any]
) -> tuple[Record, Any]:
    """Run every point of ``grid`` and return (the chosen point's record with a ``tuning`` block, its
    result).  ``run_point(record, value)`` fills a copy of ``record`` (the run's skeleton) with the run
    at ``param = value`` (``held_apart=True``) and returns what the run returns (its final draws)."""
    points, results = [], []
    for value in grid:
        rec = _copy(record)
        results.append(run_point(rec, value))
        points.append(rec)
    ok = [
        i
        for i, rec in enumerate(points)
        if rec["status"] == "ok" and (rec.get("held_apart") or {}).get("elbo") is not None
    ]
    # the best held-apart ELBO; with none ok, the smallest step size (the run most likely to be stable)
    chosen = max(ok, key=lambda i: points[i]["held_apart"]["elbo"]) if ok else len(grid) - 1
    summary = [
        {
            param: value,
            "status": rec["status"],
            "elbo": rec.get("elbo"),
            "held_apart_elbo": (rec.get("held_apart") or {}).get("elbo"),
            "held_apart_elbo_se": (rec.get("held_apart") or {}).get("elbo_se"),
            "steps": rec.get("steps"),
            "wall_s": rec.get("wall_s"),
            "compile_s": rec.get("compile_s"),
            **({"error": rec["error"]} if rec.get("error") else {}),
        }
        for value, rec in zip(grid, points, strict=True)
    ]
    out = points[chosen]
    out["tuning"] = {
        "param": param,
        "grid": list(grid),
        "chosen": grid[chosen],
        "select_by": "the highest ELBO of the final q on draws held apart from the trace points'",
        "points": summary,
        "total_steps": sum(p["steps"] or 0 for p in summary),
        "total_wall_s": sum(p["wall_s"] or 0.0 for p in summary),
        "total_compile_s": sum(p["compile_s"] or 0.0 for p in summary),
    }
    return out, results[chosen]


def _copy(record: Record) -> Record:
    """A fresh copy of a run's skeleton (its trace list too), for one grid point."""
    import copy

    return copy.deepcopy(record)
