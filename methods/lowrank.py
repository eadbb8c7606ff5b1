"""Low-rank-plus-diagonal Gaussian VI (Ong, Nott & Smith 2018): q = N(m, diag(s²) + F Fᵀ).

F is D×r.  Draws cost O(D·r); log q uses the Woodbury identity and the matrix determinant lemma
through the r×r capacitance matrix I + Fᵀ diag(s⁻²) F, so nothing D×D is ever formed.
"""

from __future__ import annotations

import jax
import numpy as np

from hierbench.datasets.base import HierModel, ParamError, check_positive_int
from hierbench.methods import _gaussian as g
from hierbench.methods._ops import device, namespace, softplus, solve_triangular
from hierbench.methods.base import Family, Method, train_config
from hierbench.methods.vi import make_vi


def make(
    model: HierModel, *, rank: int = 5, init_sd: float = 0.1, init_factor: float = 0.01, **train
) -> Method:
    """Diagonal plus rank-r factor covariance over all of θ and z; full data."""
    cfg = train_config(train)
    rank = check_positive_int("rank", rank)
    if rank > g.joint_dim(model):
        raise ParamError(f"rank={rank} is more than the dimension {g.joint_dim(model)} of (θ, z)")
    family = build_family(model, rank, init_sd, init_factor)
    return make_vi(model, family, cfg, rank=rank, init_sd=init_sd, init_factor=init_factor)


def build_family(model: HierModel, rank: int = 5, init_sd: float = 0.1, init_factor: float = 0.01) -> Family:
    """The low-rank-plus-diagonal family over (θ, z), its mean, softplus-inverse sd and factor rows kept
    as a global (θ) and a local (z) block (:func:`~hierbench.methods._gaussian.block_family`)."""
    dim = g.joint_dim(model)
    dims = {"global": model.dim_global, "local": dim - model.dim_global}

    def init_params(key):
        # A zero factor is a saddle of the ELBO; start it small and random.
        factor = init_factor * jax.random.normal(key, (dim, rank))
        rows = {"global": factor[: dims["global"]], "local": factor[dims["global"] :]}
        params = {f"mean_{b}": np.zeros(n) for b, n in dims.items()}
        params |= {f"raw_sd_{b}": np.full(n, g.softplus_inv(init_sd)) for b, n in dims.items()}
        return params | {f"factor_{b}": rows[b] for b in dims}

    def draw_blocks(params, eps):
        *eps_d, eps_r = eps
        return tuple(
            params[f"mean_{b}"] + softplus(params[f"raw_sd_{b}"]) * e + eps_r @ params[f"factor_{b}"].T
            for b, e in zip(dims, eps_d, strict=True)
        )

    def joined(params, name):
        xp = namespace(params[f"{name}_global"])
        return xp.concat([params[f"{name}_global"], params[f"{name}_local"]], axis=0)

    def log_q_blocks(params, theta, z):
        xp = namespace(theta)
        u = xp.concat([theta - params["mean_global"], z - params["mean_local"]], axis=-1)
        sd = softplus(joined(params, "raw_sd"))
        f_scaled = joined(params, "factor") / sd[:, None]  # diag(s⁻¹) F
        u_scaled = u / sd
        cap = xp.eye(rank, dtype=u.dtype, device=device(u)) + f_scaled.T @ f_scaled  # I + Fᵀ D⁻¹ F
        cap_chol = xp.linalg.cholesky(cap)
        a = solve_triangular(cap_chol, (u_scaled @ f_scaled).T, lower=True)
        quad = xp.sum(u_scaled**2, axis=-1) - xp.sum(a**2, axis=0)
        log_det = 2.0 * xp.sum(xp.log(sd)) + 2.0 * xp.sum(xp.log(xp.linalg.diagonal(cap_chol)))
        return -0.5 * (quad + log_det + dim * g.LOG_2PI)

    return g.block_family(
        model,
        init_params,
        draw_blocks,
        log_q_blocks,
        lambda s: [(s, dims["global"]), (s, dims["local"]), (s, rank)],
    )
