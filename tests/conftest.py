"""Shared fixtures: small models and a fast run helper."""

from __future__ import annotations

import jax
import pytest

from hierbench.datasets import DATASETS, small_params

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def linear10():
    from hierbench.registry import build_model

    return build_model("hier-linear", {"N": 10, "n": 20, "d": 10, "seed": 0})


# Data params of a small, fast instance of every registered dataset: each declares its own
# (``TEST_PARAMS`` beside its ``make``), so a new dataset needs no line here.
SMALL_DATA_PARAMS: dict[str, dict] = {name: small_params(name) for name in DATASETS}
