"""Joint full-rank Gaussian VI: q(θ, z) = N(m, C Cᵀ), C = diag(s) (I + U), U strictly lower-triangular.

Exact on a Gaussian target, but O(D²) parameters and memory and O(D²) work per draw for
D = G + N·L, so it is refused (status ``infeasible``) beyond ``max_dim``.

PLACEHOLDER: measurements go here.
"""

from __future__ import annotations

import numpy as np

from hierbench.datasets.base import HierModel, ParamError
from hierbench.methods import _gaussian as g
from hierbench.methods._ops import device, namespace
from hierbench.methods.base import Family, Method, refuse_full_rank, train_config
from hierbench.methods.vi import make_vi

FACTOR_STEP = 0.6  # default peak step of U's entries: min(lr, FACTOR_STEP / D); module docstring


def make(
    model: HierModel,
    *,
    init_sd: float = 0.1,
    max_dim: int = 2000,
    lr: float = 3e-3,
    factor_lr: float | None = None,
    stl: bool = True,
    **train,
) -> Method:
    """Dense Gaussian (row scale × unit lower-triangular factor) over all of θ and z; full data.

    ``factor_lr``: the peak step of U's entries, in (0, lr] (None: min(lr, 0.6 / D)); refused
    (``infeasible``) above ``max_dim``."""
    dim = g.joint_dim(model)
    cfg = train_config(train | {"lr": lr, "stl": stl})
    if factor_lr is None:
        factor_lr = min(lr, FACTOR_STEP / dim)
    if not (isinstance(factor_lr, (int, float)) and 0 < factor_lr <= lr):
        raise ParamError(f"factor_lr must be a number in (0, lr={lr}], got {factor_lr!r}")
    itemsize = 4 if cfg.dtype == "float32" else 8
    # the raw parameter is a full D × D array (its upper triangle unused)
    refuse_full_rank("dense", dim, max_dim, itemsize, triangular=False, covariance_bytes=dim * dim * itemsize)
    family = build_family(model, init_sd, factor_lr / lr)
    return make_vi(model, family, cfg, init_sd=init_sd, max_dim=max_dim, factor_lr=factor_lr)


def build_family(model: HierModel, init_sd: float = 0.1, factor_gain: float = 1.0) -> Family:
    """The dense family over the joint vector, started at N(0, init_sd² I).

    Parameters: ``mean`` (D,) and ``chol`` (D, D), mapped to C = diag(s)(I + U) by
    :func:`~hierbench.methods._gaussian.scaled_chol_from_raw` with gain ``factor_gain``: Adam's
    steps on ``chol``'s strictly lower triangle are steps of ``factor_gain × lr`` on U.
    """
    dim = g.joint_dim(model)
    shape = (model.dim_global, model.num_groups, model.dim_local)

    def init_params(key):
        return {"mean": np.zeros(dim), "chol": g.raw_chol_init((dim, dim), init_sd)}

    def factor(params):
        return g.scaled_chol_from_raw(params["chol"], factor_gain)

    def draw_vec(params, eps):
        return g.affine_draw(params["mean"], factor(params), eps[0])

    def log_q_vec(params, v):
        return g.mvn_logpdf_chol(v - params["mean"], factor(params))

    def draw_log_q(params, eps, idx, data_b):
        # Training without STL: log q(m + Cε) = −½‖ε‖² − Σ log C_kk − D/2 log 2π exactly, so the
        # O(S·D²) triangular solve of log_q_vec and its backward are not needed (measured at
        # D = 10,010: ~1 s of a 9 s step).  Same value and parameter gradient (tested).
        xp = namespace(eps[0])
        chol = factor(params)
        theta, z = g.split_joint(g.affine_draw(params["mean"], chol, eps[0]), *shape)
        log_det = xp.sum(xp.log(xp.linalg.diagonal(chol)))
        log_q = -0.5 * xp.sum(eps[0] * eps[0], axis=-1) - log_det - 0.5 * dim * g.LOG_2PI
        return theta, z, log_q, xp.zeros((), dtype=log_q.dtype, device=device(log_q))

    family = g.joint_family(model, init_params, draw_vec, log_q_vec, lambda s: [(s, dim)])
    return family._replace(draw_log_q=draw_log_q)
