"""Looking things up in the dataset and method registries, with errors a user can act on."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Callable
from typing import Any

from hierbench.datasets import DATASETS
from hierbench.datasets.base import HierModel, ParamError
from hierbench.methods import METHODS
from hierbench.methods.base import Sampler, TrainConfig

HARNESS_OWNED = ("steps",)  # method params the harness sets from --steps


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered under ``name``; :class:`ParamError` lists the valid names otherwise."""
    registry = DATASETS if kind == "dataset" else METHODS
    if name not in registry:
        raise ParamError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(registry)}")
    return registry[name]


def describe(factory: Callable[..., Any]) -> str:
    """First line of a factory's docstring."""
    doc = inspect.getdoc(factory) or ""
    return doc.splitlines()[0] if doc else ""


def is_sampler(factory: Callable[..., Any]) -> bool:
    """Whether a method factory returns an MCMC :class:`Sampler` (annotated ``-> Sampler``)."""
    try:
        return typing.get_type_hints(factory).get("return") is Sampler
    except Exception:  # unresolvable annotations: not a sampler
        return False


def parameters(kind: str, factory: Callable[..., Any]) -> dict[str, Any]:
    """A factory's parameters and defaults (a VI method's include the shared training fields)."""
    vi = kind == "method" and not is_sampler(factory)
    shared = {f.name: f.default for f in dataclasses.fields(TrainConfig)} if vi else {}
    own = {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "model")
    }
    return own | {k: v for k, v in shared.items() if k not in own}  # a family may override a default


def coerce(name: str, text: str, default: Any) -> Any:
    """Parse ``text`` as the type of ``default`` (bool/int/float/str; ``none`` for None)."""
    if text.lower() in ("none", "null"):
        return None
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if default is None:
            if text.lower() in ("true", "false", "yes", "no", "on", "off"):
                return text.lower() in ("true", "yes", "on")
            for cast in (int, float):
                try:
                    return cast(text)
                except ValueError:
                    pass
        return text
    except ValueError:
        raise ParamError(f"parameter {name}={text!r} must be of type {type(default).__name__}") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: Any) -> None:
    if not _number(value) or value <= 0:
        raise ParamError(f"{name} must be a positive number, got {value!r}")


def _nonnegative(name: str, value: Any) -> None:
    if not _number(value) or value < 0:
        raise ParamError(f"{name} must be a number >= 0, got {value!r}")


def _count(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ParamError(f"{name} must be an integer >= 1, got {value!r}")


# What a method parameter of this name means in every factory that has it, checked once here for all
# of them (ours and the peers): a scale, a dimension cap, a count.
METHOD_PARAM_RULES: dict[str, Callable[[str, Any], None]] = {
    "init_sd": _positive,
    "init_factor": _nonnegative,
    "max_dim": _count,
    "rank": _count,
    "batch_groups": _count,
    "max_strata": _count,
    "width": _count,
}


def parse_params(kind: str, name: str, pairs: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``k=v`` strings (or a dict) against a factory's parameters; typed values out.

    A parameter given twice (``--data-param N=10 --data-param N=20``) is refused, and a method
    parameter with a meaning shared by every factory (:data:`METHOD_PARAM_RULES`) is checked here."""
    factory = lookup(kind, name)
    valid = parameters(kind, factory)
    items = list(pairs.items() if isinstance(pairs, dict) else (_split(p) for p in (pairs or [])))
    out = {}
    for key, value in items:
        if key not in valid:
            raise ParamError(
                f"unknown {kind} parameter {key!r} for {name!r}; valid: {', '.join(valid) or '(none)'}"
            )
        if key in out:
            raise ParamError(f"{kind} parameter {key!r} is given twice")
        out[key] = coerce(key, value, valid[key]) if isinstance(value, str) else value
        if kind == "method" and key in METHOD_PARAM_RULES:
            METHOD_PARAM_RULES[key](key, out[key])
    return out


def _split(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise ParamError(f"parameter {pair!r} must be written key=value")
    return key.strip(), value.strip()


def build_model(dataset: str, data_params: dict[str, Any] | None = None) -> HierModel:
    """Build a registered dataset's model, validating its parameters."""
    params = parse_params("dataset", dataset, data_params or {})
    return lookup("dataset", dataset)(**params)
