"""The harness: run one method on one dataset, timed fairly, scored off the clock, as a record.

- :mod:`~hierbench.harness.one`: :func:`run_one`, names and values in, a record out (never raises for
  a failed run);
- :mod:`~hierbench.harness.loop`: :func:`fit`, the one timed loop every VI run goes through, and its
  heartbeat (:func:`~hierbench.harness.loop.set_heartbeat`) for a watching sweep;
- :mod:`~hierbench.harness.budget`: the one budget rule (a probe, then the steps that fit);
- :mod:`~hierbench.harness.memory`: a record's process memory, and the guard that refuses a VI run
  too big for the machine;
- :mod:`~hierbench.harness.backends`: where steps run (JAX, torch), one file each.
"""

from hierbench.harness.loop import Plan, chunking, fit
from hierbench.harness.one import DEFAULT_STEPS, run_one

__all__ = ["DEFAULT_STEPS", "Plan", "chunking", "fit", "run_one"]
