"""numpyro's autoguides and AutoSemiDAIS on the native numpyro models: what a numpyro user's model costs.

The model is the dataset's native numpyro model (:mod:`hierbench.methods.peers.numpyro_models`:
plates, flat rows, numpyro distributions), not a factor over our joint
(:mod:`hierbench.methods.numpyro_peers`), so a step pays numpyro's own model tracing, site handling
and likelihood code.  Each peer is a :class:`~hierbench.methods.base.Method` whose ``step`` is one
``SVI.update`` (:func:`~hierbench.methods.numpyro_peers.svi_method`) and whose ``sample`` returns
draws of q in our (θ, z) layout (:class:`~hierbench.methods.peers.numpyro_models.Layout`), so the same
harness times it and the same float64 scorer scores it:

=================================  ==========================================  ===========================
registry name                      numpyro guide                               ours
=================================  ==========================================  ===========================
``numpyro-native-autonormal``      ``AutoNormal``; ``batch_groups=B``:          ``meanfield``; with B,
                                   ``plate(subsample_size=B)``                 ``branch batch_groups=B``
``numpyro-native-autolowrank``     ``AutoLowRankMultivariateNormal``           ``lowrank``
``numpyro-native-automvn``         ``AutoMultivariateNormal``                  ``dense``
``numpyro-native-semidais``        ``AutoSemiDAIS``: ``AutoMultivariateNormal``  ``branch batch_groups=B``
                                   on the globals × DAIS per group, under
                                   ``plate(subsample_size=B)``
=================================  ==========================================  ===========================

Settings are ours (:class:`~hierbench.methods.base.TrainConfig`, as for the factor peers): optax Adam
under our schedule through ``optax_to_numpyro``, the same peak learning rates (AutoMVN 3e-3 like
``dense``), ``Trace_ELBO(num_particles=num_samples)``, the same steps, float64, and q started at
unconstrained mean 0 (``init_to_feasible``) with scale ``init_sd``.  What is numpyro's own and stays:

* **No sticking-the-landing**: ``Trace_ELBO`` has the standard estimator only; ``stl=True`` is refused.
* **Subsampling is numpyro's**: ``batch_groups=B`` makes the plate draw B groups a step without
  replacement (from the step's key) and scale their terms by N/B.  Their rows are gathered through
  each group's row ids padded to the widest group (a fixed shape a step), where our minibatches of
  ragged groups are stratified by size.  AutoLowRank and AutoMVN support no subsampled local latents.
* **AutoSemiDAIS's own parameters**: ``K`` HMC steps (numpyro's default 4), its step size
  (``eta_init`` 0.01, ``eta_max`` 0.1), damping, mass matrix and annealing schedule per group, its base
  N(loc, scale) per group started at scale ``init_sd``; the global guide is ``AutoMultivariateNormal``
  (dense q(θ), as branch's).  Its q of z has no density: its ELBO is DAIS's bound on an extended space
  (the annealing path's momenta), so ``sample`` returns, per draw, q's final (θ, z) and the log
  weight numpyro's ``Trace_ELBO`` computes for that draw on the full data (a guide trace replayed
  through the model, numpyro's ``log_density`` of both); it states ``log_q`` as log p(θ, z, y) minus
  that weight, so the scorer's log weights are DAIS's own.  The recorded ``elbo`` is then the DAIS
  bound (≤ log Z, like every ELBO) and the IW-ELBO and k̂ use those weights; ``gaussian_q`` is False.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.distributions import biject_to
from numpyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoSemiDAIS,
)
from numpyro.infer.initialization import init_to_feasible
from numpyro.infer.util import log_density

from hierbench.datasets.base import HierModel, ParamError, check_positive_int, log_joint
from hierbench.methods import _gaussian as g
from hierbench.methods.base import Data, Draws, Method, refuse_full_rank, train_config
from hierbench.methods.batches import cast
from hierbench.methods.numpyro_peers import svi_method
from hierbench.methods.peers.numpyro_models import GROUPS, NATIVE_MODELS, Bound, bind

DAIS_DRAWS_AT_ONCE = 10  # draws of AutoSemiDAIS's q evaluated together when scoring (lax.map batch)


class NativeRows:
    """The batch source of a native model: its flat rows (and, subsampling, each group's row ids).

    numpyro draws a step's groups itself (inside the plate, from the step's key), so the harness draws
    nothing (``strata`` is empty) and ``picks`` is never called; ``groups_per_pick`` is the groups a step
    sees, for the record's evaluation counts."""

    strata: tuple = ()

    def __init__(self, model: HierModel, bound: Bound):
        self.rows, self.batch_groups = bound.rows, bound.batch_groups
        self.groups_per_pick = (bound.batch_groups or model.num_groups,)

    def arrays(self, dtype: str) -> dict[str, Any]:
        return cast(self.rows, dtype)

    def picks(self, data: Any, positions: list) -> list:
        raise NotImplementedError("numpyro subsamples inside its plate; a native model has no picks")

    def describe(self) -> dict[str, Any]:
        return {
            "batch_groups": self.batch_groups,
            "row_layout": False,
            "native_rows": "flat rows" if self.batch_groups is None else "group rows padded to n_max",
        }


