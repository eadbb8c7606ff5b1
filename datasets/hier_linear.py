r"""Conjugate hierarchical linear regression (Agrawal & Domke, NeurIPS 2021, synthetic setting).

Generative process, for groups i = 1..N and observations j = 1..n_i::

    θ            ~ N(0, I_d)                      global,  θ ∈ R^d
    z_i | θ      ~ N(θ, I_d)                      local,   z_i ∈ R^d
    x_ij         ~ N(0, I_d)                      covariates (not modelled)
    y_ij | z_i   ~ N(x_ijᵀ z_i, 1)

with n_i = n, or n_i = max(1, Poisson(n)) when ``ragged``.  Everything is Gaussian, so the
posterior is exact (:func:`exact_posterior`).  Writing X_i (n_i × d) and y_i for group i's rows,
P_i = I + X_iᵀX_i and b_i = X_iᵀy_i::

    z_i | θ, y ~ N(P_i⁻¹(θ + b_i), P_i⁻¹)
    θ | y      ~ N(Λ⁻¹h, Λ⁻¹),   Λ = I + Σ_i (I − P_i⁻¹),   h = Σ_i P_i⁻¹b_i
    log p(y)   = Σ_i [−½ y_iᵀy_i + ½ b_iᵀP_i⁻¹b_i − ½ log|P_i| − (n_i/2) log 2π] − ½ log|Λ| + ½ hᵀΛ⁻¹h

(integrate z_i out of N(z_i; θ, I) N(y_i; X_i z_i, I), which leaves a Gaussian factor in θ
with precision I − P_i⁻¹ and linear term P_i⁻¹b_i, then integrate θ against its N(0, I) prior).

Data are drawn from ``numpy.random.default_rng(seed)`` in this fixed order: the group sizes
(only when ragged), θ (d), the z_i − θ offsets (N × d), the covariates of all observations
(Σn_i × d, group by group), then the likelihood noise (Σn_i).  The hierarchy and the covariates
are shared with :mod:`hierbench.datasets.hier_logistic`, which only swaps the likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace
from scipy.linalg import solve_triangular

from .base import (
    LOG_2PI,
    Array,
    ExactGaussianPosterior,
    HierModel,
    ParamError,
    check_data_size,
    check_positive_int,
    coerce_data,
    flatten_groups,
    group_sizes,
    normal_logpdf,
    pad_groups,
)

# Draws y (flat, Σn_i) from the linear predictors x_ijᵀz_i (flat, Σn_i), continuing the rng stream.
DrawY = Callable[[np.random.Generator, np.ndarray], np.ndarray]


class Simulation(NamedTuple):
    """A simulated data set with the true parameters that generated it."""

    params: dict[str, Any]  # validated data params
    data: dict[str, np.ndarray]  # padded x (N, n_max, d), y (N, n_max), mask (N, n_max)
    theta: np.ndarray  # (d,)
    z: np.ndarray  # (N, d)


def validate_params(N: Any, n: Any, d: Any, ragged: Any, seed: Any) -> dict[str, Any]:
    """Check the data params of a hierarchical regression and return them as a dict."""
    params = {
        "N": check_positive_int("N (number of groups)", N),
        "n": check_positive_int("n (observations per group)", n),
        "d": check_positive_int("d (dimension)", d),
    }
    if not isinstance(ragged, (bool, np.bool_)):
        raise ParamError(f"ragged must be a bool, got {ragged!r}")
    params["ragged"] = bool(ragged)
    params["seed"] = check_positive_int("seed", seed, minimum=0)
    # float64 x (N, n_max, d), y and mask, plus the flat rows and products made while simulating
    # (~2× the padded arrays; ragged groups pad to about n + 5√n)
    n_max = params["n"] + (5 * params["n"] ** 0.5 + 5 if params["ragged"] else 0)
    check_data_size(
        3 * 8 * params["N"] * n_max * (params["d"] + 2), f"hier-linear data with N={params['N']:,}"
    )
    return params


def shape(N: int = 100, n: int = 20, d: int = 10, ragged: bool = False, seed: int = 0) -> dict[str, int]:
    """The model's size from its parameters alone (no data): N groups, θ ∈ R^d, z_i ∈ R^d."""
    return {"num_groups": N, "dim_global": d, "dim_local": d}


