"""Branch VI (Agrawal & Domke 2021): q(θ) ∏_i N(z_i | μ_i + A_i θ, L_i L_iᵀ), free per-group parameters.

q(θ) is a dense Gaussian.  The family matches the conditional-independence structure of a branch
model, so on the conjugate Gaussian hierarchy it contains the exact posterior.  It factorizes over
groups: with ``batch_groups=B`` each step touches B groups' terms, scaled by N/B.
"""

from __future__ import annotations

import numpy as np

from hierbench.datasets.base import HierModel
from hierbench.methods import _gaussian as g
from hierbench.methods._ops import namespace
from hierbench.methods.base import Family, Method, train_config
from hierbench.methods.vi import make_vi


def make(
    model: HierModel,
    *,
    batch_groups: int | None = None,
    max_strata: int | None = None,
    init_sd: float = 0.1,
    **train,
) -> Method:
    """Dense q(θ) with per-group conditional Gaussians q(z_i|θ); full data or batch_groups=B.

    ``max_strata``: size strata of a minibatch on ragged groups or a rating store (None: the batch
    source's default, :func:`~hierbench.methods.batches.default_batches`)."""
    cfg = train_config(train)
    family = build_family(model.num_groups, model.dim_global, model.dim_local, init_sd)
    return make_vi(model, family, cfg, batch_groups=batch_groups, max_strata=max_strata, init_sd=init_sd)


def build_family(num_groups: int, dim_global: int, dim_local: int, init_sd: float = 0.1) -> Family:
    """The branch family for N groups, θ ∈ R^G and z_i ∈ R^L, started at N(0, init_sd² I).

    Its local parameters are indexed by group id, so it needs only the dimensions, not the data (a
    model whose ratings are kept in a store, never padded, trains it the same way)."""
    n, dg, dl = num_groups, dim_global, dim_local

    def init_params(key):
        return g.global_init(dg, init_sd) | {
            "l_shift": np.zeros((n, dl)),
            "l_gain": np.zeros((n, dl, dg)),
            "l_chol": g.raw_chol_init((n, dl, dl), init_sd),
        }

    def local(params, idx):
        keys = ("l_shift", "l_gain", "l_chol")
        shift, gain, raw = (
            params[k] if idx is None else namespace(params[k]).take(params[k], idx, axis=0) for k in keys
        )
        return shift, gain, g.chol_from_raw(raw)

    # q(z_i | θ) = N(μ_i + A_i (θ − m), L_i L_iᵀ) with m = q(θ)'s mean: the same family as
    # μ_i + A_i θ, but μ_i is then z_i's marginal mean and does not chase m (measured: 10k steps,
    # N=10: KL 0.57 uncentred).
    def draw_local(params, eps, theta, idx, data_b):
        return g.conditional_draw(eps, theta - params["g_mean"], *local(params, idx))

    def draw(params, eps, idx, data_b):
        theta = g.global_draw(params, eps[0])
        return theta, draw_local(params, eps[1], theta, idx, data_b)

    def log_q(params, theta, z, idx, data_b):
        lq_local = g.conditional_log_q(theta - params["g_mean"], z, *local(params, idx))
        return g.global_log_q(params, theta), lq_local

    return Family(
        init_params,
        g.branch_noise_shapes(dg, dl),
        draw,
        log_q,
        factorizes_over_groups=True,
        draw_global=g.global_draw,
        draw_local=draw_local,
    )
