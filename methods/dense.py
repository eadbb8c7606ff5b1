"""Joint full-rank Gaussian VI: q(θ, z) = N(m, C Cᵀ), C = diag(s) (I + U), U strictly lower-triangular.

Exact on a Gaussian target, but O(D²) parameters and memory and O(D²) work per draw for
D = G + N·L, so it is refused (status ``infeasible``) beyond ``max_dim``.

**Factor: row scale × unit lower-triangular, U's step ∝ 1/D.**  C comes from
:func:`~hierbench.methods._gaussian.scaled_chol_from_raw` (the map :mod:`~hierbench.methods.branch`
uses) with ``gain = factor_lr / lr``: Adam moves every raw entry by about lr a step, so U's entries
move by at most ``factor_lr`` = min(lr, 0.6 / D) (default).  STL is on at every dimension.  Why,
measured on hier-linear (d = 10, n = 20; 10,000 steps, lr 3e-3, STL, KL from the exact posterior):

* The softplus-diagonal Cholesky used before moves an off-diagonal entry by lr in absolute units,
  lr/s relative to its row's scale s; STL's path term gives those entries a zero-mean gradient that
  Adam normalizes to lr-sized steps, so with posterior scales ≈ 0.1-0.3 they random-walk to many times
  their row's scale.  At N = 10 (D = 110) that left KL 1.59, 16.6, 59.2, 18.0, 25.3 nats for seeds
  0-4.  Scaling the rows (U in units of s) lands: KL ≤ 4e-5 (Monte Carlo noise) for seeds 0, 1, 2, 3,
  7 (3 also on torch) and at n = 100 (seeds 4, 11); ``tests/methods/test_defaults.py`` holds
  seeds 0-4 to 0.05 on both backends.
* With U's step at lr, its D²/2 entries still random-walk once D is large: KL 149 at N = 50
  (D = 510), 1.7e4 or ``diverged`` (Var[log q] 1e68× D/2) at N = 100 (D = 1,010); lr 1e-3 for all
  parameters still left 49 there.  A smaller step on U alone lands: at N = 50 gains 0.2 / 0.1
  (U's step 6e-4 / 3e-4) gave KL 0.006 / 0.26 (too slow to move U), at N = 100 gain 0.3 gave
  9e-5 and 0.1 gave 0.30 (seed 0).  0.6 / D gives gain 0.39 at N = 50 and 0.2 at N = 100; at the
  CLI defaults they land (KL 1e-4 and −5e-4, Monte Carlo noise, for seeds 0 and 5 at N = 50; 0.005
  for seed 0 at N = 100, where the previous default, STL off above D = 128, left 17).  For D ≤ 200
  it is lr (gain 1).
* STL was off above D = 128 because on radon (D = 175, a non-Gaussian posterior) it broke the
  Cholesky factor down (``diverged``).  With this factor, STL at the defaults reaches ELBO −1099.57
  ± 0.04 there (seed 0), above the −1099.94 ± 0.05 of the previous default without STL.
* At D = 10,010 (N = 1,000, U's step 6e-5), 200 steps of the default optimizer stay finite: −ELBO
  2.03e5 → 1.09e5, row scales within [0.065, 0.17], largest ‖u_k‖ 0.09 (5-10 s a step on one shared
  CPU core; the CLI's process held 10 GB).
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
