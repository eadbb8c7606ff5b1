"""The folder ``benchmarks/`` is the package ``hierbench``; ``datasets/`` and ``methods/`` are subpackages.

hierbench is a benchmark suite for approximate inference on hierarchical Bayesian models.  Data flows
one way: dataset → model → method → harness → record → report.  The map:

- :mod:`hierbench.datasets` (``datasets/``): the models and their data; :mod:`hierbench.methods`
  (``methods/``): the VI families, samplers and peers; :mod:`hierbench.registry`: names → factories;
- :mod:`hierbench.harness`: one run, timed fairly (loop, budget, JAX and torch backends);
  :mod:`hierbench.scoring`, :mod:`hierbench.accuracy`, :mod:`hierbench.reference`: scores against the
  truth; :mod:`hierbench.records`: the record schema and its one reader;
- :mod:`hierbench.suites` (plans in ``experiments/*.toml``, sweeps over them, the regression gate),
  :mod:`hierbench.bench`, :mod:`hierbench.peers`, :mod:`hierbench.torch_bench`,
  :mod:`hierbench.scale`: what runs grids of runs;
- :mod:`hierbench.reports`: records in, tables and figures out (``hierbench report``, the paper's
  figures in :mod:`hierbench.reports.paper`, time to target);
- :mod:`hierbench.perf`: the cost of one step against its analytic floor (``make perf``);
- :mod:`hierbench.cli` (``hierbench ...``) and :mod:`hierbench.api` (notebooks) on top; ``_io`` and
  ``_jax`` hold file plumbing and JAX settings.

For notebooks (:mod:`hierbench.api`)::

    import hierbench as hb
    model = hb.dataset("hier-linear", N=100)
    record = hb.run("amortized", model, steps=2000, seed=0)
    df = hb.read_records(["results/bench/records.jsonl"])
    hb.datasets(), hb.methods()          # name -> one-line description

The API is imported on first use (module ``__getattr__``), so ``import hierbench`` stays cheap and
does not load JAX.  ``hb.datasets`` and ``hb.methods`` are also the subpackages of those names: once
imported they are callable modules, so ``hb.datasets()`` lists the datasets either way.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"
__all__ = ["dataset", "datasets", "methods", "read_records", "run"]
_LISTINGS = ("datasets", "methods")  # API functions that share their name with a subpackage


class _ListingModule(types.ModuleType):
    """The subpackage ``hierbench.datasets`` / ``hierbench.methods``, callable as the API's listing."""

    def __call__(self) -> dict[str, str]:
        return getattr(importlib.import_module("hierbench.api"), self.__name__.rpartition(".")[2])()


class _Package(types.ModuleType):
    """This package: importing a listing subpackage makes that subpackage callable (see the docstring)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LISTINGS and type(value) is types.ModuleType:
            value.__class__ = _ListingModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in __all__:
        if name in _LISTINGS:  # the subpackage, callable (it is what `hierbench.datasets` must be)
            return importlib.import_module(f"{__name__}.{name}")
        return getattr(importlib.import_module("hierbench.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


sys.modules[__name__].__class__ = _Package  # before any subpackage is imported (and set on it)
