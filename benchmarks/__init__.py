"""hierbench: a benchmark suite for approximate inference on hierarchical Bayesian models.

Data flows one way: dataset (:mod:`hierbench.datasets`) → model → method (:mod:`hierbench.methods`)
→ harness (:mod:`hierbench.harness`) → record (:mod:`hierbench.records`) → report
(:mod:`hierbench.report`).
"""

import os

__version__ = "0.1.0"

# XLA:CPU (jaxlib 0.10.2) deadlocks on some programs under its concurrency-optimized scheduler: every
# thread parks idle and the result never arrives.  Measured here on 2 cores: the stratified minibatch
# step vmapped over 24,000-48,000 keys hung every time (it was the hang that ran CI past its limit),
# and ran in 3 s with this scheduler off, or pinned to one core.  XLA reads XLA_FLAGS when JAX's CPU
# backend starts, so this must run before the first computation; importing hierbench does that, and
# subprocesses inherit it.  A user's own setting of the flag wins.
_NO_CONCURRENT_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_NO_CONCURRENT_SCHEDULER}".strip()
