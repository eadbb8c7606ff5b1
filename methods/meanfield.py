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
    """The mean-field family over (θ, z), started at N(0, init_sd² I); its mean and softplus-inverse
    sd are kept as a global (θ) and a local (z) block (:func:`~hierbench.methods._gaussian.block_family`)."""
    dims = {"global": model.dim_global, "local": g.joint_dim(model) - model.dim_global}

    def init_params(key):
        params = {f"mean_{b}": np.zeros(n) for b, n in dims.items()}
        return params | {f"raw_sd_{b}": np.full(n, g.softplus_inv(init_sd)) for b, n in dims.items()}

    def draw_blocks(params, eps):
        return tuple(
            params[f"mean_{b}"] + softplus(params[f"raw_sd_{b}"]) * e for b, e in zip(dims, eps, strict=True)
        )

    def log_q_blocks(params, theta, z):
        return sum(
            g.diag_normal_logpdf(v - params[f"mean_{b}"], softplus(params[f"raw_sd_{b}"]))
            for b, v in zip(dims, (theta, z), strict=True)
        )

    return g.block_family(
        model, init_params, draw_blocks, log_q_blocks, lambda s: [(s, dims["global"]), (s, dims["local"])]
    )
