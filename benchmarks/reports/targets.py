"""Time to a target ELBO: when a run's trace first reaches a given ELBO.

The one definition every report uses (the paper's tables, the numpyro comparison, JAX vs torch).  A
trace is a run's list of trace points (``record["trace"]``), each taken off the clock after a timed
chunk, with the optimization time so far (``wall_s``, compile excluded), the step, and a float64 ELBO
estimate ``elbo`` with its standard error ``elbo_se``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def time_to_target(
    times: Sequence[float | None],
    elbos: Sequence[float | None],
    target: float,
    *,
    ses: Sequence[float | None] | None = None,
    n_se: float = 0.0,
    interpolate: bool = True,
) -> float | None:
    """When a trace first reaches ``target``, interpolating linearly between trace points.

    A point reaches the target when ``elbo + n_se · se >= target``: with ``n_se > 0`` an estimate
    within ``n_se`` standard errors of the target counts, so that Monte Carlo noise in the last
    estimate of the run that set the target does not keep that run itself from reaching it.

    Parameters
    ----------
    times : sequence of float or None
        The trace points' times (wall seconds, or steps), in trace order.
    elbos : sequence of float or None
        The ELBO at each point; a point whose ELBO or time is missing (None or non-finite) is skipped.
    target : float
        The ELBO to reach.
    ses : sequence of float or None, optional
        The standard error of each point's ELBO (None: 0).  Needed only with ``n_se``.
    n_se : float
        Standard errors of slack (0: the ELBO itself must reach the target).
    interpolate : bool
        True: the time where the segment from the last point below the target to the first point at or
        above it crosses the target.  False: that first point's time (resolution one trace point).

    Returns
    -------
    float or None
        The time of the first point that reaches ``target`` if it is the first point (or without
        ``interpolate``); otherwise the interpolated crossing.  None if no point reaches it.  An ELBO
        estimate is noisy and need not rise monotonically; the first crossing counts.
    """
    if ses is None:
        ses = [None] * len(elbos)
    points = [
        (float(t), float(e) + n_se * float(s or 0.0))
        for t, e, s in zip(times, elbos, ses, strict=True)
        if e is not None and t is not None and math.isfinite(e) and math.isfinite(t)
    ]
    for k, (t, v) in enumerate(points):
        if v >= target:
            if k == 0 or not interpolate:
                return t
            t0, v0 = points[k - 1]  # v0 < target <= v
            return t0 + (target - v0) / (v - v0) * (t - t0)
    return None


def trace_columns(
    record: dict[str, Any], key: str = "wall_s"
) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """A record's trace as (times, ELBOs, standard errors), times read from ``key`` (``wall_s``, ``step``)."""
    points = record.get("trace") or []
    return [p.get(key) for p in points], [p.get("elbo") for p in points], [p.get("elbo_se") for p in points]
