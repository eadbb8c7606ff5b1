"""Benchmark datasets: hierarchical models with their data, by name.

Each dataset is one module with a factory ``make(**data_params) -> HierModel`` (the contract is
in :mod:`hierbench.datasets.base`).  To add a dataset:

1. write ``datasets/<name>.py`` with ``make``; give ``make`` keyword params with defaults,
   validate them with :class:`~hierbench.datasets.base.ParamError`, and start its docstring with
   a one-line description (shown by `hierbench list`); beside it, ``TEST_PARAMS`` names the data
   params of a small, fast instance, which the contract tests (``tests/datasets/test_datasets.py``,
   ``tests/methods/test_methods.py``) build;
2. add one line ``"<name>": <module>.make`` to :data:`DATASETS` below.

A Stan program, ``datasets/stan/<name with '-' → '_'>.stan`` on ``model.stan_data``, is optional:
without one ``stan-nuts`` and the Stan VI peers record ``unavailable`` for the dataset.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from . import chem97, eight_schools, hier_linear, hier_logistic, movielens, movielens_synth, radon
from .base import HierModel

DATASETS: dict[str, Callable[..., HierModel]] = {
    "hier-linear": hier_linear.make,
    "hier-logistic": hier_logistic.make,
    "eight-schools": eight_schools.make,
    "radon": radon.make,
    "movielens-small": movielens.make,
    "chem97": chem97.make,
    "movielens-synth": movielens_synth.make,
}


def small_params(name: str) -> dict[str, Any]:
    """The data params of a small, fast instance of dataset ``name``: its module's ``TEST_PARAMS``.

    Raises
    ------
    KeyError
        If ``name`` is not registered.
    AttributeError
        If the dataset's module declares no ``TEST_PARAMS`` (the message says where to add it).
    """
    module = sys.modules[DATASETS[name].__module__]
    if not hasattr(module, "TEST_PARAMS"):
        raise AttributeError(
            f"dataset {name!r}: {module.__name__} declares no TEST_PARAMS; add the data params of a small, "
            f"fast instance beside make(), e.g. TEST_PARAMS = {{}} for the default size"
        )
    return dict(module.TEST_PARAMS)
