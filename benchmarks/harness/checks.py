"""The one validation layer: everything a run asks for is checked before any work is done.

:func:`check_run` takes :func:`~hierbench.harness.run_one`'s keyword arguments and raises
:class:`~hierbench.datasets.base.ParamError` (the CLI's exit 2, with the valid choices) for anything
wrong, without building the run's model: ``run_one`` calls it first, and so does a sweep for every
cell before the first one runs (:func:`hierbench.suites.validate.validate`), so ``hierbench run``,
``hierbench sweep``, ``hierbench bench`` and the Python API refuse the same inputs with the same
messages.  It checks

- the run's own settings: steps, checkpoints, eval_draws (≥ 2: an ELBO needs a standard error),
  chunk_steps, a finite positive seconds budget, the seed, the scorer options, the tuning protocol;
- the backend and its options (an unknown torch device, or CUDA where there is none);
- the dataset: its name, its parameters' names and types, its ``validate_params`` where it has one
  (which also refuses data too big to generate);
- the method: its name, its parameters' names and types, that none is set by the run itself
  (``steps``: use the run's steps), and its own value checks: a VI method is built on a tiny model,
  so e.g. ``init_sd`` ≤ 0, ``max_dim`` < 1 or an unknown ``head`` are refused;
- what depends on the model's size, from the dataset's ``shape(**params)`` where it has one, without
  the data: ``batch_groups`` ≤ N and ``rank`` ≤ the dimension of (θ, z).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

from hierbench.datasets.base import ParamError


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParamError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_settings(kwargs: dict[str, Any]) -> None:
    """The run's own settings (module docstring), none of which needs a model."""
    from hierbench.harness.one import METHOD_STEPS, check_scoring
    from hierbench.harness.tune import check_tune

    steps, budget = kwargs.get("steps", METHOD_STEPS), kwargs.get("budget_s")
    finite = isinstance(budget, (int, float)) and not isinstance(budget, bool) and math.isfinite(budget)
    if budget is not None and not (finite and budget > 0):
        raise ParamError(f"budget_s must be a positive, finite number of seconds, got {budget!r}")
    if steps is None and budget is None:
        raise ParamError("give steps, budget_s or both (steps=None: as many as fit the budget)")
    if steps is not None and steps != METHOD_STEPS:
        _int_at_least("steps", steps, 1)
    _int_at_least("checkpoints", kwargs.get("checkpoints", 1), 1)
    _int_at_least("eval_draws", kwargs.get("eval_draws", 2), 2)
    if kwargs.get("chunk_steps") is not None:
        _int_at_least("chunk_steps", kwargs["chunk_steps"], 1)
    seed = kwargs.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamError(f"seed must be an integer >= 0, got {seed!r}")
    check_scoring(kwargs.get("scoring"))
    check_tune(kwargs.get("tune"), kwargs.get("method_params"), kwargs.get("tune_grid"))


def check_run(kwargs: dict[str, Any]) -> None:
    """Check a run before any work (module docstring); raises :class:`ParamError`."""
    from hierbench.harness.backends import make_backend
    from hierbench.registry import HARNESS_OWNED, is_sampler, lookup, parse_params

    check_settings(kwargs)
    backend = kwargs.get("backend", "jax")
    make_backend(backend, kwargs.get("backend_options"))
    dataset, method = kwargs["dataset"], kwargs["method"]
    for kind, name in (("dataset", dataset), ("method", method)):
        if not isinstance(name, str):
            raise ParamError(f"{kind} must be a name, got {name!r}")
    data_params = check_dataset(dataset, _frozen(kwargs.get("data_params") or {}))
    factory = lookup("method", method)
    params = parse_params("method", method, kwargs.get("method_params") or {})
    owned = sorted(set(params) & set(HARNESS_OWNED))
    if owned:
        raise ParamError(
            f"method parameter(s) {', '.join(owned)} are the run's own: give the run's {owned[0]} instead"
        )
    if is_sampler(factory):
        if backend != "jax":
            raise ParamError(f"backend {backend!r} runs VI methods only; {method!r} is a sampler")
        if kwargs.get("budget_s") is not None or kwargs.get("tune") is not None:
            raise ParamError(f"budget_s and tune apply to VI methods; {method!r} is a sampler")
        return
    steps = kwargs.get("steps")
    # the run's own step count where it has one (a method may accept only some, e.g. Pathfinder's 1)
    check_method_values(method, _frozen(params), steps if isinstance(steps, int) and steps > 0 else 10)
    shape = dataset_shape(dataset, data_params)
    if shape is not None:
        check_against_shape(method, params, shape)


def _frozen(params: dict[str, Any]) -> tuple:
    """A hashable form of a parameter dict (for the caches below)."""
    import json

    return (json.dumps(params, sort_keys=True, default=repr),)


def _thaw(frozen: tuple) -> dict[str, Any]:
    import json

    return json.loads(frozen[0])


@functools.lru_cache(maxsize=256)
def check_dataset(dataset: str, frozen_params: tuple) -> dict[str, Any]:
    """The dataset's name, parameters and ``validate_params``; returns its full parameters."""
    from hierbench.registry import lookup, parameters, parse_params

    factory = lookup("dataset", dataset)
    params = parameters("dataset", factory) | parse_params("dataset", dataset, _thaw(frozen_params))
    check = getattr(sys.modules.get(factory.__module__), "validate_params", None)
    if check is not None:
        check(**params)
    return params


@functools.lru_cache(maxsize=256)
def check_method_values(method: str, frozen_params: tuple, steps: int = 10) -> None:
    """Build the VI method on a tiny model, so that its own value checks run; anything but a
    :class:`ParamError` (``Infeasible``) depends on the real model and is left to the run."""
    from hierbench.registry import lookup

    factory = lookup("method", method)
    params = _thaw(frozen_params)
    # checked against the real model's size (check_against_shape), not the tiny one's
    params.pop("batch_groups", None)
    params.pop("rank", None)
    try:
        factory(_tiny_model(), **(params | {"steps": steps}))
    except ParamError:
        raise
    except Exception:
        pass


@functools.cache
def _tiny_model():
    from hierbench.registry import build_model

    return build_model("hier-linear", {"N": 2, "n": 2, "d": 2})


def dataset_shape(dataset: str, params: dict[str, Any]) -> dict[str, int] | None:
    """``{num_groups, dim_global, dim_local}`` from the dataset's ``shape(**params)`` (no data), or None
    where the dataset has none."""
    from hierbench.registry import lookup

    factory = lookup("dataset", dataset)
    shape: Callable[..., dict[str, int]] | None = getattr(sys.modules.get(factory.__module__), "shape", None)
    return None if shape is None else shape(**params)


def check_against_shape(method: str, params: dict[str, Any], shape: dict[str, int]) -> None:
    """What depends on the model's size: ``batch_groups`` ≤ N (N is full data) and ``rank`` ≤ the
    dimension of (θ, z)."""
    n = shape["num_groups"]
    b = params.get("batch_groups")
    if b is not None:
        _int_at_least("batch_groups", b, 1)
        if b > n:
            raise ParamError(
                f"batch_groups={b} is more than the data's N={n} groups (batch_groups={n} is full data)"
            )
    rank = params.get("rank")
    if rank is not None:
        dim = shape["dim_global"] + n * shape["dim_local"]
        _int_at_least("rank", rank, 1)
        if rank > dim:
            raise ParamError(f"rank={rank} is more than the dimension {dim} of (θ, z)")
