"""Mean-field Gaussian VI: q(θ, z) = N(m, diag(s²)) over the whole joint vector.

The cheapest family (O(G + N·L) parameters); it ignores every posterior correlation, so its KL is
bounded below by ½(Σ_k log Λ_kk − log det Λ) on a Gaussian target with precision Λ.
"""

from __future__ import annotations

import numpy as np

from hierbench.datasets.base import HierModel
from hierbench.methods import _gaussian as g
from hierbench.methods._ops import softplus
from hierbench.methods.base import Family, Method, train_config
from hierbench.methods.vi import make_vi


def make(model: HierModel, *, init_sd: float = 0.1, **train) -> Method:
    """Mean-field (diagonal) Gaussian over all of θ and z; full data."""
    cfg = train_config(train)
    return make_vi(model, build_family(model, init_sd), cfg, init_sd=init_sd)


def build_family(model: HierModel, init_sd: float = 0.1) -> Family:
    """The mean-field family over the joint vector, started at N(0, init_sd² I)."""
    dim = g.joint_dim(model)

    def init_params(key):
        return {"mean": np.zeros(dim), "raw_sd": np.full(dim, g.softplus_inv(init_sd))}

    def draw_vec(params, eps):
        return params["mean"] + softplus(params["raw_sd"]) * eps[0]

    def log_q_vec(params, v):
        return g.diag_normal_logpdf(v - params["mean"], softplus(params["raw_sd"]))

    return g.joint_family(model, init_params, draw_vec, log_q_vec, lambda s: [(s, dim)], split_noise=True)
