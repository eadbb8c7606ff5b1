"""Pyro's autoguides on native Pyro models of hier-linear and hier-logistic, on the torch backend.

The model is what a Pyro user writes (:func:`hier_regression`): θ ~ N(0, I_d) with Pyro
distributions, ``pyro.plate("groups", N)`` over z_i ~ N(θ, I_d), and the observed rows (flat:
``x``, ``y``, ``group``, :func:`~hierbench.datasets.base.flatten_groups`) under a plate over rows, with
``y ~ Normal(x·z[group], 1)`` or ``Bernoulli(logits=x·z[group])``; indexing with ``...`` so Pyro's
vectorized particles work.  ``tests/test_pyro_peers.py`` checks its log density against
:func:`~hierbench.datasets.base.log_joint`.

==========================  =====================================  ==========
registry name               Pyro guide                             ours
==========================  =====================================  ==========
``pyro-autonormal``         ``AutoNormal``                         ``meanfield``
``pyro-autolowrank``        ``AutoLowRankMultivariateNormal``      ``lowrank``
``pyro-automvn``            ``AutoMultivariateNormal``             ``dense``
==========================  =====================================  ==========

**How it runs.**  A peer is a :class:`~hierbench.methods.base.Method` whose ``torch`` field is a
:class:`~hierbench.methods.base.TorchLoss`: Pyro gives the loss (``Trace_ELBO.differentiable_loss`` of
model and guide, ``num_samples`` vectorized particles), the guide's parameters, and their values as
numpy; the torch backend's :class:`~hierbench.harness.backends.torch_backend.LossRunner` runs it in the
same timed loop as our torch runs (our Adam under our schedule, warm-up steps as ``compile_s``, chunks
timed around the device's sync).  Scoring is the same float64 JAX scorer: q is Gaussian, so
``sample`` draws it in JAX from the guide's parameters (location and scale, Cholesky factor, or
low-rank factor and diagonal: :func:`gaussian_params`), in our (θ, z) layout — Pyro packs the latents
in the model's order, θ then z row by row, which is ours.  On the JAX backend the peers are refused.

**What is Pyro's own.**  No sticking-the-landing (``Trace_ELBO``'s standard estimator; ``stl=True`` is
refused); randomness from torch's global generator (seeded per run); Pyro's argument validation as
Pyro sets it (on by default); the guides' own initializations except the mean 0 (``init_to_feasible``)
and ``init_sd`` scale: AutoLowRank's factor starts at N(0, 1/rank) entries (Pyro's default, not a
saddle), scaled by √½·init_sd; AutoMVN's ``scale_tril`` at the identity times ``init_sd``.  Eager
only (no ``--torch-compile``); guide parameters are kept on the guide module
(``pyro.settings module_local_params``), not in Pyro's global parameter store.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import jax
import numpy as np
import numpyro.distributions as ndist

from hierbench.datasets.base import HierModel, ParamError, flatten_groups
from hierbench.methods import _gaussian as g
from hierbench.methods.base import Data, Draws, Method, TorchLoss, refuse_full_rank, train_config
from hierbench.methods.batches import FullData

DATASETS = ("hier-linear", "hier-logistic")
GUIDES = ("AutoNormal", "AutoLowRankMultivariateNormal", "AutoMultivariateNormal")
INSTALL_HINT = "pip install pyro-ppl==1.9.2 (in requirements/lock.txt)"


def hier_regression(rows: dict[str, Any], num_groups: int, logistic: bool) -> None:
    """The Pyro model of hier-linear (``logistic=False``) or hier-logistic, on flat rows."""
    import pyro
    import pyro.distributions as dist

    x, y, group = rows["x"], rows["y"], rows["group"]
    zero, one = x.new_zeros(()), x.new_ones(())
    theta = pyro.sample("theta", dist.Normal(zero, one).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("groups", num_groups):
        z = pyro.sample("z", dist.Normal(theta, one).to_event(1))
    eta = (x * z[..., group, :]).sum(-1)
    with pyro.plate("rows", y.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=eta) if logistic else dist.Normal(eta, one), obs=y)


def gaussian_params(guide: Any) -> dict[str, np.ndarray]:
    """A fitted guide's Gaussian over w = (θ, vec z), as numpy: ``loc`` plus ``scale`` (AutoNormal),
    ``scale_tril`` (AutoMultivariateNormal) or ``cov_factor`` and ``cov_diag`` (AutoLowRank)."""
    import torch

    with torch.no_grad():
        if type(guide).__name__ == "AutoNormal":
            pairs = [guide._get_loc_and_scale(name) for name in ("theta", "z")]
            loc = torch.cat([p[0].reshape(-1) for p in pairs])
            scale = torch.cat([p[1].reshape(-1) for p in pairs])
            out = {"loc": loc, "scale": scale}
        else:
            q = guide.get_posterior()
            if type(guide).__name__ == "AutoMultivariateNormal":
                out = {"loc": q.loc, "scale_tril": q.scale_tril}
            else:
                out = {"loc": q.loc, "cov_factor": q.cov_factor, "cov_diag": q.cov_diag}
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


def q_of(params: dict[str, Any]) -> ndist.Distribution:
    """:func:`gaussian_params`'s Gaussian as a (JAX) numpyro distribution."""
    if "scale" in params:
        return ndist.Normal(params["loc"], params["scale"]).to_event(1)
    if "scale_tril" in params:
        return ndist.MultivariateNormal(params["loc"], scale_tril=params["scale_tril"])
    return ndist.LowRankMultivariateNormal(params["loc"], params["cov_factor"], params["cov_diag"])


