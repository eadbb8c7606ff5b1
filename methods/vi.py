"""``make_vi``: a variational family trained by reparameterized stochastic VI with Adam, on JAX.

Every Gaussian family goes through here, so every family is trained by the same code: the batch
source (:mod:`hierbench.methods.batches`), the −ELBO estimate (:mod:`hierbench.methods.objective`),
the sticking-the-landing option and the optax optimizer.  What is JAX's own is small: the standard
normals come from ``jax.random.normal`` (one key a pick, split once a noise array), the minibatch
positions from :func:`choice_without_replacement`, the gradient from ``jax.value_and_grad``.  The
torch backend (:mod:`hierbench.harness.backends.torch_backend`) builds its step from the same
:class:`~hierbench.methods.base.VISpec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

import hierbench._jax  # noqa: F401  (float64 on: scoring is float64 whatever the training dtype)
from hierbench.datasets.base import HierModel
from hierbench.methods.base import Data, Draws, Family, Method, Params, StepInfo, TrainConfig, VISpec, VIState
from hierbench.methods.batches import Batches, default_batches
from hierbench.methods.objective import neg_elbo


def choice_without_replacement(key: jax.Array, n: int, k: int) -> jax.Array:
    """``k`` distinct indices of ``range(n)``, every k-subset equally likely (int32, order not random).

    Floyd's algorithm: for j = n−k … n−1 draw t uniform on {0, …, j} and take t, or j when t is
    already taken; O(k²) work whatever n.  ``jax.random.choice(replace=False)`` permutes all of
    ``range(n)`` (sorts n keys) instead: 6.6 ms a call at n = 10⁴ on 2 CPU cores, against 2.3 ms for
    the rest of an amortized step with 32 groups, so minibatch steps slowed down as N grew.
    """
    if not 0 <= k <= n:
        raise ValueError(f"cannot choose {k} of {n} without replacement")
    if k == 0:
        return jnp.zeros((0,), jnp.int32)
    js = jnp.arange(n - k, n, dtype=jnp.int32)
    ts = jax.random.randint(key, (k,), 0, js + 1, dtype=jnp.int32)

    def take(i, picked):
        t = ts[i]
        return picked.at[i].set(jnp.where(jnp.any(picked == t), js[i], t))

    return jax.lax.fori_loop(0, k, take, jnp.full((k,), -1, jnp.int32))


def part_keys(key: jax.Array, parts: int) -> list[jax.Array]:
    """One key per part of a step (a stratum's positions, a pick's normals): the key itself for one
    part, else ``fold_in(key, s)``."""
    return [key] if parts == 1 else [jax.random.fold_in(key, s) for s in range(parts)]


def normals(key: jax.Array, shapes: list[tuple[int, ...]], dtype: Any) -> list[jax.Array]:
    """Standard normals of ``shapes``: from ``key`` itself for one array, else from ``split(key, n)``."""
    keys = [key] if len(shapes) == 1 else list(jax.random.split(key, len(shapes)))
    return [jax.random.normal(k, shape, dtype) for k, shape in zip(keys, shapes, strict=True)]


# A training step's normals are drawn in float32 and cast to the training dtype.  They are only the
# Monte Carlo noise of the gradient estimate (any standard-normal draws give an unbiased one), and
# threefry plus the inverse-erf transform in float64 was most of a full-data step on CPU: mean-field at
# N = 1000, n = 20, 8 draws, 3.1 against 1.7 ms a step (results/perf/README.md).  Scoring draws float64.
TRAIN_NOISE_DTYPE = jnp.float32


def train_normals(key: jax.Array, shapes: list[tuple[int, ...]], dtype: Any) -> list[jax.Array]:
    """:func:`normals` for a training step: drawn in :data:`TRAIN_NOISE_DTYPE`, returned in ``dtype``."""
    return [e.astype(dtype) for e in normals(key, shapes, TRAIN_NOISE_DTYPE)]


def params_dtype(params: Params) -> Any:
    """The floating dtype of a parameter pytree (its first leaf's)."""
    return jax.tree.leaves(params)[0].dtype


def make_vi(
    model: HierModel,
    family: Family,
    train: TrainConfig,
    batches: Batches | None = None,
    *,
    batch_groups: int | None = None,
    max_strata: int | None = None,
    **config: Any,
) -> Method:
    """Build a :class:`Method` that fits ``family`` by reparameterized stochastic VI with Adam.

    Parameters
    ----------
    model : HierModel
        The model (its densities; with ``batches`` None, its data too).
    family : Family
        The variational family.
    train : TrainConfig
        Steps, learning rate, schedule, draws a step, STL, dtype.
    batches : Batches, optional
        What a step sees; default :func:`~hierbench.methods.batches.default_batches` of
        ``batch_groups`` (full data, B uniform groups scaled by N/B, or size strata on ragged groups).
    batch_groups : int, optional
        Groups a step (None: all).
    max_strata : int, optional
        Size strata of a stratified batch source (None: the source's default); see
        :func:`~hierbench.methods.batches.default_batches`.
    **config
        Family settings, recorded in ``Method.config``.
    """
    if batches is None:
        batches = default_batches(model, batch_groups, family.factorizes_over_groups, max_strata)
    opt = train.optimizer()
    dtype = jnp.dtype(train.dtype)
    strata = batches.strata

    def init(key: jax.Array) -> VIState:
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype), family.init_params(key))
        return VIState(params, opt.init(params), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: VIState, data: Data) -> tuple[VIState, StepInfo]:
        key_batch, key_draw = jax.random.split(key)
        positions = [
            choice_without_replacement(k, s.size, s.alloc)
            for k, s in zip(part_keys(key_batch, len(strata)), strata, strict=True)
        ]
        picks = batches.picks(data, positions)
        dt = params_dtype(state.params)
        noise = [
            train_normals(k, family.noise_shapes(train.num_samples, b), dt)
            for k, b in zip(part_keys(key_draw, len(picks)), batches.groups_per_pick, strict=True)
        ]
        loss, grads = jax.value_and_grad(lambda p: neg_elbo(model, family, train.stl, p, picks, noise))(
            state.params
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return VIState(params, opt_state, state.step + 1), StepInfo(loss)

    def sample(key: jax.Array, params: Params, data: Data, num_draws: int) -> Draws:
        eps = normals(key, family.noise_shapes(num_draws, model.num_groups), params_dtype(params))
        theta, z = family.draw(params, eps, None, data)
        lq_global, lq_local = family.log_q(params, theta, z, None, data)
        return Draws(theta, z, lq_global + lq_local)

    split = family.factorizes_over_groups and family.draw_global is not None and family.draw_local is not None
    sample_global = sample_local = None
    if split:

        def sample_global(key: jax.Array, params: Params, num_draws: int) -> jax.Array:
            (shape,) = family.noise_shapes(num_draws, 1)[:1]
            return family.draw_global(params, jax.random.normal(key, shape, params_dtype(params)))

        def sample_local(key: jax.Array, params: Params, theta: jax.Array, idx: jax.Array, data_b: Data):
            shape = family.noise_shapes(theta.shape[0], idx.shape[0])[1]
            z = family.draw_local(
                params, jax.random.normal(key, shape, params_dtype(params)), theta, idx, data_b
            )
            lq_global, lq_local = family.log_q(params, theta, z, idx, data_b)
            return z, lq_global, lq_local

    resolved = dataclasses.asdict(train) | batches.describe() | {"gaussian_q": family.gaussian}
    resolved |= config
    spec = VISpec(model, family, train, batches)
    return Method(init, step, sample, resolved, sample_global, sample_local, batches, spec)
