"""Memory: what a run's process used (every record), and the guard that refuses a VI run too big to fit.

Every record gets :func:`memory_info`: the process's peak resident set size and, with psutil, its
current RSS and the machine's total and available memory.  A sweep run with one fresh process per
cell (``[experiment] isolate = true``) makes the peak that cell's own; otherwise it is the worker's
peak so far.

Before a VI run trains (and before its budget probe), :func:`check_vi` estimates the memory it needs
from the shapes of its parameters, without allocating them (``jax.eval_shape`` of ``init``), plus its
data, and refuses (:class:`~hierbench.methods.base.Infeasible`, recorded ``infeasible`` with the
estimate) a run whose estimate exceeds :data:`HEADROOM` of the machine's memory, rather than let the
out-of-memory killer end it half-way.
"""

from __future__ import annotations

import math
import os
import resource
from typing import Any

import jax
import numpy as np

from hierbench.datasets.base import HierModel, ParamError
from hierbench.methods.base import Infeasible, Method

HEADROOM = 0.8  # a run whose estimated memory exceeds this share of the machine's is refused
# Adam keeps two moments; a step holds the gradient, the update and the new values besides.  Measured:
# branch on 20,000 users (195 MB of parameters) peaked 1.5 GiB above the runtime's base, 7.7× its
# parameters, hence 8×.
PARAMS_FACTOR = 8


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss``; KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def memory_info() -> dict[str, Any]:
    """Peak RSS and, with psutil, the current RSS and the machine's total and available memory."""
    out: dict[str, Any] = {"peak_rss_bytes": peak_rss_bytes()}
    try:
        import psutil

        out["rss_bytes"] = psutil.Process().memory_info().rss
        vm = psutil.virtual_memory()
        out["machine_memory_bytes"], out["available_memory_bytes"] = vm.total, vm.available
    except ImportError:  # psutil is optional
        pass
    return out


def machine_memory() -> int:
    """Physical memory of the machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tree_bytes(tree: Any) -> int:
    """Bytes of a pytree's arrays (or of ``jax.ShapeDtypeStruct`` leaves)."""
    return int(sum(np.dtype(a.dtype).itemsize * math.prod(a.shape) for a in jax.tree.leaves(tree)))


def data_bytes(model: HierModel) -> int:
    """Bytes of the model's data as it is held: the rating store, or the padded arrays."""
    if model.store is not None:
        return int(model.store.nbytes)
    arrays = list(model.data.values()) + list((model.test_data or {}).values())
    return int(sum(np.asarray(a).nbytes for a in arrays))


def estimate_vi(model: HierModel, method: Method) -> dict[str, int]:
    """``params_bytes`` (the variational parameters in the training dtype, from their shapes alone) and
    ``memory_estimate_bytes`` (:data:`PARAMS_FACTOR` × those plus the data) of a VI run."""
    state = jax.eval_shape(method.init, jax.random.key(0))
    params = tree_bytes(state.params)
    return {"params_bytes": params, "memory_estimate_bytes": PARAMS_FACTOR * params + data_bytes(model)}


def check_vi(record: dict[str, Any], model: HierModel, method: Method, name: str) -> None:
    """Put :func:`estimate_vi`'s fields in ``record``; raise :class:`Infeasible` where the estimate
    exceeds :data:`HEADROOM` of the machine's memory."""
    try:
        estimate = estimate_vi(model, method)
    except ParamError:
        # a method without a JAX init (a Pyro peer brings its own torch objective, Method.torch): its
        # parameters are made by its library on the torch backend; nothing to estimate here
        return
    record |= estimate
    need, params = estimate["memory_estimate_bytes"], estimate["params_bytes"]
    if need > HEADROOM * machine_memory():
        raise Infeasible(
            f"{name} needs about {need / 2**30:,.1f} GiB ({params / 2**30:,.2f} GiB of parameters, with "
            f"gradient and Adam state, and the data), more than {HEADROOM:.0%} of this machine's "
            f"{machine_memory() / 2**30:,.0f} GiB",
            memory_bytes=need,
        )
