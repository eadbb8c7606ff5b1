"""Checking every cell of an experiment before anything runs.

Each cell is checked by the one validation layer every run goes through
(:func:`hierbench.harness.checks.check_run`), without building the cells' models: names of methods,
datasets and parameters, parameter types and values, budgets, a dataset's ``validate_params`` and
``shape`` where it has them, and a VI method's own value checks (it is built on a tiny model).  So a
sweep refuses exactly what ``hierbench run`` and ``hb.run`` refuse, before its first cell runs.  What
only the real model can tell (a missing data folder, ``max_dim``) shows up when the cell runs, as its
record's status.
"""

from __future__ import annotations

from hierbench.datasets.base import ParamError
from hierbench.suites.experiment import Cell

BACKENDS = ("jax", "torch")


def validate(cells: list[Cell], where: str = "experiment") -> None:
    """Check every cell before anything runs (:func:`~hierbench.harness.checks.check_run`); raises
    :class:`ParamError` naming the run of the experiment file it came from."""
    from hierbench.harness.checks import check_run
    from hierbench.suites.tuning import check_once

    for cell in cells:
        try:
            check_once(cell.kwargs)
            check_run({k: v for k, v in cell.kwargs.items() if k != "tune_once"})
        except ParamError as err:
            context = f"{where}: [[runs]] #{cell.run_index + 1} ({cell.label})"
            raise ParamError(f"{context}: {err}") from None
