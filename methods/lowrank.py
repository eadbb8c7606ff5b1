"""Low-rank-plus-diagonal Gaussian VI (Ong, Nott & Smith 2018): q = N(m, diag(s²) + F Fᵀ).

F is D×r.  Draws cost O(D·r); log q uses the Woodbury identity and the matrix determinant lemma
through the r×r capacitance matrix I + Fᵀ diag(s⁻²) F, so nothing D×D is ever formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hierbench.datasets.base import HierModel, check_positive_int
from hierbench.methods import _gaussian as g
from hierbench.methods.base import Method, make_vi, train_config


def make(
    model: HierModel, *, rank: int = 5, init_sd: float = 0.1, init_factor: float = 0.01, **train
) -> Method:
    """Diagonal plus rank-r factor covariance over all of θ and z; full data."""
    cfg = train_config(train)
    rank = check_positive_int("rank", rank)
    dim = g.joint_dim(model)

    def init_params(key):
        # A zero factor is a saddle of the ELBO; start it small and random.
        factor = init_factor * jax.random.normal(key, (dim, rank))
        return {"mean": jnp.zeros(dim), "raw_sd": jnp.full(dim, g.softplus_inv(init_sd)), "factor": factor}

    def draw_vec(params, key, num_draws):
        k1, k2 = jax.random.split(key)
        dt = params["mean"].dtype
        eps_d = jax.random.normal(k1, (num_draws, dim), dt)
        eps_r = jax.random.normal(k2, (num_draws, rank), dt)
        sd = jax.nn.softplus(params["raw_sd"])
        return params["mean"] + sd * eps_d + eps_r @ params["factor"].T

    def log_q_vec(params, v):
        u = v - params["mean"]
        sd = jax.nn.softplus(params["raw_sd"])
        f_scaled = params["factor"] / sd[:, None]  # diag(s⁻¹) F
        u_scaled = u / sd
        cap = jnp.eye(rank, dtype=u.dtype) + f_scaled.T @ f_scaled  # I + Fᵀ D⁻¹ F
        cap_chol = jnp.linalg.cholesky(cap)
        a = jax.scipy.linalg.solve_triangular(cap_chol, (u_scaled @ f_scaled).T, lower=True)
        quad = jnp.sum(u_scaled**2, axis=-1) - jnp.sum(a**2, axis=0)
        log_det = 2.0 * jnp.sum(jnp.log(sd)) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(cap_chol)))
        return -0.5 * (quad + log_det + dim * g.LOG_2PI)

    family = g.joint_family(model, init_params, draw_vec, log_q_vec)
    return make_vi(model, family, cfg, rank=rank, init_sd=init_sd, init_factor=init_factor)
