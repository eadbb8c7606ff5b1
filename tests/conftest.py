"""Shared fixtures: small models and a fast run helper."""

from __future__ import annotations

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def linear10():
    from hierbench.registry import build_model

    return build_model("hier-linear", {"N": 10, "n": 20, "d": 10, "seed": 0})