def simulate_regression(params: dict[str, Any], draw_y: DrawY) -> Simulation:
    """Draw the hierarchy, the covariates and (via ``draw_y``) the responses; see module docstring."""
    N, n, d = params["N"], params["n"], params["d"]
    rng = np.random.default_rng(params["seed"])
    sizes = group_sizes(rng, N, n, params["ragged"])
    theta = rng.standard_normal(d)
    z = theta + rng.standard_normal((N, d))
    x = rng.standard_normal((int(sizes.sum()), d))
    group = np.repeat(np.arange(N), sizes)
    eta = np.einsum("od,od->o", x, z[group])  # x_ijᵀ z_i, flat
    y = np.asarray(draw_y(rng, eta), dtype=np.float64)
    (x_pad, y_pad), mask = pad_groups(sizes, x, y)
    return Simulation(params, {"x": x_pad, "y": y_pad, "mask": mask}, theta, z)


def log_prior_global(theta: Array) -> Array:
    """log N(θ | 0, I): θ ``(..., G)`` -> ``(...)``."""
    xp = array_namespace(theta)
    return xp.sum(normal_logpdf(theta, xp.zeros_like(theta)), axis=-1)


def regression_terms(
    theta: Array, z: Array, data: dict[str, Array]
) -> tuple[Any, Array, Array, Array, Array]:
    """Pieces every hierarchical regression's ``log_local`` needs.

    Returns ``(xp, log N(z | θ, I), η, y, mask)`` with the linear predictors η_j = x_jᵀz of shape
    ``(..., n_max)``; ``data`` is first moved to z's namespace, dtype and device.
    """
    xp = array_namespace(theta, z)
    data = coerce_data(data, z)
    log_prior = xp.sum(normal_logpdf(z, theta), axis=-1)
    # matmul keeps memory at (..., n_max) instead of materialising (..., n_max, d) products.
    eta = xp.matmul(data["x"], z[..., None])[..., 0]
    return xp, log_prior, eta, data["y"], data["mask"]


