"""blackjax's Gaussian VI and Pathfinder as peers, on our log joint over the flat (θ, z) vector.

blackjax takes a log density of a position, so these run on :func:`~hierbench.datasets.base.log_joint`
(the size-bucketed :func:`~hierbench.datasets.base.log_joint_rows` where groups are ragged, as our
full-data steps) of w = (θ, vec z), with the data passed to each step:

==========================  =====================================  ==========
registry name               blackjax                               ours
==========================  =====================================  ==========
``blackjax-meanfield``      ``blackjax.vi.meanfield_vi.step``      ``meanfield``
``blackjax-fullrank``       ``blackjax.vi.fullrank_vi.step``       ``dense``
``blackjax-pathfinder``     ``blackjax.vi.pathfinder.approximate``  (none)
==========================  =====================================  ==========

**meanfield, fullrank.**  A step is blackjax's own step (its reparameterized KL objective, its
parameterization: log-sd ``rho`` for mean-field, a Cholesky factor with log-diagonal for full rank)
under our :class:`~hierbench.methods.base.TrainConfig`: the optax Adam with our schedule and peak
learning rate (fullrank takes dense's 3e-3), ``num_samples`` draws a step, sticking-the-landing as
ours (blackjax's ``stl_estimator``, on by default in both), the same steps and dtype.  blackjax starts
at mean 0 with sd exp(−2) (mean-field) or the identity factor (full rank); we start both at mean 0, sd
``init_sd``, like ours.  Full data only (blackjax's VI has no minibatching); fullrank is refused above
``max_dim`` like ``dense``.  ``sample`` draws with blackjax's own sampler and its own log density of q.

**Pathfinder** (Zhang et al. 2022) is one L-BFGS run, not an iterative step: its ``step`` runs the
whole single-path Pathfinder from w = 0 (``blackjax.vi.pathfinder.approximate``: L-BFGS, then the
Gaussian along the path with the highest ELBO estimate), so a run has ``steps=1`` (any other value is
refused), ``wall_s`` is that run, ``compile_s`` its compilation, and the scorer scores the chosen
Gaussian like any q.  Settings: ``maxiter=1000`` and ``num_elbo_draws=25``, Stan Pathfinder's defaults
(``max_lbfgs_iters``, ``num_elbo_draws``), so ``blackjax-pathfinder`` and ``stan-pathfinder`` compare
path for path; blackjax's own L-BFGS defaults otherwise (history ``maxcor=10``, ``ftol=1e-5``,
``gtol=1e-8``).  blackjax keeps the whole path (``maxiter`` + 1 states of D·(2·maxcor + 2) numbers),
so a run above ``max_path_bytes`` is refused ``infeasible``.  The record's ``grad_evals`` (steps ×
``num_samples``) says nothing about Pathfinder's work.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from hierbench.datasets.base import HierModel, ParamError, check_positive_int, log_joint, log_joint_rows
from hierbench.methods import _gaussian as g
from hierbench.methods.base import (
    Data,
    Draws,
    Infeasible,
    Method,
    StepInfo,
    VIState,
    refuse_full_rank,
    train_config,
)
from hierbench.methods.batches import FullData

try:
    import blackjax
    from blackjax.vi import fullrank_vi, meanfield_vi, pathfinder
except ImportError:  # pragma: no cover - blackjax is in the lock; the factories say what to install
    blackjax = None

INSTALL_HINT = "pip install blackjax==1.7.1 (in requirements/lock.txt)"


def _require() -> None:
    if blackjax is None:
        from hierbench.methods.base import Unavailable

        raise Unavailable(f"blackjax is not installed; {INSTALL_HINT}")


def logdensity(model: HierModel, data: Data):
    """w = (θ, vec z) -> log p(θ, z, y) on full data (the size buckets where groups are ragged)."""
    dg, n, dl = model.dim_global, model.num_groups, model.dim_local

    def fn(w: jax.Array) -> jax.Array:
        theta, z = w[:dg], w[dg:].reshape(n, dl)
        rows = data.get("rows")
        return (
            log_joint_rows(model, theta, z, rows)
            if rows is not None
            else log_joint(model, theta, z, data["groups"])
        )

    return fn


def _config(cfg: Any, batches: FullData, **extra: Any) -> dict[str, Any]:
    return (
        dataclasses.asdict(cfg)
        | batches.describe()
        | {"gaussian_q": True, "blackjax_version": blackjax.__version__}
        | extra
    )


def _gaussian_vi(model: HierModel, module: Any, init_state, cfg, **extra: Any) -> Method:
    """A blackjax Gaussian VI module (``meanfield_vi`` or ``fullrank_vi``) as a Method."""
    batches = FullData(model)
    optimizer = cfg.optimizer()
    shape = (model.dim_global, model.num_groups, model.dim_local)
    dtype = jnp.dtype(cfg.dtype)

    def init(key: jax.Array) -> VIState:
        return VIState(init_state(optimizer, dtype), (), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: VIState, data: Data) -> tuple[VIState, StepInfo]:
        new, info = module.step(
            key, state.params, logdensity(model, data), optimizer, cfg.num_samples, stl_estimator=cfg.stl
        )
        # blackjax calls it ``elbo``; it is the loss it minimizes, mean(log q − log p) = −ELBO
        return VIState(new, (), state.step + 1), StepInfo(info.elbo)

    def sample(key: jax.Array, params: Any, data: Data, num_draws: int) -> Draws:
        w = module.sample(key, params, num_draws)
        if module is meanfield_vi:
            log_q_fn = meanfield_vi.generate_meanfield_logdensity(params.mu, params.rho)
        else:
            log_q_fn = fullrank_vi.generate_fullrank_logdensity(params.mu, params.chol_params)
        theta, z = g.split_joint(w, *shape)
        return Draws(theta, z, jax.vmap(log_q_fn)(w))

    return Method(init, step, sample, _config(cfg, batches, **extra), batches=batches)


def make_meanfield(model: HierModel, *, init_sd: float = 0.1, **train) -> Method:
    """blackjax mean-field VI (meanfield_vi.step) on our log joint; full data, peer of meanfield.

    Parameters
    ----------
    init_sd : float
        Initial sd of every coordinate (``rho = log init_sd``; blackjax's own start is rho = −2).
    **train
        :class:`~hierbench.methods.base.TrainConfig` fields (steps, lr, schedule, num_samples, stl, dtype).
    """
    _require()
    cfg = train_config(train)
    dim = g.joint_dim(model)

    def init_state(optimizer, dtype):
        mu, rho = jnp.zeros(dim, dtype), jnp.full(dim, math.log(init_sd), dtype)
        return meanfield_vi.MFVIState(mu, rho, optimizer.init((mu, rho)))

    return _gaussian_vi(model, meanfield_vi, init_state, cfg, init_sd=init_sd)


def make_fullrank(
    model: HierModel, *, init_sd: float = 0.1, max_dim: int = 2000, lr: float = 3e-3, **train
) -> Method:
    """blackjax full-rank VI (fullrank_vi.step) on our log joint; full data; refused above max_dim.

    Peer of ``dense``, with its defaults (peak learning rate 3e-3, ``max_dim``); starts at sd ``init_sd``
    (blackjax's own start is the identity factor).
    """
    _require()
    cfg = train_config(train | {"lr": lr})
    dim = g.joint_dim(model)
    refuse_full_rank("blackjax-fullrank", dim, max_dim)

    def init_state(optimizer, dtype):
        mu = jnp.zeros(dim, dtype)
        chol = jnp.zeros(dim * (dim + 1) // 2, dtype).at[:dim].set(math.log(init_sd))  # log-diagonal first
        return fullrank_vi.FRVIState(mu, chol, optimizer.init((mu, chol)))

    return _gaussian_vi(model, fullrank_vi, init_state, cfg, init_sd=init_sd, max_dim=max_dim)


def make_pathfinder(
    model: HierModel,
    *,
    maxiter: int = 1000,
    maxcor: int = 10,
    num_elbo_draws: int = 25,
    init_sd: float = 0.1,
    max_path_bytes: float = 4 * 2**30,
    steps: int = 1,
    **train,
) -> Method:
    """blackjax single-path Pathfinder on our log joint: one L-BFGS run is one step (run with --steps 1).

    Parameters
    ----------
    maxiter : int
        L-BFGS iterations at most (Stan Pathfinder's default ``max_lbfgs_iters``).
    maxcor : int
        L-BFGS history size (blackjax's default).
    num_elbo_draws : int
        Draws per ELBO estimate along the path (Stan Pathfinder's default).
    init_sd : float
        The q scored before the run (step 0): N(0, init_sd² I), as ours start.
    max_path_bytes : float
        Refuse (``infeasible``) a path history larger than this.
    steps : int
        Must be 1: Pathfinder is one optimization, set by the harness's ``--steps``.
    **train
        Refused: the shared training fields (lr, schedule, num_samples, stl, dtype) have no meaning for
        Pathfinder (``hierbench list`` shows them for every VI method).
    """
    _require()
    if train:
        raise ParamError(
            f"blackjax-pathfinder has no optimizer settings ({', '.join(sorted(train))}): L-BFGS takes "
            "maxiter, maxcor; its ELBO draws are num_elbo_draws"
        )
    if steps != 1:
        raise ParamError(
            f"blackjax-pathfinder is one L-BFGS run, not an iterative step: run it with --steps 1 "
            f"(maxiter={maxiter} sets its iterations); got steps={steps}"
        )
    maxiter = check_positive_int("maxiter", maxiter)
    maxcor = check_positive_int("maxcor", maxcor)
    num_elbo_draws = check_positive_int("num_elbo_draws", num_elbo_draws)
    dim = g.joint_dim(model)
    path_bytes = (maxiter + 1) * dim * (2 * maxcor + 2) * 8
    if path_bytes > max_path_bytes:
        raise Infeasible(
            f"blackjax-pathfinder keeps its whole path: {maxiter + 1} states of {dim}·{2 * maxcor + 2} "
            f"numbers "
            f"(~{path_bytes / 2**20:,.0f} MiB) > max_path_bytes; lower maxiter or maxcor",
            memory_bytes=path_bytes,
        )
    batches = FullData(model)
    shape = (model.dim_global, model.num_groups, model.dim_local)

    def init(key: jax.Array) -> VIState:
        # the Gaussian the run starts from, N(0, init_sd² I), in Pathfinder's factored form
        state = pathfinder.PathfinderState(
            elbo=jnp.asarray(-jnp.inf),
            position=jnp.zeros(dim),
            grad_position=jnp.zeros(dim),
            alpha=jnp.full(dim, init_sd**2),
            beta=jnp.zeros((dim, 2 * maxcor)),
            gamma=jnp.zeros((2 * maxcor, 2 * maxcor)),
        )
        return VIState(state, (), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: VIState, data: Data) -> tuple[VIState, StepInfo]:
        found, _ = pathfinder.approximate(
            key, logdensity(model, data), jnp.zeros(dim), num_elbo_draws, maxiter=maxiter, maxcor=maxcor
        )
        return VIState(found, (), state.step + 1), StepInfo(-found.elbo)

    def sample(key: jax.Array, params: Any, data: Data, num_draws: int) -> Draws:
        w, log_q = pathfinder.sample(key, params, num_draws)
        theta, z = g.split_joint(w, *shape)
        return Draws(theta, z, log_q)

    config = {
        "steps": 1,
        "num_samples": num_elbo_draws,
        "dtype": "float64",
        "maxiter": maxiter,
        "maxcor": maxcor,
        "num_elbo_draws": num_elbo_draws,
        "init_sd": init_sd,
        "gaussian_q": True,
        "blackjax_version": blackjax.__version__,
    } | batches.describe()
    return Method(init, step, sample, config, batches=batches)
