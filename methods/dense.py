"""Joint full-rank Gaussian VI: q(θ, z) = N(m, L Lᵀ) with a dense Cholesky factor.

Exact on a Gaussian target, but O(D²) parameters and memory and O(D²) work per draw for
D = G + N·L, so it is refused (status ``infeasible``) beyond ``max_dim``.

Sticking-the-landing is on by default only up to D = 128 (``stl=None``).  STL's path term adds
zero-mean noise (L⁻ᵀε)_i ε_j to every off-diagonal entry of L; Adam normalizes each coordinate, so
the D²/2 entries take lr-sized random steps until q is close enough to p for the noise to cancel.
Measured at D=1010 (hier-linear N=100, lr 3e-3): the diagonal stays ≈ 0.1 while off-diagonal row
norms reach 0.5 within 25 steps and cond(L) 1e15, and the ELBO estimate breaks down; lr 1e-3 and a
30% warm-up with the standard estimator did not prevent it.  Without STL the run is stable.  At
D=110 STL with lr 3e-3 reaches KL ≈ 1e-7.  On radon (D=175, a non-Gaussian posterior, where STL's
noise never vanishes) STL broke the factor down at lr 3e-3 (Var[log q] 10⁵¹× D/2: `diverged`), while
the standard estimator reached ELBO −1099.94 ± 0.05, the best of every family (10k steps); hence 128.
"""

from __future__ import annotations

import numpy as np

from hierbench.datasets.base import HierModel
from hierbench.methods import _gaussian as g
from hierbench.methods._ops import device, namespace
from hierbench.methods.base import Family, Infeasible, Method, train_config
from hierbench.methods.vi import make_vi

STL_MAX_DIM = 128  # default STL on up to this dimension; see the module docstring


def make(
    model: HierModel,
    *,
    init_sd: float = 0.1,
    max_dim: int = 2000,
    lr: float = 3e-3,
    stl: bool | None = None,
    **train,
) -> Method:
    """Dense (full-rank Cholesky) Gaussian over all of θ and z; full data; refused above max_dim."""
    # Adam at lr=1e-2 with STL diverges on a dense Cholesky (measured: N=10, D=110); 3e-3 lands.
    dim = g.joint_dim(model)
    if stl is None:
        stl = dim <= STL_MAX_DIM
    cfg = train_config(train | {"lr": lr, "stl": stl})
    if dim > max_dim:
        # parameters + gradient + two Adam moments, each D² numbers
        memory = 4 * dim * dim * (4 if cfg.dtype == "float32" else 8)
        raise Infeasible(
            f"dense needs a {dim}x{dim} Cholesky factor (~{memory / 2**20:,.0f} MiB with Adam state, "
            f"O(D^2) work per draw); dimension {dim} > max_dim={max_dim}",
            memory_bytes=memory,
            covariance_bytes=dim * dim * (4 if cfg.dtype == "float32" else 8),  # the D × D factor alone
        )

    family = build_family(model, init_sd)
    return make_vi(model, family, cfg, init_sd=init_sd, max_dim=max_dim)


def build_family(model: HierModel, init_sd: float = 0.1) -> Family:
    """The dense Gaussian family over the joint vector, started at N(0, init_sd² I)."""
    dim = g.joint_dim(model)

    def init_params(key):
        return {"mean": np.zeros(dim), "chol": g.raw_chol_init((dim, dim), init_sd)}

    def draw_chol(params, eps):
        chol = g.chol_from_raw(params["chol"])
        return chol, g.affine_draw(params["mean"], chol, eps[0])

    def draw_vec(params, eps):
        return draw_chol(params, eps)[1]

    def log_q_vec(params, v):
        return g.mvn_logpdf_chol(v - params["mean"], g.chol_from_raw(params["chol"]))

    shape = (model.dim_global, model.num_groups, model.dim_local)

    def draw_log_q(params, eps, idx, data_b):
        # Training without STL: log q(m + Lε) = −½‖ε‖² − Σ log L_kk − D/2 log 2π exactly, so the
        # O(S·D²) triangular solve of log_q_vec and its backward are not needed (measured at
        # D = 10,010: ~1 s of a 9 s step).  Same value and parameter gradient (tested).
        xp = namespace(eps[0])
        chol, w = draw_chol(params, eps)
        theta, z = g.split_joint(w, *shape)
        log_det = xp.sum(xp.log(xp.linalg.diagonal(chol)))
        log_q = -0.5 * xp.sum(eps[0] * eps[0], axis=-1) - log_det - 0.5 * dim * g.LOG_2PI
        return theta, z, log_q, xp.zeros((), dtype=log_q.dtype, device=device(log_q))

    family = g.joint_family(model, init_params, draw_vec, log_q_vec, lambda s: [(s, dim)])
    return family._replace(draw_log_q=draw_log_q)
