"""Mean-field Gaussian VI: q(θ, z) = N(m, diag(s²)) over the whole joint vector.

The cheapest family (O(G + N·L) parameters); it ignores every posterior correlation, so its KL is
bounded below by ½(Σ_k log Λ_kk − log det Λ) on a Gaussian target with precision Λ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hierbench.datasets.base import HierModel
from hierbench.methods import _gaussian as g
from hierbench.methods.base import Method, make_vi, train_config


def make(model: HierModel, *, init_sd: float = 0.1, **train) -> Method:
    """Mean-field (diagonal) Gaussian over all of θ and z; full data."""
    cfg = train_config(train)
    dim = g.joint_dim(model)

    def init_params(key):
        return {"mean": jnp.zeros(dim), "raw_sd": jnp.full(dim, g.softplus_inv(init_sd))}

    def draw_vec(params, key, num_draws):
        eps = jax.random.normal(key, (num_draws, dim), params["mean"].dtype)
        return params["mean"] + jax.nn.softplus(params["raw_sd"]) * eps

    def log_q_vec(params, v):
        return g.diag_normal_logpdf(v - params["mean"], jax.nn.softplus(params["raw_sd"]))

    family = g.joint_family(model, init_params, draw_vec, log_q_vec)
    return make_vi(model, family, cfg, init_sd=init_sd)
