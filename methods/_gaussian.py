"""Gaussian building blocks shared by the families: parameter maps, draws, log densities."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def softplus_inv(y: float) -> float:
    """Inverse of softplus, for initializing a scale at ``y``."""
    return y + math.log(-math.expm1(-y))


def chol_from_raw(raw: jax.Array) -> jax.Array:
    """Lower-triangular Cholesky factor with a softplus-positive diagonal; batched over leading axes."""
    diag = jax.nn.softplus(jnp.diagonal(raw, axis1=-2, axis2=-1))
    return jnp.tril(raw, -1) + diag[..., :, None] * jnp.eye(raw.shape[-1], dtype=raw.dtype)


def raw_chol_init(shape: tuple[int, ...], scale: float) -> jax.Array:
    """Raw parameter for :func:`chol_from_raw` giving ``scale * I`` (batched over leading shape)."""
    dim = shape[-1]
    return jnp.broadcast_to(softplus_inv(scale) * jnp.eye(dim), shape)


def affine_draw(mean: jax.Array, chol: jax.Array, eps: jax.Array) -> jax.Array:
    """``mean + chol @ eps`` for eps ``(S, ..., D)``, chol ``(..., D, D)``."""
    return mean + jnp.einsum("...ij,s...j->s...i", chol, eps)


def mvn_logpdf_chol(u: jax.Array, chol: jax.Array) -> jax.Array:
    """log N(u | 0, chol cholᵀ) for residuals u ``(S, ..., D)`` and chol ``(..., D, D)`` -> ``(S, ...)``."""
    dim = u.shape[-1]
    rhs = jnp.moveaxis(u, 0, -1)  # (..., D, S): one triangular solve for all draws
    r = jax.lax.linalg.triangular_solve(chol, rhs, left_side=True, lower=True)
    quad = jnp.moveaxis(jnp.sum(r * r, axis=-2), -1, 0)
    log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * quad - log_det - 0.5 * dim * LOG_2PI


def diag_normal_logpdf(u: jax.Array, sd: jax.Array) -> jax.Array:
    """Σ_k log N(u_k | 0, sd_k²) over the last axis."""
    r = u / sd
    return jnp.sum(-0.5 * r * r - jnp.log(sd) - 0.5 * LOG_2PI, axis=-1)


def split_joint(
    v: jax.Array, dim_global: int, num_groups: int, dim_local: int
) -> tuple[jax.Array, jax.Array]:
    """A joint draw ``(S, G + N·L)`` -> θ ``(S, G)``, z ``(S, N, L)``."""
    return v[:, :dim_global], v[:, dim_global:].reshape(v.shape[0], num_groups, dim_local)


def join(theta: jax.Array, z: jax.Array) -> jax.Array:
    """Inverse of :func:`split_joint`."""
    return jnp.concatenate([theta, z.reshape(z.shape[0], -1)], axis=-1)


def joint_family(model, init_params, draw_vec, log_q_vec):
    """Wrap a Gaussian over the joint vector (θ, z_1..z_N) as a :class:`~hierbench.methods.base.Family`.

    ``draw_vec(params, key, S) -> (S, D)`` and ``log_q_vec(params, v) -> (S,)``.  Such a family does
    not factor over groups, so it is trained on full data.
    """
    from hierbench.methods.base import Family

    shape = (model.dim_global, model.num_groups, model.dim_local)

    def draw(params, key, num_draws, idx, data_b):
        return split_joint(draw_vec(params, key, num_draws), *shape)

    def log_q(params, theta, z, idx, data_b):
        return log_q_vec(params, join(theta, z)), jnp.zeros((), theta.dtype)

    return Family(init_params, draw, log_q, factorizes_over_groups=False)


def joint_dim(model) -> int:
    """Length of the joint vector (θ, z_1..z_N)."""
    return model.dim_global + model.num_groups * model.dim_local


# --- branch-structured q(θ) ∏_i q(z_i | θ), shared by `branch` and `amortized` -----------------


def global_init(dim_global: int, init_sd: float) -> dict[str, jax.Array]:
    """Dense Gaussian q(θ) = N(mean, L Lᵀ) starting at N(0, init_sd² I)."""
    return {"g_mean": jnp.zeros(dim_global), "g_chol": raw_chol_init((dim_global, dim_global), init_sd)}


def global_draw(params, key, num_draws: int) -> jax.Array:
    """θ ``(S, G)`` from the dense q(θ)."""
    dim = params["g_mean"].shape[0]
    eps = jax.random.normal(key, (num_draws, dim), params["g_mean"].dtype)
    return affine_draw(params["g_mean"], chol_from_raw(params["g_chol"]), eps)


def global_log_q(params, theta: jax.Array) -> jax.Array:
    """log q(θ) ``(S,)``."""
    return mvn_logpdf_chol(theta - params["g_mean"], chol_from_raw(params["g_chol"]))


def conditional_draw(key, theta, shift, gain, chol) -> jax.Array:
    """z_i = shift_i + gain_i θ + chol_i ε: θ ``(S, G)``, shift ``(B, L)``, gain ``(B, L, G)``,
    chol ``(B, L, L)`` -> z ``(S, B, L)``.  (Callers may pass θ centred at q(θ)'s mean.)"""
    mean = shift + jnp.einsum("blg,sg->sbl", gain, theta)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return affine_draw(mean, chol, eps)


def conditional_log_q(theta, z, shift, gain, chol) -> jax.Array:
    """Σ_i log N(z_i | shift_i + gain_i θ, chol_i chol_iᵀ) ``(S,)``."""
    mean = shift + jnp.einsum("blg,sg->sbl", gain, theta)
    return jnp.sum(mvn_logpdf_chol(z - mean, chol), axis=-1)


def conditional_draw_prec(key, theta, shift, gain, prec_chol) -> jax.Array:
    """As :func:`conditional_draw` but with q(z_i|θ) given by a precision Cholesky factor
    (Λ_i = P Pᵀ, so z = mean + P⁻ᵀ ε)."""
    mean = shift + jnp.einsum("blg,sg->sbl", gain, theta)
    eps = jnp.moveaxis(jax.random.normal(key, mean.shape, mean.dtype), 0, -1)  # (B, L, S)
    noise = jax.lax.linalg.triangular_solve(prec_chol, eps, left_side=True, lower=True, transpose_a=True)
    return mean + jnp.moveaxis(noise, -1, 0)


def conditional_log_q_prec(theta, z, shift, gain, prec_chol) -> jax.Array:
    """Σ_i log N(z_i | shift_i + gain_i θ, (P_i P_iᵀ)⁻¹) ``(S,)``."""
    mean = shift + jnp.einsum("blg,sg->sbl", gain, theta)
    r = jnp.einsum("bji,sbj->sbi", prec_chol, z - mean)  # Pᵀ (z − mean)
    log_det = jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    dim = z.shape[-1]
    return jnp.sum(-0.5 * jnp.sum(r * r, axis=-1) + log_det - 0.5 * dim * LOG_2PI, axis=-1)
