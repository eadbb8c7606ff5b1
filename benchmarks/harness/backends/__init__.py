"""Backends: where a VI run's steps execute.  One file a backend, one line in :data:`BACKENDS`.

A backend module has ``make(**options) -> Backend``; the backend's ``runner(model, method, seed,
chunk)`` returns a :class:`Runner`, which the one timed loop (:func:`hierbench.harness.loop.fit`)
drives.  A new backend is one file of this shape::

    NAME = "mine"

    class MyRunner:
        def __init__(self, method, seed, chunk, ...): ...    # state from method.init or method.vi
        def compile(self) -> float: ...           # seconds to get the first chunk ready, off the clock
        def run_chunk(self, c: int) -> None: ...   # launch chunk c (``chunk`` steps)
        def sync(self) -> None: ...                # wait for queued device work (the clock stops here)
        def losses(self) -> np.ndarray: ...        # the last chunk's −ELBO estimates, one a step
        def params(self): ...                      # parameters as a JAX-layout pytree (for the scorer)
        def finite(self) -> bool: ...              # every parameter finite
        def describe(self) -> dict: ...            # fields the record states about this backend
        def close(self) -> None: ...               # give back process-wide settings

    class MyBackend(NamedTuple):
        name: str = NAME
        def runner(self, model, method, seed, chunk): return MyRunner(method, seed, chunk)

    def make(**options) -> MyBackend: ...        # options: ``hierbench run --backend mine`` flags

The torch backend is imported only when asked for, so a JAX run never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from hierbench.datasets.base import ParamError

BACKENDS: dict[str, str] = {
    "jax": "hierbench.harness.backends.jax_backend",
    "torch": "hierbench.harness.backends.torch_backend",
}


class Runner(Protocol):
    """One run's state on a backend (see the module docstring)."""

    def compile(self) -> float: ...

    def run_chunk(self, c: int) -> None: ...

    def sync(self) -> None: ...

    def losses(self) -> np.ndarray: ...

    def params(self) -> Any: ...

    def finite(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """A backend: its ``name`` and a runner per run."""

    name: str

    def runner(self, model: Any, method: Any, seed: int, chunk: int) -> Runner: ...


def make_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend ``name`` with ``options``.

    Raises
    ------
    ParamError
        An unknown backend name or option.
    """
    if name not in BACKENDS:
        raise ParamError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    make = importlib.import_module(BACKENDS[name]).make
    try:
        return make(**(options or {}))
    except TypeError as err:
        raise ParamError(f"backend {name}: {err}") from None