def _make(model: HierModel, guide_name: str, cfg: Any, guide_kwargs: dict, **config: Any) -> Method:
    if model.name not in DATASETS:
        raise ParamError(
            f"the Pyro peers have native models of {', '.join(DATASETS)} only, not {model.name!r}"
        )
    if cfg.stl:
        raise ParamError("stl=True: Pyro's Trace_ELBO has no sticking-the-landing estimator")
    try:
        import pyro
    except ImportError as err:
        from hierbench.methods.base import Unavailable

        raise Unavailable(f"Pyro is not installed ({err}); {INSTALL_HINT}") from None
    logistic = model.name == "hier-logistic"
    flat = flatten_groups(model.data)
    shape = (model.dim_global, model.num_groups, model.dim_local)

    def setup(seed: int, runtime: Any) -> Any:
        from pyro.infer import Trace_ELBO, autoguide
        from pyro.infer.autoguide.initialization import init_to_feasible

        pyro.settings.set(module_local_params=True)  # parameters on the guide, not in the global store
        pyro.set_rng_seed(seed)
        rows = {k: runtime.tensor(v) for k, v in flat.items()}

        def pyro_model(rows: dict[str, Any]) -> None:
            hier_regression(rows, model.num_groups, logistic)

        guide = getattr(autoguide, guide_name)(pyro_model, init_loc_fn=init_to_feasible, **guide_kwargs)
        guide(rows)  # creates and initializes the parameters
        elbo = Trace_ELBO(num_particles=cfg.num_samples, vectorize_particles=True, max_plate_nesting=1)
        return types.SimpleNamespace(model=pyro_model, guide=guide, rows=rows, elbo=elbo)

    def loss(state: Any) -> Any:
        return state.elbo.differentiable_loss(state.model, state.guide, state.rows)

    spec = TorchLoss(
        setup,
        loss,
        lambda state: list(state.guide.parameters()),
        lambda state: gaussian_params(state.guide),
        cfg,
    )

    def refuse(*args: Any) -> Any:
        raise ParamError(f"pyro-* peers run on the torch backend only: --backend torch ({guide_name})")

    def sample(key: jax.Array, params: Any, data: Data, num_draws: int) -> Draws:
        q = q_of(params)
        w = q.sample(key, (num_draws,))
        theta, z = g.split_joint(w, *shape)
        return Draws(theta, z, q.log_prob(w))

    batches = FullData(model)
    resolved = (
        dataclasses.asdict(cfg)
        | batches.describe()
        | {"gaussian_q": True, "guide": guide_name, "pyro_version": pyro.__version__, "backend_only": "torch"}
        | config
    )
    return Method(refuse, refuse, sample, resolved, batches=batches, torch=spec)


def make_autonormal(model: HierModel, *, init_sd: float = 0.1, stl: bool = False, **train) -> Method:
    """Pyro SVI, AutoNormal on the native Pyro model (hier-linear/-logistic); torch backend; full data.

    Parameters
    ----------
    init_sd : float
        Initial scale of every coordinate (``AutoNormal(init_scale=)``).
    stl : bool
        Must stay False (Pyro's ``Trace_ELBO`` has no sticking-the-landing estimator).
    **train
        :class:`~hierbench.methods.base.TrainConfig` fields (steps, lr, schedule, num_samples, dtype).
    """
    cfg = train_config(train | {"stl": stl})
    return _make(model, "AutoNormal", cfg, {"init_scale": float(init_sd)}, init_sd=init_sd)


def make_autolowrank(
    model: HierModel, *, rank: int = 5, init_sd: float = 0.1, stl: bool = False, **train
) -> Method:
    """Pyro SVI, AutoLowRankMultivariateNormal (rank r) on the native Pyro model; torch backend.

    Peer of ``lowrank`` (same rank); Pyro's own factor initialization (module docstring).
    """
    from hierbench.datasets.base import check_positive_int

    cfg = train_config(train | {"stl": stl})
    rank = check_positive_int("rank", rank)
    return _make(
        model,
        "AutoLowRankMultivariateNormal",
        cfg,
        {"init_scale": float(init_sd), "rank": rank},
        rank=rank,
        init_sd=init_sd,
    )


def make_automvn(
    model: HierModel,
    *,
    init_sd: float = 0.1,
    max_dim: int = 2000,
    lr: float = 3e-3,
    stl: bool = False,
    **train,
) -> Method:
    """Pyro SVI, AutoMultivariateNormal on the native Pyro model; torch backend; refused above max_dim.

    Peer of ``dense`` with its defaults (peak learning rate 3e-3, ``max_dim``).
    """
    cfg = train_config(train | {"lr": lr, "stl": stl})
    dim = g.joint_dim(model)
    refuse_full_rank("pyro-automvn", dim, max_dim)
    return _make(
        model, "AutoMultivariateNormal", cfg, {"init_scale": float(init_sd)}, init_sd=init_sd, max_dim=max_dim
    )
