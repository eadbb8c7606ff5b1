"""The Python API for notebooks: what ``import hierbench as hb`` gives.

::

    import hierbench as hb

    hb.datasets()                                   # {name: one-line description}
    hb.methods()
    model = hb.dataset("hier-linear", N=100)        # a HierModel
    rec = hb.run("amortized", model, steps=2000, seed=0)           # a record (dict)
    rec = hb.run("meanfield", "hier-linear", data_params={"N": 100}, steps=2000)
    df = hb.read_records("results/bench/records.jsonl")            # one row a run

Each call is a thin layer over what the command line uses: :func:`hierbench.registry.build_model`,
:func:`hierbench.harness.run_one` and :func:`hierbench.records.read_records`, so a record made here is
the record ``hierbench run`` writes, and bad names or values raise
:class:`~hierbench.datasets.base.ParamError` (the CLI's exit 2) listing the valid choices.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API's imports are lazy: `import hierbench` must not load JAX
    import pandas as pd

    from hierbench.datasets.base import HierModel
    from hierbench.records import Record

PathLike = str | os.PathLike


def datasets() -> dict[str, str]:
    """The registered datasets: name -> the first line of its factory's docstring."""
    from hierbench.datasets import DATASETS
    from hierbench.registry import describe

    return {name: describe(factory) for name, factory in DATASETS.items()}


def methods() -> dict[str, str]:
    """The registered methods: name -> the first line of its factory's docstring."""
    from hierbench.methods import METHODS
    from hierbench.registry import describe

    return {name: describe(factory) for name, factory in METHODS.items()}


def dataset(name: str, **params: Any) -> HierModel:
    """Build the registered dataset ``name`` with its data parameters (validated, as ``--data-param``).

    Examples
    --------
    >>> model = hb.dataset("hier-linear", N=100, n=20, d=5)  # doctest: +SKIP
    """
    from hierbench.registry import build_model

    return build_model(name, params)


def run(
    method: str,
    model_or_dataset: HierModel | str,
    *,
    data_params: dict[str, Any] | None = None,
    method_params: dict[str, Any] | None = None,
    seed: int = 0,
    steps: int | None = None,
    **options: Any,
) -> Record:
    """Fit ``method`` and return its record, as ``hierbench run`` would write it.

    Parameters
    ----------
    method : str
        A registered method (:func:`methods`).
    model_or_dataset : HierModel or str
        A model from :func:`dataset` (the run rebuilds it from its name and ``params``, which the
        record keeps), or a registered dataset's name with ``data_params``.
    data_params, method_params : dict, optional
        The dataset's parameters (with a name only) and the method's.
    seed : int
        The run's seed (the data seed is a data parameter).
    steps : int, optional
        Optimization steps (default :func:`~hierbench.harness.run_one`'s).
    **options
        Further keyword arguments of :func:`~hierbench.harness.run_one`: ``eval_draws``,
        ``checkpoints``, ``budget_s``, ``chunk_steps``, ``scoring``, ``backend``, ``backend_options``,
        ``references``, ``progress``.

    Returns
    -------
    Record
        The run's record; its ``status`` says whether it ended ``ok``.

    Raises
    ------
    ParamError
        An unknown name or a bad parameter value, before anything runs.
    """
    from hierbench.datasets.base import ParamError
    from hierbench.harness import run_one

    if isinstance(model_or_dataset, str):
        name, params = model_or_dataset, dict(data_params or {})
    else:
        if data_params is not None:
            raise ParamError("data_params go with a dataset name; a model already has its parameters")
        name, params = model_or_dataset.name, dict(model_or_dataset.params)
        if name not in datasets():
            raise ParamError(f"model {name!r} is not a registered dataset; valid: {', '.join(datasets())}")
    if steps is not None:
        options["steps"] = steps
    return run_one(
        method, name, params, dict(method_params or {}), seed=seed, raise_param_errors=True, **options
    )


def read_records(paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """Records files as a table: one row a run, nested fields flattened (``data_params.N``,
    ``accuracy.global.std_mean_err_mean``, ...; :func:`pandas.json_normalize`), ``trace`` a column of
    lists of trace points.

    Every line is validated (:func:`hierbench.records.read_records`); lines that cannot be read are
    skipped with a warning naming file and line, and counted in ``df.attrs["skipped"]`` (their
    ``(file, line, reason)`` in ``df.attrs["skipped_lines"]``).
    """
    import pandas as pd

    from hierbench.records import read_records as read

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    records = read(paths)
    df = pd.json_normalize(list(records))
    df.attrs["skipped"] = len(records.skipped)
    df.attrs["skipped_lines"] = list(records.skipped)
    return df