def log_local(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(z | θ, I) + Σ_j mask_j log N(y_j | x_jᵀz, 1), broadcasting as in :mod:`.base`."""
    xp, log_prior, eta, y, mask = regression_terms(theta, z, data)
    return log_prior + xp.sum(mask * normal_logpdf(y, eta), axis=-1)


def log_lik(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """Σ_j mask_j log N(y_j | x_jᵀz, 1): the observation terms of :func:`log_local`."""
    xp, _, eta, y, mask = regression_terms(theta, z, data)
    return xp.sum(mask * normal_logpdf(y, eta), axis=-1)


def _draw_gaussian_y(rng: np.random.Generator, eta: np.ndarray) -> np.ndarray:
    return eta + rng.standard_normal(eta.shape)


def exact_posterior(data: dict[str, np.ndarray]) -> ExactGaussianPosterior:
    """Exact posterior and log evidence (formulas in the module docstring).

    O(N·n·d² + N·d³) time and O(N·d²) memory: batched Cholesky factorisations of the N
    d × d matrices P_i, never a dense (N·d)² matrix.
    """
    mask = data["mask"]
    x = data["x"] * mask[..., None]  # padded rows are zero already; be safe
    y = data["y"] * mask
    num_groups, d = x.shape[0], x.shape[-1]
    eye = np.eye(d)

    prec = eye + np.swapaxes(x, -1, -2) @ x  # P_i
    b = np.einsum("inj,in->ij", x, y)  # b_i
    chol = np.linalg.cholesky(prec)
    # L_i⁻¹ by numpy's batched (C-looped) solve; scipy's solve_triangular loops over the batch in Python.
    chol_inv = np.linalg.solve(chol, np.broadcast_to(eye, prec.shape))
    cov = np.swapaxes(chol_inv, -1, -2) @ chol_inv  # P_i⁻¹ = L_i⁻ᵀ L_i⁻¹, symmetric by construction
    shift = np.einsum("ijk,ik->ij", cov, b)  # P_i⁻¹ b_i
    whitened_b = np.einsum("ijk,ik->ij", chol_inv, b)  # L_i⁻¹ b_i, so b_iᵀP_i⁻¹b_i = |L_i⁻¹ b_i|²
    logdet_prec = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)

    glob_prec = (num_groups + 1) * eye - cov.sum(0)  # Λ = I + Σ_i (I − P_i⁻¹)
    h = shift.sum(0)
    glob_chol = np.linalg.cholesky(glob_prec)
    glob_chol_inv = solve_triangular(glob_chol, eye, lower=True)
    glob_cov = glob_chol_inv.T @ glob_chol_inv
    whitened_h = glob_chol_inv @ h

    log_evidence = (
        np.sum(-0.5 * np.sum(y * y, -1) + 0.5 * np.sum(whitened_b**2, -1) - 0.5 * logdet_prec)
        - 0.5 * mask.sum() * LOG_2PI
        - np.log(np.diag(glob_chol)).sum()
        + 0.5 * whitened_h @ whitened_h
    )
    return ExactGaussianPosterior(
        global_mean=glob_cov @ h,
        global_cov=glob_cov,
        local_shift=shift,
        local_gain=cov,
        local_cov=cov.copy(),
        log_evidence=float(log_evidence),
    )


def regression_model(
    name: str,
    sim: Simulation,
    log_local: Callable[[Array, Array, dict[str, Array]], Array],
    exact: ExactGaussianPosterior | None = None,
    log_lik: Callable[[Array, Array, dict[str, Array]], Array] | None = None,
) -> HierModel:
    """Wrap a simulated hierarchical regression (prior N(0, I), z_i ~ N(θ, I)) as a HierModel."""
    d = sim.params["d"]
    return HierModel(
        name=name,
        num_groups=sim.params["N"],
        dim_global=d,
        dim_local=d,
        data=sim.data,
        log_prior_global=log_prior_global,
        log_local=log_local,
        params=sim.params,
        exact=exact,
        global_names=tuple(f"theta[{k + 1}]" for k in range(d)),  # 1-based, Stan style
        natural=natural,
        stan_data=stan_data(sim.data),
        log_lik=log_lik,
    )


def natural(theta: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """θ ``(S, d)`` and z ``(S, N, d)`` under the names ``datasets/stan/hier_*.stan`` outputs.

    The parameterization is already the natural one; flattened (:func:`~.base.flat_names`) these
    are ``theta[k]`` (= ``global_names``) and ``z[i,k]``.
    """
    return {"theta": theta, "z": z}


def stan_data(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """The data block of ``datasets/stan/hier_linear.stan`` and ``hier_logistic.stan``.

    Long format, one row per (unpadded) observation, group by group: ``N``, ``d``, ``M`` (total
    observations), ``group`` (1-based), ``x`` ``(M, d)`` and ``y`` ``(M,)``.
    """
    flat = flatten_groups(data)
    return {
        "N": int(data["x"].shape[0]),
        "d": int(data["x"].shape[-1]),
        "M": int(flat["y"].shape[0]),
        "group": flat["group"] + 1,
        "x": flat["x"],
        "y": flat["y"],
    }


def simulate(N: int = 100, n: int = 20, d: int = 10, ragged: bool = False, seed: int = 0) -> Simulation:
    """Simulate hier-linear data together with the true θ and z (same draws as :func:`make`)."""
    return simulate_regression(validate_params(N, n, d, ragged, seed), _draw_gaussian_y)


TEST_PARAMS: dict[str, object] = {"N": 6, "n": 5, "d": 3}  # a small, fast instance for the contract tests


def make(N: int = 100, n: int = 20, d: int = 10, ragged: bool = False, seed: int = 0) -> HierModel:
    """Conjugate hierarchical linear regression with an exact posterior (Agrawal & Domke 2021).

    Parameters
    ----------
    N : int
        Number of groups.
    n : int
        Observations per group (the Poisson mean when ``ragged``).
    d : int
        Dimension of θ and of each z_i.
    ragged : bool
        Draw group sizes as max(1, Poisson(n)) instead of all n.
    seed : int
        Seed of the numpy generator that draws the data (>= 0).

    Returns
    -------
    HierModel
        The model, data padded to ``(N, n_max, ...)`` with a mask, and ``exact`` posterior.

    Raises
    ------
    ParamError
        If a parameter has the wrong type or range.
    """
    sim = simulate(N, n, d, ragged, seed)
    return regression_model("hier-linear", sim, log_local, exact_posterior(sim.data), log_lik)
