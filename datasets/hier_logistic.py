r"""Hierarchical logistic regression (the MovieLens-style benchmark, on synthetic data).

Generative process, for groups i = 1..N and observations j = 1..n_i::

    θ            ~ N(0, I_d)                      global,  θ ∈ R^d
    z_i | θ      ~ N(θ, I_d)                      local,   z_i ∈ R^d
    x_ij         ~ N(0, I_d)                      covariates (not modelled)
    y_ij | z_i   ~ Bernoulli(σ(x_ijᵀ z_i)),       σ(t) = 1 / (1 + e^{−t})

with n_i = n, or n_i = max(1, Poisson(n)) when ``ragged``.  The hierarchy, the covariates and
the order of the random draws are those of :mod:`hierbench.datasets.hier_linear`; only the
last draw differs: y_ij = 1[u_ij < σ(x_ijᵀz_i)] with u_ij ~ Uniform(0, 1).  y is stored as
float64 0/1.  The log-likelihood uses the stable form

    log p(y | t) = y log σ(t) + (1 − y) log σ(−t) = y·t − log(1 + e^t),   log(1 + e^t) = logaddexp(0, t).

There is no closed-form posterior (``exact`` is None).
"""

from __future__ import annotations

import numpy as np

from . import hier_linear
from .base import Array, HierModel

validate_params = hier_linear.validate_params  # the same data params; checked cheaply before sweeps
shape = hier_linear.shape  # and the same sizes


def log_local(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(z | θ, I) + Σ_j mask_j log Bernoulli(y_j | σ(x_jᵀz)), broadcasting as in :mod:`.base`."""
    xp, log_prior, eta, y, mask = hier_linear.regression_terms(theta, z, data)
    return log_prior + _bernoulli_loglik(xp, eta, y, mask)


def log_lik(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """Σ_j mask_j log Bernoulli(y_j | σ(x_jᵀz)): the observation terms of :func:`log_local`."""
    xp, _, eta, y, mask = hier_linear.regression_terms(theta, z, data)
    return _bernoulli_loglik(xp, eta, y, mask)


def _bernoulli_loglik(xp, eta: Array, y: Array, mask: Array) -> Array:
    # y·t − softplus(t): finite for any t, unlike log(sigmoid(t)).
    return xp.sum(mask * (y * eta - xp.logaddexp(xp.zeros_like(eta), eta)), axis=-1)


def _draw_bernoulli_y(rng: np.random.Generator, eta: np.ndarray) -> np.ndarray:
    prob = 0.5 * (1.0 + np.tanh(0.5 * eta))  # σ(η) without overflow warnings
    return (rng.uniform(size=eta.shape) < prob).astype(np.float64)


def simulate(
    N: int = 100, n: int = 20, d: int = 10, ragged: bool = False, seed: int = 0
) -> hier_linear.Simulation:
    """Simulate hier-logistic data together with the true θ and z (same draws as :func:`make`)."""
    params = hier_linear.validate_params(N, n, d, ragged, seed)
    return hier_linear.simulate_regression(params, _draw_bernoulli_y)


TEST_PARAMS: dict[str, object] = {"N": 6, "n": 5, "d": 3}  # a small, fast instance for the contract tests


def make(N: int = 100, n: int = 20, d: int = 10, ragged: bool = False, seed: int = 0) -> HierModel:
    """Hierarchical logistic regression with Gaussian group effects (no exact posterior).

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
        The model with data padded to ``(N, n_max, ...)`` and a mask; ``exact`` is None.

    Raises
    ------
    ParamError
        If a parameter has the wrong type or range.
    """
    sim = simulate(N, n, d, ragged, seed)
    return hier_linear.regression_model("hier-logistic", sim, log_local, log_lik=log_lik)
