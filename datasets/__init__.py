"""Benchmark datasets: hierarchical models with their data, by name.

Each dataset is one module with a factory ``make(**data_params) -> HierModel`` (the contract is
in :mod:`hierbench.datasets.base`).  To add a dataset:

1. write ``datasets/<name>.py`` with ``make``; give ``make`` keyword params with defaults,
   validate them with :class:`~hierbench.datasets.base.ParamError`, and start its docstring with
   a one-line description (shown by `hierbench list`);
2. add one line ``"<name>": <module>.make`` to :data:`DATASETS` below.
"""

from __future__ import annotations

from collections.abc import Callable

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
