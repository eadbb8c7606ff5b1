"""Shared fixtures: small models and a fast run helper."""

from __future__ import annotations

import numpy as np
import pytest

import hierbench._jax  # noqa: F401  (float64 on before any test makes an array)
from hierbench.datasets import DATASETS, small_params


@pytest.fixture(scope="session")
def linear10():
    from hierbench.registry import build_model

    return build_model("hier-linear", {"N": 10, "n": 20, "d": 10, "seed": 0})


# Data params of a small, fast instance of every registered dataset: each declares its own
# (``TEST_PARAMS`` beside its ``make``), so a new dataset needs no line here.
SMALL_DATA_PARAMS: dict[str, dict] = {name: small_params(name) for name in DATASETS}


def optimal_meanfield_kl(model) -> float:
    """½(Σ_k log Λ_kk − log det Λ) for the joint posterior precision Λ of (θ, z).

    Λ is block-arrow: θθ block (1 + N)·I, z_i z_i blocks P_i = I + X_iᵀX_i, θ z_i blocks −I; its log det
    is Σ_i log det P_i + log det of the Schur complement, which is θ's marginal posterior precision.
    """
    ex = model.exact
    prec_local = np.linalg.inv(ex.local_cov)  # P_i
    diag = np.concatenate(
        [
            np.full(model.dim_global, 1.0 + model.num_groups),
            np.diagonal(prec_local, axis1=-2, axis2=-1).ravel(),
        ]
    )
    log_det = np.linalg.slogdet(np.linalg.inv(ex.global_cov))[1] + np.linalg.slogdet(prec_local)[1].sum()
    return 0.5 * (np.log(diag).sum() - log_det)
