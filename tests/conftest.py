"""Shared fixtures: small models and a fast run helper."""

from __future__ import annotations

import pytest

import hierbench._jax  # noqa: F401  (float64 on before any test makes an array)


@pytest.fixture(scope="session")
def linear10():
    from hierbench.registry import build_model

    return build_model("hier-linear", {"N": 10, "n": 20, "d": 10, "seed": 0})


# Data params of a small, fast instance of every registered dataset (test_datasets checks the keys
# match the registry, so a new dataset must add its line here).
SMALL_DATA_PARAMS: dict[str, dict] = {
    "hier-linear": {"N": 6, "n": 5, "d": 3},
    "hier-logistic": {"N": 6, "n": 5, "d": 3},
    "eight-schools": {},
    "radon": {},
    "movielens-small": {"num_users": 6},
    "chem97": {"num_schools": 6},
    "movielens-synth": {"num_users": 6},
}
