"""The one time to target (hierbench.reports.targets), with the cases each of its three former copies
(paper.py, peers.py, torch_bench.py) passed, and the reports that use it."""

from __future__ import annotations

import pytest

from hierbench.reports.targets import time_to_target, trace_columns


def test_interpolates_on_a_hand_made_trace():  # paper.py's cases
    times, elbos = [0.0, 1.0, 2.0, 4.0], [-100.0, -50.0, -10.0, -5.0]
    assert time_to_target(times, elbos, -30.0) == pytest.approx(1.5)  # halfway from -50 to -10
    assert time_to_target(times, elbos, -7.5) == pytest.approx(3.0)
    assert time_to_target(times, elbos, -10.0) == pytest.approx(2.0)  # exactly a trace point
    assert time_to_target(times, elbos, -100.0) == 0.0  # the first point already reaches it
    assert time_to_target(times, elbos, -1.0) is None  # never reached
    # not monotone: the first crossing counts; missing ELBOs are skipped
    assert time_to_target([0, 1, 2, 3], [-10, -4, -8, -2], -5) == pytest.approx(5 / 6)
    assert time_to_target([0, 1, 2], [-10, None, -2], -6) == pytest.approx(1.0)
    assert time_to_target([0, 1, 2], [-10, float("nan"), -2], -6) == pytest.approx(1.0)
    assert time_to_target([0, None, 2], [-10, -7, -2], -6) == pytest.approx(1.0)  # a point without a time


def test_within_standard_errors_without_interpolation():  # peers.py's rule
    def trace(elbos):
        return {
            "trace": [{"step": i, "wall_s": float(i), "elbo": e, "elbo_se": 0.1} for i, e in enumerate(elbos)]
        }

    ours, theirs = trace([-100.0, -20.0, -10.0, -9.0]), trace([-100.0, -50.0, -15.0, -10.0])
    for rec, expect in ((ours, 2.0), (theirs, 3.0)):
        times, elbos, ses = trace_columns(rec)
        assert time_to_target(times, elbos, -10.0, ses=ses, n_se=3.0, interpolate=False) == expect
    # within 3 se: -10.25 + 3 * 0.1 >= -10 reaches the target at that point
    times, elbos, ses = [0.0, 1.0, 2.0], [-50.0, -10.25, -9.0], [0.1, 0.1, 0.1]
    assert time_to_target(times, elbos, -10.0, ses=ses, n_se=3.0, interpolate=False) == 1.0
    assert time_to_target(times, elbos, -10.0, interpolate=False) == 2.0  # without the slack
    # with interpolation the slack moves the whole curve up by n_se · se
    assert time_to_target([0.0, 1.0], [-20.0, -10.0], -12.0, ses=[1.0, 1.0], n_se=2.0) == pytest.approx(0.6)
    # a missing se counts as 0
    assert time_to_target([0.0, 1.0], [-20.0, -10.0], -10.0, ses=[None, None], n_se=3.0) == 1.0


def test_interpolates_from_the_previous_checkpoint():  # torch_bench.py's cases
    trace = [
        {"step": 10, "wall_s": 1.0, "elbo": -200.0},
        {"step": 20, "wall_s": 2.0, "elbo": -100.0},
        {"step": 30, "wall_s": 4.0, "elbo": -50.0},
    ]
    times, elbos, _ = trace_columns({"trace": trace})
    assert time_to_target(times, elbos, -75.0) == pytest.approx(3.0)
    assert time_to_target(times, elbos, -300.0) == 1.0
    assert time_to_target(times, elbos, -10.0) is None
    # torch_bench's copy returned a point's own time when the point before it had no ELBO; the one rule
    # interpolates from the last point that has one (no committed trace has such a point)
    times, elbos = [1.0, 2.0, 3.0], [-200.0, None, -100.0]
    assert time_to_target(times, elbos, -150.0) == pytest.approx(2.0)
    assert time_to_target([], [], -1.0) is None
    assert trace_columns({}) == ([], [], [])


def test_the_reports_use_it():
    """paper, peers and torch-bench's report define no time to target of their own."""
    from hierbench import peers, reports
    from hierbench.reports import jax_vs_torch
    from hierbench.reports.paper import scaling

    assert scaling.time_to_target is time_to_target
    assert jax_vs_torch.time_to_target is time_to_target and peers.time_to_target is time_to_target
    assert reports.targets.time_to_target is time_to_target
