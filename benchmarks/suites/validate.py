"""Checking every cell of an experiment before anything runs.

Every cell is checked without building its model: names of methods, datasets and parameters,
parameter types, budgets, a dataset's ``validate_params`` where it has one, and a VI method's own
value checks (it is built on a tiny model).  What only the real model can tell (a missing data
folder, ``max_dim``) shows up when the cell runs, as its record's status.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from hierbench.datasets.base import ParamError
from hierbench.suites.experiment import RUN_DEFAULTS, Cell, canonical_json

BACKENDS = ("jax", "torch")


def validate(cells: list[Cell], where: str = "experiment") -> None:
    """Check every cell before anything runs: names, parameter names and types, budgets, and the
    values the factories check (a method is built on a tiny model; a dataset's ``validate_params``,
    where it has one, is called) without building the cells' models.  Raises :class:`ParamError`."""
    from hierbench.harness.one import check_scoring
    from hierbench.registry import HARNESS_OWNED, is_sampler, lookup, parameters, parse_params

    checked: set[str] = set()
    for cell in cells:
        kw = cell.kwargs
        context = f"{where}: [[runs]] #{cell.run_index + 1} ({cell.label})"
        try:
            budget = kw.get("budget_s")
            for key in ("steps", "checkpoints", "eval_draws", "chunk_steps"):
                if key == "chunk_steps" and key not in kw or key == "steps" and kw[key] is None and budget:
                    continue  # optional; steps None with a budget: as many as fit it
                if not isinstance(kw[key], int) or isinstance(kw[key], bool) or kw[key] < 1:
                    raise ParamError(f"{key} must be an integer >= 1, got {kw[key]!r}")
            if budget is not None and (
                not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0
            ):
                raise ParamError(f"budget_s must be a positive number of seconds, got {budget!r}")
            check_scoring(kw.get("scoring"))
            if not isinstance(kw["seed"], int) or isinstance(kw["seed"], bool) or kw["seed"] < 0:
                raise ParamError(f"seeds must be integers >= 0, got {kw['seed']!r}")
            for kind in ("dataset", "method"):
                if not isinstance(kw[kind], str):
                    raise ParamError(f"{kind} must be a name, got {kw[kind]!r}")
            if kw.get("backend", "jax") not in BACKENDS:
                raise ParamError(f"unknown backend {kw['backend']!r}; valid: {', '.join(BACKENDS)}")
            data_key = canonical_json({"d": kw["dataset"], "p": kw["data_params"]})
            if data_key not in checked:
                factory = lookup("dataset", kw["dataset"])
                params = parse_params("dataset", kw["dataset"], kw["data_params"])
                check = getattr(sys.modules.get(factory.__module__), "validate_params", None)
                if check is not None:
                    check(**(parameters("dataset", factory) | params))
                checked.add(data_key)
            method_key = canonical_json({"m": kw["method"], "p": kw["method_params"], "s": kw["steps"]})
            if method_key not in checked:
                factory = lookup("method", kw["method"])
                params = parse_params("method", kw["method"], kw["method_params"])
                owned = sorted(set(params) & set(HARNESS_OWNED))
                if owned:
                    raise ParamError(
                        f"method_params may not set {', '.join(owned)}; use the run's key instead"
                    )
                if not is_sampler(factory):
                    _check_method_values(factory, params, kw["steps"] or RUN_DEFAULTS["steps"])
                checked.add(method_key)
        except ParamError as err:
            raise ParamError(f"{context}: {err}") from None


@functools.cache
def _tiny_model():
    from hierbench.registry import build_model

    return build_model("hier-linear", {"N": 2, "n": 2, "d": 2})


def _check_method_values(factory: Callable[..., Any], params: dict[str, Any], steps: int) -> None:
    """Build a VI method on a tiny model so that its own value checks run (e.g. ``head``, ``dtype``);
    anything but a :class:`ParamError` (e.g. ``Infeasible``) depends on the real model and is left to
    the run."""
    try:
        factory(_tiny_model(), **(params | {"steps": steps}))
    except ParamError:
        raise
    except Exception:
        pass
