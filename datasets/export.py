"""Export a dataset for peers outside hierbench: its rows as npz, its Stan data as JSON beside the program.

``hierbench export --dataset D --out FILE.npz`` (:func:`export`) writes, for every dataset:

* ``FILE.npz``: the observed rows, flat (:func:`~hierbench.datasets.base.flatten_groups`): every
  per-observation array (``x``, ``y``; radon's ``floor``; chem97's ``gcse``, ``female``; eight schools'
  ``sigma``) with ``group`` (0-based), one row an observation; held-out rows (MovieLens) under
  ``test_<name>``; ``num_groups``; ``data_params`` (JSON: the dataset and the parameters that built it,
  so the same data can be rebuilt); ``stan_program`` (the program's file name, or "" without one).
  Plain arrays: ``numpy.load`` needs no pickle.
* ``FILE.stan.json`` and the Stan program beside it (``datasets/stan/<program>.stan``), where the dataset
  has one: the data block of that program, in CmdStan's JSON format, so Stan (or any peer reading it)
  runs the same posterior.  ``movielens-synth`` has movielens-small's model and takes its program.

Every Stan program keeps the normalizing constants, so its ``lp__`` equals our log joint at the same
unconstrained point (``tests/test_stan.py``).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import movielens
from .base import HierModel, flatten_groups

# datasets whose model is another dataset's Stan program: name -> (program file, its data from model.data)
SHARED_PROGRAMS: dict[str, tuple[str, Callable[[dict[str, np.ndarray]], dict[str, Any]]]] = {
    "movielens-synth": ("movielens_small.stan", movielens.stan_data),
}


def stan_export(model: HierModel) -> tuple[str, dict[str, Any]] | None:
    """The Stan program (file name under ``datasets/stan``) and its data for ``model``, or None."""
    if model.name in SHARED_PROGRAMS:
        program, build = SHARED_PROGRAMS[model.name]
        return program, build(model.data)
    program = model.name.replace("-", "_") + ".stan"
    if model.stan_data is None or not _program_path(program).is_file():
        return None
    return program, model.stan_data


def _program_path(program: str) -> Any:
    return importlib.resources.files("hierbench.datasets") / "stan" / program


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def export(model: HierModel, dataset: str, out: str | Path) -> dict[str, Path]:
    """Write ``out`` (npz) and, where there is a Stan program, ``<out stem>.stan.json`` and the program
    beside it (module docstring).  Returns the written paths by kind (``npz``, ``stan_json``, ``stan``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = flatten_groups(model.data)
    if model.test_data is not None:
        arrays |= {f"test_{k}": v for k, v in flatten_groups(model.test_data).items()}
    stan = stan_export(model)
    np.savez_compressed(
        out,
        **arrays,
        num_groups=model.num_groups,
        data_params=json.dumps({"dataset": dataset} | model.params),
        stan_program=stan[0] if stan else "",
    )
    paths = {"npz": out}
    if stan is not None:
        program, data = stan
        paths["stan_json"] = out.with_name(out.name.removesuffix(".npz") + ".stan.json")
        paths["stan_json"].write_text(json.dumps({k: _jsonable(v) for k, v in data.items()}))
        paths["stan"] = out.parent / program
        paths["stan"].write_text(_program_path(program).read_text(encoding="utf-8"), encoding="utf-8")
    return paths
