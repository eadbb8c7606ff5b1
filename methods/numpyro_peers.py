"""numpyro's SVI autoguides as peers of our Gaussian families, on a factor of our joint, same harness.

These peers measure numpyro's guide and optimizer overhead on *our* log joint (one ``numpyro.factor``);
what a numpyro user's own model costs (plates, flat rows, numpyro distributions) is measured by the
``numpyro-native-*`` peers (:mod:`hierbench.methods.peers.numpyro_native`).

A hierbench model becomes a numpyro model over one flat latent vector w = (θ, vec z) of length
D = G + N·L (:func:`numpyro_model`): an improper flat site ``w`` plus
``numpyro.factor("log_joint", log_joint(model, θ, z, data))``, so numpyro differentiates exactly the
density our methods do (``tests/test_peers.py`` checks numpyro's model log density against
:func:`~hierbench.datasets.base.log_joint`).  Each peer is a :class:`~hierbench.methods.base.Method`
whose ``step`` is one ``SVI.update`` and whose ``sample`` draws from the guide's own posterior
distribution, so the harness compiles, times and scores it exactly like ours:

======================  ==================================  ============
registry name           numpyro guide                       ours
======================  ==================================  ============
``numpyro-autonormal``  ``AutoNormal``                      ``meanfield``
``numpyro-automvn``     ``AutoMultivariateNormal``          ``dense``
``numpyro-autolowrank`` ``AutoLowRankMultivariateNormal``   ``lowrank``
======================  ==================================  ============

Settings are ours (:class:`~hierbench.methods.base.TrainConfig`): the optax Adam with our schedule
wrapped by ``numpyro.optim.optax_to_numpyro``, the same peak learning rate (AutoMVN takes dense's
3e-3), ``Trace_ELBO(num_particles=num_samples)``, the same steps, float64, the guide started at
mean 0 and scale ``init_sd`` like ours (AutoLowRank's factor at our random ``init_factor`` scale:
numpyro's default zero factor is a saddle).  Two differences are numpyro's own and stay:

* **No sticking-the-landing.** ``Trace_ELBO`` differentiates log q through the parameters (the
  standard reparameterization estimator); ours default to STL.  ``stl=True`` is refused.
* **No subsampled plates.** The joint is a single factor over the flat vector, so every step uses
  the full data; numpyro's subsampling needs local latents inside a ``plate``, which AutoMVN and
  AutoLowRank reject (they support no local latent variables) and which would make AutoNormal a
  different model adapter from the other two.  ``batch_groups`` is therefore not a parameter.

Where groups are ragged the factor is evaluated on the size-bucketed row layout, as in our full-data
steps (``config["row_layout"]``), so both sides pay the same likelihood cost.

State layout: ``VIState.params`` holds numpyro's whole ``SVIState`` (its optimizer state carries the
unconstrained parameters), so nothing is copied between steps; ``sample`` constrains them with
``SVI.get_params``.  ``step`` replaces the state's PRNG key by the harness's per-step key, so the
same key gives the same record, as for ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.optim import optax_to_numpyro

from hierbench.datasets.base import HierModel, ParamError, check_positive_int, log_joint, log_joint_rows
from hierbench.methods import _gaussian as g
from hierbench.methods.base import (
    Data,
    Draws,
    Method,
    StepInfo,
    TrainConfig,
    VIState,
    refuse_full_rank,
    train_config,
)
from hierbench.methods.batches import FullData

SITE = "w"  # the one latent site: the joint vector (θ, vec z)


def numpyro_model(model: HierModel) -> Callable[[Data], None]:
    """The numpyro model of ``model`` over the flat latent ``w = (θ, vec z)``.

    ``w`` has an improper flat prior (log density 0) and the joint enters as one factor, so the
    model's log density at w is ``log_joint(model, θ, z, data)`` exactly.  ``data`` is what our
    full-data steps read (:class:`~hierbench.methods.batches.FullData`): the model's per-group arrays
    under ``groups`` and, where groups are ragged, the size buckets under ``rows`` (then the factor is
    :func:`~hierbench.datasets.base.log_joint_rows`, the same value at a cost ∝ observations).
    """
    dim = g.joint_dim(model)
    dg, n, dl = model.dim_global, model.num_groups, model.dim_local

    def np_model(data: Data) -> None:
        w = numpyro.sample(SITE, dist.ImproperUniform(constraints.real, (), (dim,)))
        theta, z = w[:dg], w[dg:].reshape(n, dl)
        rows = data.get("rows")
        if rows is not None:
            value = log_joint_rows(model, theta, z, rows)
        else:
            value = log_joint(model, theta, z, data["groups"])
        numpyro.factor("log_joint", value)

    return np_model


def _raw_key(key: jax.Array) -> jax.Array:
    """A raw ``uint32`` key: numpyro's SVI state and the harness's finiteness check want one."""
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _make_peer(
    model: HierModel,
    guide: Any,
    posterior: Callable[[Any, dict[str, jax.Array]], dist.Distribution],
    cfg: TrainConfig,
    init_params: Callable[[jax.Array], dict[str, jax.Array]] | None,
    **config: Any,
) -> Method:
    """Wrap numpyro's SVI with ``guide`` on the factor model as a Method.

    ``posterior(guide, params)`` is the guide's distribution of w given its constrained parameters;
    ``init_params(key)`` overrides some of the guide's initial parameter values (real-valued ones only:
    they are set as unconstrained values).
    """
    shape = (model.dim_global, model.num_groups, model.dim_local)

    def draw(key: jax.Array, params: dict[str, jax.Array], data: Data, num_draws: int) -> Draws:
        q = posterior(guide, params)
        w = q.sample(key, (num_draws,))
        theta, z = g.split_joint(w, *shape)
        return Draws(theta, z, q.log_prob(w))

    return svi_method(numpyro_model(model), guide, cfg, FullData(model), draw, init_params, **config)


def svi_method(
    np_model: Callable[[Data], None],
    guide: Any,
    cfg: TrainConfig,
    batches: Any,
    draw: Callable[[jax.Array, dict[str, jax.Array], Data, int], Draws],
    init_params: Callable[[jax.Array], dict[str, jax.Array]] | None = None,
    **config: Any,
) -> Method:
    """numpyro's SVI (``Trace_ELBO``, our optax Adam and schedule) of ``guide`` on ``np_model`` as a Method.

    ``batches.arrays(dtype)`` is the model's argument (the step's ``data``); ``draw(key, params, data,
    S)`` draws from q given the guide's constrained parameters (``SVI.get_params``), in our layout;
    ``init_params(key)`` overrides some of the guide's initial (real-valued, unconstrained) parameters.
    """
    if cfg.stl:
        raise ParamError("stl=True: numpyro's Trace_ELBO has no sticking-the-landing estimator")
    if cfg.dtype != "float64":
        raise ParamError("numpyro peers train in float64 only (dtype=float64)")
    svi = SVI(np_model, guide, optax_to_numpyro(cfg.optimizer()), Trace_ELBO(num_particles=cfg.num_samples))
    template = jax.tree.map(jnp.asarray, batches.arrays(cfg.dtype))

    # SVI.init traces model and guide eagerly (op by op, slow for large models) and sets the guide's
    # prototype and svi.constrain_fn: done once here; init(key) only re-seeds that state.
    first = svi.init(jax.random.key_data(jax.random.key(0)), template)

    def init(key: jax.Array) -> VIState:
        raw = _raw_key(key)
        svi_state = first._replace(rng_key=raw)
        if init_params is not None:  # overridden values are of unconstrained (real) parameters
            params = svi.optim.get_params(first.optim_state) | init_params(jax.random.fold_in(raw, 1))
            svi_state = svi_state._replace(optim_state=svi.optim.init(params))
        return VIState(svi_state, (), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: VIState, data: Data) -> tuple[VIState, StepInfo]:
        svi_state = state.params._replace(rng_key=_raw_key(key))
        svi_state, loss = svi.update(svi_state, data)
        return VIState(svi_state, (), state.step + 1), StepInfo(loss)

    def sample(key: jax.Array, params: Any, data: Data, num_draws: int) -> Draws:
        return draw(key, svi.get_params(params), data, num_draws)

    resolved = (
        dataclasses.asdict(cfg)
        | batches.describe()
        | {
            "gaussian_q": True,
            "guide": type(guide).__name__,
            "numpyro_version": numpyro.__version__,
        }
    )
    return Method(init, step, sample, resolved | config, batches=batches)


def _zero_init(model: HierModel) -> Callable:
    # our families start at mean 0; numpyro's default draws Uniform(-2, 2) per coordinate
    return init_to_value(values={SITE: jnp.zeros(g.joint_dim(model))})


def make_autonormal(model: HierModel, *, init_sd: float = 0.1, stl: bool = False, **train) -> Method:
    """numpyro SVI, AutoNormal (mean-field) on a factor of our joint over flat (θ, z); peer of meanfield.

    Parameters
    ----------
    model : HierModel
        The model.
    init_sd : float
        Initial scale of every coordinate (ours: the same).
    stl : bool
        Must stay False: ``Trace_ELBO`` has no sticking-the-landing estimator.
    **train
        :class:`~hierbench.methods.base.TrainConfig` fields (steps, lr, schedule, num_samples, dtype).
    """
    cfg = train_config(train | {"stl": stl})
    guide = AutoNormal(numpyro_model(model), init_loc_fn=_zero_init(model), init_scale=init_sd)

    def posterior(guide: AutoNormal, params: dict[str, jax.Array]) -> dist.Distribution:
        # AutoNormal has no get_posterior: its guide is this Normal at the one real-valued site
        prefix = guide.prefix
        return dist.Normal(params[f"{SITE}_{prefix}_loc"], params[f"{SITE}_{prefix}_scale"]).to_event(1)

    return _make_peer(model, guide, posterior, cfg, None, init_sd=init_sd)


def make_automvn(
    model: HierModel,
    *,
    init_sd: float = 0.1,
    max_dim: int = 2000,
    lr: float = 3e-3,
    stl: bool = False,
    **train,
) -> Method:
    """numpyro SVI, AutoMultivariateNormal (full rank) on a factor of our joint over flat (θ, z); full data.

    Peer of ``dense``, with its defaults: peak learning rate 3e-3 and the same ``max_dim`` limit
    (status ``infeasible`` with the memory a D×D factor and its Adam state would take).
    """
    cfg = train_config(train | {"lr": lr, "stl": stl})
    dim = g.joint_dim(model)
    refuse_full_rank("numpyro-automvn", dim, max_dim)
    guide = AutoMultivariateNormal(numpyro_model(model), init_loc_fn=_zero_init(model), init_scale=init_sd)
    posterior = lambda guide, params: guide.get_posterior(params)  # noqa: E731
    return _make_peer(model, guide, posterior, cfg, None, init_sd=init_sd, max_dim=max_dim)


def make_autolowrank(
    model: HierModel,
    *,
    rank: int = 5,
    init_sd: float = 0.1,
    init_factor: float = 0.01,
    stl: bool = False,
    **train,
) -> Method:
    """numpyro SVI, AutoLowRankMultivariateNormal (diagonal + rank r) on a factor of our joint over (θ, z).

    Peer of ``lowrank`` (same rank default).  numpyro scales its factor by the diagonal scale,
    Σ = diag(s²) + diag(s) W Wᵀ diag(s), and starts W at 0, a saddle of the ELBO; we start it like
    ours, at effective factor entries ``init_factor``·N(0, 1) (W = init_factor / init_sd · N(0, 1)).
    """
    cfg = train_config(train | {"stl": stl})
    rank = check_positive_int("rank", rank)
    dim = g.joint_dim(model)
    guide = AutoLowRankMultivariateNormal(
        numpyro_model(model), init_loc_fn=_zero_init(model), init_scale=init_sd, rank=rank
    )

    def init_params(key: jax.Array) -> dict[str, jax.Array]:
        factor = (init_factor / init_sd) * jax.random.normal(key, (dim, rank))
        return {f"{guide.prefix}_cov_factor": factor}

    posterior = lambda guide, params: guide.get_posterior(params)  # noqa: E731
    return _make_peer(
        model, guide, posterior, cfg, init_params, rank=rank, init_sd=init_sd, init_factor=init_factor
    )
