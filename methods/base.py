"""The method contract and the one VI loop every Gaussian family shares.

A method is a factory ``make(model, **params) -> Method`` returning pure functions (the shape of
blackjax's ``vi`` algorithms and optax's ``GradientTransformation``); the caller owns the loop::

    method = METHODS["branch"](model, steps=2000, batch_groups=16)
    state = method.init(key)
    state, info = method.step(key, state, data)       # one Adam step on a reparameterized -ELBO
    draws = method.sample(key, state.params, data, 1000)  # θ, z and log q(θ, z) for scoring

``data`` is the model's per-group arrays (already cast to the training dtype) passed explicitly,
so jitted loops take it as an argument instead of baking it into the program as a constant.

A variational *family* (see :class:`Family`) only says how to draw (θ, z_B) reparameterized and how
to evaluate log q; :func:`make_vi` turns it into a Method with minibatching, the sticking-the-landing
gradient and the optax optimizer, so every family is trained by exactly the same code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hierbench._jax  # noqa: F401  (float64 on: scoring is float64 whatever the training dtype)
from hierbench.datasets.base import HierModel, ParamError, log_joint_rows, row_layout

Params = Any  # a pytree of arrays
Data = dict[str, jax.Array]


class Infeasible(RuntimeError):
    """The method cannot run on this model within its stated limits (e.g. memory)."""

    def __init__(self, reason: str, memory_bytes: float | None = None):
        super().__init__(reason)
        self.memory_bytes = memory_bytes


class VIState(NamedTuple):
    """State of a VI run: variational parameters, optimizer state, step count."""

    params: Params
    opt_state: optax.OptState
    step: jax.Array


class StepInfo(NamedTuple):
    """What one step reports: the minibatch Monte Carlo estimate of -ELBO it differentiated."""

    neg_elbo: jax.Array


class Draws(NamedTuple):
    """Draws from q on the full data: θ ``(S, G)``, z ``(S, N, L)``, log q(θ, z) ``(S,)``."""

    theta: jax.Array
    z: jax.Array
    log_q: jax.Array


class Method(NamedTuple):
    """Pure functions of a method plus its resolved configuration (recorded verbatim).

    A method whose q factorizes over groups as q(θ) ∏_i q(z_i | θ) may also give the two halves of
    ``sample`` separately, so that scoring can draw z for a chunk of groups at a time (N = 10⁵ groups
    of 100 rows do not fit at once): ``sample_global(key, params, num_draws) -> θ (S, G)`` and
    ``sample_local(key, params, θ, idx, data_b) -> (z (S, B, L), log q(θ) (S,), Σ_{i∈B} log q(z_i|θ)
    (S,))`` for the groups ``idx`` whose rows are ``data_b``.
    """

    init: Callable[[jax.Array], VIState]
    step: Callable[[jax.Array, VIState, Data], tuple[VIState, StepInfo]]
    sample: Callable[[jax.Array, Params, Data, int], Draws]
    config: dict[str, Any]
    sample_global: Callable[[jax.Array, Params, int], jax.Array] | None = None
    sample_local: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None


MAX_STRATA = 3  # size strata of a minibatch on ragged groups (see make_vi)
ROWS_KEY = "_rows"  # optional entry of a step's data: the model's row layout (see make_vi)


def with_rows(model: HierModel, data: Data, dtype: Any) -> Data:
    """``data`` plus the model's row layout under :data:`ROWS_KEY` (floats in ``dtype``), for methods
    whose ``config["row_layout"]`` is true; they evaluate full-data steps on it."""
    layout = row_layout(model)
    if layout is None:
        return data
    cast = lambda a: jnp.asarray(a, dtype if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else None)  # noqa: E731
    return data | {ROWS_KEY: jax.tree.map(cast, layout)}


class Unavailable(RuntimeError):
    """The method's backend is not installed here (e.g. no CmdStan and no PyStan); the record says
    ``status="unavailable"`` with this message, which names what to install."""


class Posterior(NamedTuple):
    """What an MCMC sampler returns: draws with the chains kept apart (for R̂/ESS), its stats, timing.

    ``theta`` ``(C, S, G)`` and ``z`` ``(C, S, N, L)`` are the model's unconstrained coordinates
    (None when the sampler only reports natural quantities, e.g. Stan); ``natural`` maps the names
    of :func:`hierbench.datasets.base.natural_draws` to ``(C, S, *shape)``.  ``stats`` holds per-draw
    sampler statistics ``(C, S)``: ``diverging`` (bool), ``energy``, ``num_steps``.
    """

    theta: Any
    z: Any
    natural: dict[str, Any]
    stats: dict[str, Any]
    compile_s: float  # tracing/compilation (numpyro) or model build (Stan), never in sample_s
    sample_s: float  # warmup + sampling wall time
    settings: dict[str, Any]  # everything needed to rerun it (sampler, chains, draws, seeds …)


class Sampler(NamedTuple):
    """An MCMC method: ``run(seed) -> Posterior``.  The sampler owns its loop (numpyro's MCMC,
    Stan), so the contract is one call; the harness scores it and gates it as a reference."""

    run: Callable[[int], Posterior]
    config: dict[str, Any]


class Family(NamedTuple):
    """A variational family over (θ, z).

    ``draw(params, key, S, idx, data_b) -> (θ (S, G), z (S, B, L))`` draws reparameterized from q
    for the groups ``idx`` (``None`` = all N; ``data_b`` holds those groups' rows).
    ``log_q(params, θ, z, idx, data_b) -> (log q(θ) (S,), Σ_{i∈B} log q(z_i | θ) (S,))``.  A family
    that does not factor over groups (mean-field/dense/low-rank over the joint vector) returns the
    whole log q as the first term and 0 as the second, and must be used with full data.
    ``gaussian``: q(θ, z) is jointly Gaussian (every built-in family, branch and amortized included:
    their conditionals are linear-Gaussian), so scoring can check its log density numerically
    (:func:`hierbench.scoring.summarize`); set False for other families.
    ``draw_global(params, key, S) -> θ`` and ``draw_local(params, key, θ, idx, data_b) -> z``
    (optional, group-factorized families): the two halves of ``draw``, which lets scoring draw z a
    chunk of groups at a time (:attr:`Method.sample_local`).
    ``draw_log_q(params, key, S, idx, data_b) -> (θ, z, log q(θ), Σ log q(z_i | θ))`` (optional): a
    draw and q's log density at it computed together, for training with the standard (non-STL)
    estimator only.  A location-scale family can give log q from its standard-normal draw ε in closed
    form (dense: −½‖ε‖² − log det L − D/2 log 2π, no triangular solve), with the same value and the
    same gradient in the parameters as ``log_q`` at the draw.  Scoring always uses ``log_q``: it
    evaluates the density at the draw numerically, which is what exposes a factor that broke down.
    """

    init_params: Callable[[jax.Array], Params]
    draw: Callable[..., tuple[jax.Array, jax.Array]]
    log_q: Callable[..., tuple[jax.Array, jax.Array]]
    factorizes_over_groups: bool
    gaussian: bool = True
    draw_global: Callable[..., jax.Array] | None = None
    draw_local: Callable[..., jax.Array] | None = None
    draw_log_q: Callable[..., tuple[jax.Array, jax.Array, jax.Array, jax.Array]] | None = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters shared by every VI method.

    Parameters
    ----------
    steps : int
        Number of Adam steps (also the length of the learning-rate schedule).
    lr : float
        Peak Adam learning rate.
    schedule : {"cosine", "constant"}
        Cosine decay to ``lr * 1e-3`` (lets STL land at the optimum), or constant.
    num_samples : int
        Monte Carlo draws of q per step.
    stl : bool
        Sticking-the-landing (path-derivative) gradient: log q is evaluated at stopped parameters.
    dtype : {"float32", "float64"}
        Training precision (scoring is always float64).  float64 by default: float32 training
        stalls the dense family far from the optimum (measured: KL 44 vs 1e-7 nats, N=10).
    """

    steps: int = 10_000
    lr: float = 1e-2
    schedule: str = "cosine"
    num_samples: int = 8
    stl: bool = True
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ParamError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ParamError(f"num_samples must be an integer >= 1, got {self.num_samples!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ParamError(f"lr must be a positive number, got {self.lr!r}")
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        check_choice("dtype", self.dtype, ("float32", "float64"))

    def optimizer(self) -> optax.GradientTransformation:
        """Adam with the configured schedule."""
        if self.schedule == "cosine":
            lr = optax.cosine_decay_schedule(self.lr, self.steps, alpha=1e-3)
        else:
            lr = self.lr
        return optax.adam(lr)


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


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


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise :class:`ParamError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ParamError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def train_config(params: dict[str, Any], **defaults: Any) -> TrainConfig:
    """The shared training hyperparameters a factory received as ``**train``.

    A factory names its own parameters; anything else in ``**train`` must be a :class:`TrainConfig`
    field, so an unknown name is reported here.  ``defaults`` are a family's own defaults for
    shared fields (e.g. a smaller learning rate for the dense Cholesky).
    """
    unknown = sorted(set(params) - set(TRAIN_FIELDS))
    if unknown:
        raise ParamError(f"unknown method parameter(s) {', '.join(unknown)}")
    return TrainConfig(**(defaults | params))


def draw_with_log_q(
    family: Family, train: TrainConfig, params: Params, key, idx, data_b
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A training draw (θ, z) and (log q(θ), Σ log q(z_i | θ)) at it, as the gradient estimator wants:
    at stopped parameters under STL; else from ``family.draw_log_q`` where the family has one."""
    if family.draw_log_q is not None and not train.stl:
        return family.draw_log_q(params, key, train.num_samples, idx, data_b)
    theta, z = family.draw(params, key, train.num_samples, idx, data_b)
    q_params = jax.lax.stop_gradient(params) if train.stl else params
    return theta, z, *family.log_q(q_params, theta, z, idx, data_b)


def stratified_neg_elbo(
    model: HierModel, family: Family, train: TrainConfig, scales: list[float], params: Params, key, picks
) -> jax.Array:
    """−ELBO estimate from one minibatch per stratum: ``picks[s] = (group ids, their data)``, stratum s
    scaled by ``scales[s]`` (N_s / B_s).  Used by :func:`make_vi` and the scale runner.

    Each stratum's local terms are an expectation over q(θ) q(z_i | θ) of their own, so every stratum
    draws its own θ (independent keys); the global term uses the first stratum's θ.
    """
    elbo = 0.0
    for s, (idx, data_b) in enumerate(picks):
        key_s = jax.random.fold_in(key, s)
        theta, z, lq_global, lq_local = draw_with_log_q(family, train, params, key_s, idx, data_b)
        local = jnp.sum(model.log_local(theta[:, None, :], z, data_b), axis=-1)
        elbo = elbo + scales[s] * (local - lq_local)
        if s == 0:
            elbo = elbo + model.log_prior_global(theta) - lq_global
    return -jnp.mean(elbo)


def make_vi(
    model: HierModel,
    family: Family,
    train: TrainConfig,
    batch_groups: int | None = None,
    **config: Any,
) -> Method:
    """Build a :class:`Method` that fits ``family`` by reparameterized stochastic VI with Adam.

    With ``batch_groups=B < N`` each step uses B groups drawn without replacement and the local
    terms scaled by N/B, an unbiased estimate of the full-data ELBO for group-factorized families.
    Where groups are ragged (:func:`~hierbench.datasets.base.row_layout`), the minibatch is
    stratified by group size instead: about B·N_s/N groups (at least one) from each size bucket s,
    scaled by N_s/B_s — still unbiased, padded per bucket rather than to the largest group
    (MovieLens: 8× fewer padded rows).  The buckets come as ``data[ROWS_KEY]``
    (:func:`with_rows`, which the harness adds); without them steps fall back to uniform minibatches.
    """
    num_groups = model.num_groups
    if batch_groups is not None:
        if not isinstance(batch_groups, int) or not 1 <= batch_groups:
            raise ParamError(f"batch_groups must be an integer >= 1, got {batch_groups!r}")
        if not family.factorizes_over_groups and batch_groups < num_groups:
            raise ParamError("batch_groups < N needs a family that factorizes over groups")
        batch_groups = min(batch_groups, num_groups)
    subsample = batch_groups is not None and batch_groups < num_groups
    scale = num_groups / batch_groups if subsample else 1.0
    # Where groups are ragged (row_layout is not None) the caller passes the size buckets as
    # data[ROWS_KEY] (see :func:`with_rows`).  Full-data steps evaluate the joint on them (cost ∝
    # observations instead of N·n_max); minibatch steps sample each bucket as a stratum.
    layout = row_layout(model)
    use_rows = layout is not None
    stratified = subsample and use_rows
    if stratified:
        # Strata: the size buckets, merged into at most MAX_STRATA runs of consecutive sizes (each
        # stratum is a separate branch of the compiled step; eight of them took minutes to compile).
        # Proportional allocation, at least one group per stratum; stratum s is scaled by N_s/B_s,
        # so the estimate stays unbiased and a batch pads only to its own stratum's widest group.
        merge = [list(run) for run in np.array_split(np.arange(len(layout)), min(MAX_STRATA, len(layout)))]
        mask_shape = model.data["mask"].shape
        per_obs = {k for k, v in model.data.items() if np.shape(v)[:2] == mask_shape}
        sizes = [sum(len(layout[b]["index"]) for b in run) for run in merge]
        alloc = [min(n, max(1, round(batch_groups * n / num_groups))) for n in sizes]
        strata_scale = [n / a for n, a in zip(sizes, alloc, strict=True)]
        config = config | {"strata": len(sizes), "groups_per_step": sum(alloc)}

    def strata(rows: list[dict[str, Any]]) -> list[tuple[jax.Array, Data]]:
        """The row layout's buckets merged as planned: (group ids, data padded to the widest)."""
        out = []
        for run in merge:
            width = max(rows[b]["data"]["mask"].shape[1] for b in run)

            def padded(key, a, width=width):
                if key not in per_obs or a.shape[1] == width:
                    return a
                return jnp.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

            index = jnp.concatenate([rows[b]["index"] for b in run])
            keys = rows[run[0]]["data"]
            data = {k: jnp.concatenate([padded(k, rows[b]["data"][k]) for b in run]) for k in keys}
            out.append((index, data))
        return out

    opt = train.optimizer()
    dtype = jnp.dtype(train.dtype)

    def init(key: jax.Array) -> VIState:
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype), family.init_params(key))
        return VIState(params, opt.init(params), jnp.zeros((), jnp.int32))

    def neg_elbo(params: Params, key: jax.Array, idx: jax.Array | None, data_b: Data, rows) -> jax.Array:
        theta, z, lq_global, lq_local = draw_with_log_q(family, train, params, key, idx, data_b)
        if rows is not None:
            return -jnp.mean(log_joint_rows(model, theta, z, rows) - lq_global - lq_local)
        local = jnp.sum(model.log_local(theta[:, None, :], z, data_b), axis=-1)
        elbo = model.log_prior_global(theta) - lq_global + scale * (local - lq_local)
        return -jnp.mean(elbo)

    def neg_elbo_strata(params: Params, key: jax.Array, picks: list) -> jax.Array:
        return stratified_neg_elbo(model, family, train, strata_scale, params, key, picks)

    def step(key: jax.Array, state: VIState, data: Data) -> tuple[VIState, StepInfo]:
        rows = data.get(ROWS_KEY) if use_rows else None
        data = {k: v for k, v in data.items() if k != ROWS_KEY}
        key_batch, key_draw = jax.random.split(key)
        if stratified and rows is not None:  # without the buckets: uniform minibatches (below)
            picks = []
            for s, (index, stratum) in enumerate(strata(rows)):
                key_s = jax.random.fold_in(key_batch, s)
                pick = choice_without_replacement(key_s, len(index), alloc[s])
                picks.append((index[pick], jax.tree.map(lambda a, p=pick: a[p], stratum)))
            loss, grads = jax.value_and_grad(neg_elbo_strata)(state.params, key_draw, picks)
        elif subsample:
            idx = choice_without_replacement(key_batch, num_groups, batch_groups)
            data_b = jax.tree.map(lambda a: a[idx], data)
            loss, grads = jax.value_and_grad(neg_elbo)(state.params, key_draw, idx, data_b, None)
        else:
            loss, grads = jax.value_and_grad(neg_elbo)(state.params, key_draw, None, data, rows)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return VIState(params, opt_state, state.step + 1), StepInfo(loss)

    def sample(key: jax.Array, params: Params, data: Data, num_draws: int) -> Draws:
        data = {k: v for k, v in data.items() if k != ROWS_KEY}
        theta, z = family.draw(params, key, num_draws, None, data)
        lq_global, lq_local = family.log_q(params, theta, z, None, data)
        return Draws(theta, z, lq_global + lq_local)

    split = family.factorizes_over_groups and family.draw_global is not None and family.draw_local is not None
    sample_global = sample_local = None
    if split:

        def sample_global(key: jax.Array, params: Params, num_draws: int) -> jax.Array:
            return family.draw_global(params, key, num_draws)

        def sample_local(key: jax.Array, params: Params, theta: jax.Array, idx: jax.Array, data_b: Data):
            z = family.draw_local(params, key, theta, idx, data_b)
            lq_global, lq_local = family.log_q(params, theta, z, idx, data_b)
            return z, lq_global, lq_local

    resolved = dataclasses.asdict(train) | {
        "batch_groups": batch_groups,
        "row_layout": use_rows,
        "gaussian_q": family.gaussian,
    }
    resolved |= config
    return Method(init, step, sample, resolved, sample_global, sample_local)
