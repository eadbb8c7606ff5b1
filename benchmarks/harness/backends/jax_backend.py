"""The JAX backend: a method's own ``step`` under ``lax.scan``, a chunk of steps compiled ahead of time.

Any :class:`~hierbench.methods.base.Method` runs here (ours from ``make_vi``, numpyro's SVI peers):
the runner needs only ``init``, ``step`` and the batch source's arrays.  Keys: the run key
``key(seed)`` splits into (init, training, scoring); chunk c runs on ``fold_in(training key, c)``,
split into one key a step, so the same seed gives the same record.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import hierbench._jax  # noqa: F401  (float64 on)
from hierbench.datasets.base import HierModel
from hierbench.methods.base import Method

NAME = "jax"


class JaxRunner:
    """One run's state on JAX: compile, run chunks, wait, read back."""

    def __init__(self, method: Method, seed: int, chunk: int):
        key_init, self.key_run, _ = jax.random.split(jax.random.key(seed), 3)
        self.state = method.init(key_init)
        self.data = jax.tree.map(jnp.asarray, method.batches.arrays(method.config["dtype"]))
        self.info = None

        def run_chunk(key, state, data):
            return jax.lax.scan(lambda s, k: method.step(k, s, data), state, jax.random.split(key, chunk))

        self._run_chunk = run_chunk
        self._compiled = None

    def compile(self) -> float:
        t0 = time.perf_counter()
        self._compiled = jax.jit(self._run_chunk).lower(self.key_run, self.state, self.data).compile()
        return time.perf_counter() - t0

    def run_chunk(self, c: int) -> None:
        self.state, self.info = self._compiled(jax.random.fold_in(self.key_run, c), self.state, self.data)

    def sync(self) -> None:
        jax.block_until_ready(self.state)

    def losses(self) -> np.ndarray:
        return np.asarray(self.info.neg_elbo)

    def params(self) -> Any:
        return self.state.params

    def finite(self) -> bool:
        return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(self.state.params))

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class JaxBackend(NamedTuple):
    """JAX, on its default device (``JAX_PLATFORMS`` chooses it)."""

    name: str = NAME

    def runner(self, model: HierModel, method: Method, seed: int, chunk: int) -> JaxRunner:
        return JaxRunner(method, seed, chunk)


def make(**options: Any) -> JaxBackend:
    """The JAX backend; it takes no options."""
    if options:
        from hierbench.datasets.base import ParamError

        raise ParamError(f"backend jax takes no options; got {', '.join(sorted(options))}")
    return JaxBackend()