def flat_rows(model: HierModel, data: Data) -> dict[str, Any]:
    """:func:`~hierbench.datasets.base.flatten_groups` of padded ``data`` in JAX, inside a jitted
    function (``model.num_obs`` rows, a static size); what the scorer's ``data`` becomes for the model."""
    mask = data.get("mask")
    if mask is None:
        return dict(data) | {"group": jnp.arange(model.num_groups)}
    n_max = mask.shape[1]
    (at,) = jnp.nonzero(mask.reshape(-1) > 0, size=model.num_obs)
    out = {
        k: v.reshape(-1, *v.shape[2:])[at]
        for k, v in data.items()
        if k != "mask" and v.shape[:2] == mask.shape
    }
    return out | {"group": at // n_max}


def _native_peer(
    model: HierModel,
    bound: Bound,
    guide: Any,
    cfg: Any,
    draw: Callable[[jax.Array, dict, Data, int], Draws],
    init_params: Callable | None = None,
    **config: Any,
) -> Method:
    return svi_method(
        bound.model, guide, cfg, NativeRows(model, bound), draw, init_params, model_kind="native", **config
    )


def _check_dataset(model: HierModel) -> None:
    if model.name not in NATIVE_MODELS:
        raise ParamError(f"no native numpyro model of {model.name!r} (methods/peers/numpyro_models.py)")


def _batch_groups(model: HierModel, batch_groups: Any) -> int | None:
    if batch_groups is None:
        return None
    return check_positive_int("batch_groups", batch_groups)


def make_autonormal(
    model: HierModel, *, batch_groups: int | None = None, init_sd: float = 0.1, stl: bool = False, **train
) -> Method:
    """numpyro SVI, AutoNormal on the native numpyro model; batch_groups=B subsamples B groups a step.

    Parameters
    ----------
    model : HierModel
        The model (every dataset has a native numpyro model).
    batch_groups : int, optional
        Groups a step: the plate's ``subsample_size`` (None or ≥ N: full data).  Peer of ``meanfield``
        on full data and of ``branch batch_groups=B`` (its q is mean-field, branch's is not).
    init_sd : float
        Initial scale of every coordinate (``AutoNormal(init_scale=)``; ours: the same).
    stl : bool
        Must stay False (numpyro's ``Trace_ELBO`` has no sticking-the-landing estimator).
    **train
        :class:`~hierbench.methods.base.TrainConfig` fields (steps, lr, schedule, num_samples, dtype).
    """
    _check_dataset(model)
    cfg = train_config(train | {"stl": stl})
    bound = bind(model, _batch_groups(model, batch_groups))
    guide = AutoNormal(bound.model, init_loc_fn=init_to_feasible, init_scale=init_sd)
    layout = bound.layout
    prefix = guide.prefix

    def draw(key: jax.Array, params: dict, data: Data, num_draws: int) -> Draws:
        values, log_q = {}, 0.0
        for k, site in zip(jax.random.split(key, len(layout.shapes)), sorted(layout.shapes), strict=True):
            loc, scale = params[f"{site}_{prefix}_loc"], params[f"{site}_{prefix}_scale"]
            eps = jax.random.normal(k, (num_draws, *loc.shape), loc.dtype)
            values[site] = loc + scale * eps
            log_q = log_q + jnp.sum(
                -0.5 * eps**2 - jnp.log(scale) - 0.5 * g.LOG_2PI, axis=tuple(range(1, eps.ndim))
            )
        return Draws(*layout.to_ours(values), log_q)

    return _native_peer(model, bound, guide, cfg, draw, init_sd=init_sd)


def _joint_draw(bound: Bound, guide: Any) -> Callable[[jax.Array, dict, Data, int], Draws]:
    """Draws of an ``AutoContinuous`` guide (one Gaussian over the packed unconstrained latents)."""

    def draw(key: jax.Array, params: dict, data: Data, num_draws: int) -> Draws:
        q = guide.get_posterior(params)
        w = q.sample(key, (num_draws,))
        theta, z = bound.layout.to_ours(jax.vmap(guide._unpack_latent)(w))
        return Draws(theta, z, q.log_prob(w))

    return draw


def make_automvn(
    model: HierModel,
    *,
    init_sd: float = 0.1,
    max_dim: int = 2000,
    lr: float = 3e-3,
    stl: bool = False,
    **train,
) -> Method:
    """numpyro SVI, AutoMultivariateNormal on the native numpyro model; full data; refused above max_dim.

    Peer of ``dense`` with its defaults (peak learning rate 3e-3, the same ``max_dim``: status
    ``infeasible`` with the memory a D×D factor and its Adam state would take).
    """
    _check_dataset(model)
    cfg = train_config(train | {"lr": lr, "stl": stl})
    dim = g.joint_dim(model)
    refuse_full_rank("numpyro-native-automvn", dim, max_dim)
    bound = bind(model)
    guide = AutoMultivariateNormal(bound.model, init_loc_fn=init_to_feasible, init_scale=init_sd)
    return _native_peer(model, bound, guide, cfg, _joint_draw(bound, guide), init_sd=init_sd, max_dim=max_dim)


def make_autolowrank(
    model: HierModel,
    *,
    rank: int = 5,
    init_sd: float = 0.1,
    init_factor: float = 0.01,
    stl: bool = False,
    **train,
) -> Method:
    """numpyro SVI, AutoLowRankMultivariateNormal (diagonal + rank r) on the native numpyro model.

    Peer of ``lowrank`` (same rank); the factor starts like the factor peer's (numpyro's zero factor is
    a saddle): effective entries ``init_factor``·N(0, 1).
    """
    _check_dataset(model)
    cfg = train_config(train | {"stl": stl})
    rank = check_positive_int("rank", rank)
    dim = g.joint_dim(model)
    bound = bind(model)
    guide = AutoLowRankMultivariateNormal(
        bound.model, init_loc_fn=init_to_feasible, init_scale=init_sd, rank=rank
    )

    def init_params(key: jax.Array) -> dict[str, jax.Array]:
        return {f"{guide.prefix}_cov_factor": (init_factor / init_sd) * jax.random.normal(key, (dim, rank))}

    return _native_peer(
        model,
        bound,
        guide,
        cfg,
        _joint_draw(bound, guide),
        init_params,
        rank=rank,
        init_sd=init_sd,
        init_factor=init_factor,
    )


def _semidais(bound: Bound, init_sd: float, K: int, eta_init: float, eta_max: float) -> AutoSemiDAIS:
    global_guide = AutoMultivariateNormal(
        bound.global_model, init_loc_fn=init_to_feasible, init_scale=init_sd
    )
    return AutoSemiDAIS(
        bound.model,
        bound.local_model,
        global_guide,
        K=K,
        eta_init=eta_init,
        eta_max=eta_max,
        init_scale=init_sd,
        subsample_plate=GROUPS,
    )


def make_semidais(
    model: HierModel,
    *,
    batch_groups: int | None = None,
    K: int = 4,
    eta_init: float = 0.01,
    eta_max: float = 0.1,
    init_sd: float = 0.1,
    stl: bool = False,
    **train,
) -> Method:
    """numpyro SVI, AutoSemiDAIS: AutoMultivariateNormal q(θ) × DAIS per group, B groups a step.

    Peer of ``branch batch_groups=B``: a global guide times local guides under a subsampled plate.
    The recorded ELBO is DAIS's augmented bound (module docstring).

    Parameters
    ----------
    batch_groups : int, optional
        Groups a step (the plate's ``subsample_size``; None or ≥ N: full data).
    K : int
        HMC steps of the annealing path (numpyro's default 4).
    eta_init, eta_max : float
        Initial and largest learnable HMC step size (numpyro's defaults).
    init_sd : float
        Initial scale of the global guide and of each group's base distribution.
    """
    _check_dataset(model)
    cfg = train_config(train | {"stl": stl})
    K = check_positive_int("K", K)
    if not 0 < eta_init < eta_max:
        raise ParamError(f"need 0 < eta_init < eta_max, got eta_init={eta_init!r}, eta_max={eta_max!r}")
    bound = bind(model, _batch_groups(model, batch_groups))
    guide = _semidais(bound, init_sd, K, eta_init, eta_max)
    # Scoring runs the same guide on every group: a full-data twin with the same parameter shapes.
    full = bind(model) if bound.batch_groups is not None else bound
    full_guide = _semidais(full, init_sd, K, eta_init, eta_max) if full is not bound else guide
    if full_guide is not guide:
        full_rows = jax.tree.map(jnp.asarray, full.rows)
        with handlers.block(), handlers.seed(rng_seed=0):
            full_guide(full_rows)  # sets up its prototype (as SVI.init does for the training guide)
    layout = full.layout
    sites = tuple(layout.shapes)

    def one(key: jax.Array, params: dict, rows: dict, data: Data) -> tuple:
        k_guide, k_model = jax.random.split(key)
        guide_lp, guide_trace = log_density(handlers.seed(full_guide, k_guide), (rows,), {}, params)
        replayed = handlers.replay(handlers.seed(full.model, k_model), guide_trace)
        model_lp, model_trace = log_density(replayed, (rows,), {}, params)
        values = {s: biject_to(model_trace[s]["fn"].support).inv(model_trace[s]["value"]) for s in sites}
        theta, z = layout.to_ours(values)
        return theta, z, log_joint(model, theta, z, data) - (model_lp - guide_lp)

    def draw(key: jax.Array, params: dict, data: Data, num_draws: int) -> Draws:
        rows = flat_rows(model, data)
        keys = jax.random.split(key, num_draws)
        theta, z, log_q = jax.lax.map(
            lambda k: one(k, params, rows, data), keys, batch_size=min(DAIS_DRAWS_AT_ONCE, num_draws)
        )
        return Draws(theta, z, log_q)

    method = _native_peer(
        model,
        bound,
        guide,
        cfg,
        draw,
        init_sd=init_sd,
        K=K,
        eta_init=eta_init,
        eta_max=eta_max,
        global_guide="AutoMultivariateNormal",
        elbo_kind="DAIS augmented bound",
    )
    return method._replace(config=method.config | {"gaussian_q": False})
