"""Gaussian building blocks shared by the families: parameter maps, draws, log densities.

Written once against the array API (see :mod:`hierbench.methods._ops` for the four operations the
standard lacks), so JAX and torch evaluate the same functions.  Draws take their standard normals
``eps`` as an argument: the backend draws them (``jax.random.normal`` from split keys, or
``torch.randn`` from a generator), so every function here is a pure function of arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierbench.methods import _ops
from hierbench.methods._ops import einsum, namespace, softplus

LOG_2PI = math.log(2.0 * math.pi)
Array = Any


def softplus_inv(y: float) -> float:
    """Inverse of softplus, for initializing a scale at ``y``."""
    return y + math.log(-math.expm1(-y))


def chol_from_raw(raw: Array) -> Array:
    """Lower-triangular Cholesky factor with a softplus-positive diagonal; batched over leading axes."""
    xp = namespace(raw)
    diag = softplus(xp.linalg.diagonal(raw))
    eye = xp.eye(raw.shape[-1], dtype=raw.dtype, device=_ops.device(raw))
    return xp.tril(raw, k=-1) + diag[..., :, None] * eye


def scaled_chol_from_raw(raw: Array, gain: float = 1.0) -> Array:
    """Lower-triangular factor ``diag(s) · U``: row scales s = softplus(raw's diagonal) times a unit
    lower-triangular U whose strictly lower part is ``gain`` × raw's; batched over leading axes.

    Row k of the factor is s_k (e_k + u_k), so an off-diagonal parameter is measured in units of its
    row's scale: an optimizer step of a given size changes the factor by the same fraction whatever
    that scale (see :mod:`hierbench.methods.branch` for why that matters).  A constant ``gain`` < 1
    makes Adam's (about lr-sized) steps on the raw entries steps of gain × lr on U: U's own learning
    rate without a second optimizer (:mod:`hierbench.methods.dense` uses it).  Same initial value as
    :func:`chol_from_raw` from :func:`raw_chol_init`; the inverse map is :func:`raw_from_scaled_chol`."""
    xp = namespace(raw)
    scale = softplus(xp.linalg.diagonal(raw))
    eye = xp.eye(raw.shape[-1], dtype=raw.dtype, device=_ops.device(raw))
    return scale[..., :, None] * (gain * xp.tril(raw, k=-1) + eye)


def raw_from_scaled_chol(chol: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """The raw parameter whose :func:`scaled_chol_from_raw` (with the same ``gain``) is the
    lower-triangular ``chol`` (positive diagonal); numpy, batched over leading axes."""
    chol = np.asarray(chol, dtype=np.float64)
    diag = np.diagonal(chol, axis1=-2, axis2=-1)
    out = np.tril(chol / diag[..., :, None], -1) / gain
    k = np.arange(chol.shape[-1])
    out[..., k, k] = diag + np.log(-np.expm1(-diag))
    return out


FACTORS = {"cholesky": chol_from_raw, "scaled": scaled_chol_from_raw}  # raw parameter -> factor L


def raw_chol_init(shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Raw parameter for :func:`chol_from_raw` giving ``scale * I`` (batched over leading shape);
    numpy float64 (initial values, cast to the training dtype by the caller)."""
    dim = shape[-1]
    return np.array(np.broadcast_to(softplus_inv(scale) * np.eye(dim), shape))


def affine_draw(mean: Array, chol: Array, eps: Array) -> Array:
    """``mean + chol @ eps`` for eps ``(S, ..., D)``, chol ``(..., D, D)``."""
    return mean + einsum("...ij,s...j->s...i", chol, eps)


def mvn_logpdf_chol(u: Array, chol: Array) -> Array:
    """log N(u | 0, chol cholᵀ) for residuals u ``(S, ..., D)`` and chol ``(..., D, D)`` -> ``(S, ...)``."""
    xp = namespace(u, chol)
    dim = u.shape[-1]
    rhs = xp.moveaxis(u, 0, -1)  # (..., D, S): one triangular solve for all draws
    r = _ops.solve_triangular(chol, rhs, lower=True)
    quad = xp.moveaxis(xp.sum(r * r, axis=-2), -1, 0)
    log_det = xp.sum(xp.log(xp.linalg.diagonal(chol)), axis=-1)
    return -0.5 * quad - log_det - 0.5 * dim * LOG_2PI


def diag_normal_logpdf(u: Array, sd: Array) -> Array:
    """Σ_k log N(u_k | 0, sd_k²) over the last axis."""
    xp = namespace(u, sd)
    r = u / sd
    return xp.sum(-0.5 * r * r - xp.log(sd) - 0.5 * LOG_2PI, axis=-1)


def split_joint(v: Array, dim_global: int, num_groups: int, dim_local: int) -> tuple[Array, Array]:
    """A joint draw ``(S, G + N·L)`` -> θ ``(S, G)``, z ``(S, N, L)``."""
    xp = namespace(v)
    return v[:, :dim_global], xp.reshape(v[:, dim_global:], (v.shape[0], num_groups, dim_local))


def join(theta: Array, z: Array) -> Array:
    """Inverse of :func:`split_joint`."""
    xp = namespace(theta, z)
    return xp.concat([theta, xp.reshape(z, (z.shape[0], -1))], axis=-1)


def joint_family(model, init_params, draw_vec, log_q_vec, noise_shapes):
    """Wrap a Gaussian over the joint vector (θ, z_1..z_N) as a :class:`~hierbench.methods.base.Family`.

    ``draw_vec(params, eps) -> (S, D)`` from the standard normals of ``noise_shapes(S)`` and
    ``log_q_vec(params, v) -> (S,)``.  Such a family does not factor over groups, so it is trained on
    full data.  For a family whose draw is cheap next to the likelihood, see :func:`block_family`.
    """
    from hierbench.methods.base import Family

    shape = (model.dim_global, model.num_groups, model.dim_local)

    def draw(params, eps, idx, data_b):
        return split_joint(draw_vec(params, eps), *shape)

    def log_q(params, theta, z, idx, data_b):
        xp = namespace(theta)
        return log_q_vec(params, join(theta, z)), xp.zeros((), dtype=theta.dtype, device=_ops.device(theta))

    return Family(init_params, lambda num_draws, num_groups: noise_shapes(num_draws), draw, log_q, False)


def block_family(model, init_params, draw_blocks, log_q_blocks, noise_shapes):
    """A Gaussian over (θ, z_1..z_N) whose parameters are kept in a global and a local block.

    ``draw_blocks(params, eps) -> (θ (S, G), z (S, N·L))`` from the standard normals of
    ``noise_shapes(S)`` (θ's first, then z's, then any others) and ``log_q_blocks(params, θ, z) -> (S,)``;
    trained on full data.  Why blocks and not one joint vector: slicing a joint draw into θ and z makes
    the gradient a ``pad`` of θ's cotangent to length D, and XLA:CPU fuses θ's reductions into that
    pad's loop, which then runs D times over them with masked loads past the end of their buffers.  On
    this machine that step was bimodal, 8× slower in one mode (mean-field at N = 1000, n = 100: ~125
    against ~15 ms, chunk by chunk, by where the buffers landed in memory; ``results/perf/``).  With
    blocks the gradient of each block is its own, and a joint quantity is a ``concat`` (whose gradient
    is a slice).
    """
    from hierbench.methods.base import Family

    shape = (model.num_groups, model.dim_local)

    def draw(params, eps, idx, data_b):
        theta, z = draw_blocks(params, eps)
        xp = namespace(theta)
        return theta, xp.reshape(z, (z.shape[0], *shape))

    def log_q(params, theta, z, idx, data_b):
        xp = namespace(theta)
        value = log_q_blocks(params, theta, xp.reshape(z, (z.shape[0], -1)))
        return value, xp.zeros((), dtype=theta.dtype, device=_ops.device(theta))

    return Family(init_params, lambda num_draws, num_groups: noise_shapes(num_draws), draw, log_q, False)


def joint_dim(model) -> int:
    """Length of the joint vector (θ, z_1..z_N)."""
    return model.dim_global + model.num_groups * model.dim_local


# --- branch-structured q(θ) ∏_i q(z_i | θ), shared by `branch` and `amortized` -----------------


def global_init(dim_global: int, init_sd: float) -> dict[str, np.ndarray]:
    """Dense Gaussian q(θ) = N(mean, L Lᵀ) starting at N(0, init_sd² I) (either factor map of
    :data:`FACTORS` gives that start)."""
    return {"g_mean": np.zeros(dim_global), "g_chol": raw_chol_init((dim_global, dim_global), init_sd)}


def branch_noise_shapes(dim_global: int, dim_local: int):
    """``noise_shapes`` of a branch-structured family: θ's normals ``(S, G)``, then z's ``(S, B, L)``."""
    return lambda num_draws, num_groups: [(num_draws, dim_global), (num_draws, num_groups, dim_local)]


def global_draw(params, eps: Array, to_chol=chol_from_raw) -> Array:
    """θ ``(S, G)`` from the dense q(θ), given standard normals ``(S, G)``; ``to_chol`` maps the raw
    factor parameter to L (one of :data:`FACTORS`)."""
    return affine_draw(params["g_mean"], to_chol(params["g_chol"]), eps)


def global_log_q(params, theta: Array, to_chol=chol_from_raw) -> Array:
    """log q(θ) ``(S,)``."""
    return mvn_logpdf_chol(theta - params["g_mean"], to_chol(params["g_chol"]))


def _conditional_mean(theta: Array, shift: Array, gain: Array) -> Array:
    return shift + einsum("blg,sg->sbl", gain, theta)


def conditional_draw(eps: Array, theta: Array, shift: Array, gain: Array, chol: Array) -> Array:
    """z_i = shift_i + gain_i θ + chol_i ε: ε ``(S, B, L)``, θ ``(S, G)``, shift ``(B, L)``, gain
    ``(B, L, G)``, chol ``(B, L, L)`` -> z ``(S, B, L)``.  (Callers may pass θ centred at q(θ)'s mean.)"""
    return affine_draw(_conditional_mean(theta, shift, gain), chol, eps)


def conditional_log_q(theta: Array, z: Array, shift: Array, gain: Array, chol: Array) -> Array:
    """Σ_i log N(z_i | shift_i + gain_i θ, chol_i chol_iᵀ) ``(S,)``."""
    xp = namespace(theta, z)
    return xp.sum(mvn_logpdf_chol(z - _conditional_mean(theta, shift, gain), chol), axis=-1)


def conditional_draw_prec(eps: Array, theta: Array, shift: Array, gain: Array, prec_chol: Array) -> Array:
    """As :func:`conditional_draw` but with q(z_i|θ) given by a precision Cholesky factor
    (Λ_i = P Pᵀ, so z = mean + P⁻ᵀ ε)."""
    xp = namespace(eps, theta)
    mean = _conditional_mean(theta, shift, gain)
    noise = _ops.solve_triangular(prec_chol, xp.moveaxis(eps, 0, -1), lower=True, transpose=True)  # (B, L, S)
    return mean + xp.moveaxis(noise, -1, 0)


def conditional_log_q_prec(theta: Array, z: Array, shift: Array, gain: Array, prec_chol: Array) -> Array:
    """Σ_i log N(z_i | shift_i + gain_i θ, (P_i P_iᵀ)⁻¹) ``(S,)``."""
    xp = namespace(theta, z)
    r = einsum("bji,sbj->sbi", prec_chol, z - _conditional_mean(theta, shift, gain))  # Pᵀ (z − mean)
    log_det = xp.sum(xp.log(xp.linalg.diagonal(prec_chol)), axis=-1)
    dim = z.shape[-1]
    return xp.sum(-0.5 * xp.sum(r * r, axis=-1) + log_det - 0.5 * dim * LOG_2PI, axis=-1)
