"""A regression suite: its entries, read from ``experiments/regress-<name>.toml``, and the registered suites.

A suite is a named list of entries, each one run of :func:`~hierbench.harness.run_one` (repeated
over seeds by :mod:`hierbench.suites.running`) with the metrics read off its record.  Its definition
(entries, budgets, metric directions) is what a baseline stores and what makes a baseline *stale*
when the code's definition differs (:mod:`hierbench.suites.baseline`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from hierbench.datasets.base import ParamError
from hierbench.suites.metrics import EXACT_METRICS, METRICS, REFERENCE_METRICS


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """One run of the suite (repeated over seeds): arguments of :func:`~hierbench.harness.run_one`
    and the metrics read off its record."""

    name: str
    method: str
    dataset: str
    data_params: dict[str, Any]
    method_params: dict[str, Any]
    steps: int
    metrics: tuple[str, ...]

    def definition(self) -> dict[str, Any]:
        """JSON-ready description (what the baseline stores and the staleness check compares)."""
        return dataclasses.asdict(self) | {"metrics": list(self.metrics)}


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named list of entries, run at ``checkpoints`` timed chunks and ``eval_draws`` draws of q."""

    name: str
    entries: tuple[SuiteEntry, ...]
    checkpoints: int = 1
    eval_draws: int = 1000

    def definition(self) -> dict[str, Any]:
        """JSON-ready suite definition, metric directions included (minimum effects and K are not:
        they are the gate's rule, not what was measured)."""
        used = sorted({m for e in self.entries for m in e.metrics})
        return {
            "name": self.name,
            "checkpoints": self.checkpoints,
            "eval_draws": self.eval_draws,
            "entries": [e.definition() for e in self.entries],
            "metrics": {m: "higher" if METRICS[m].higher_is_better else "lower" for m in used},
        }

    def cell(self, entry: SuiteEntry, seed: int) -> dict[str, Any]:
        """The :func:`~hierbench.harness.run_one` keyword arguments of ``entry`` at run seed ``seed``."""
        return {
            "method": entry.method,
            "dataset": entry.dataset,
            "data_params": dict(entry.data_params),
            "method_params": dict(entry.method_params),
            "seed": seed,
            "steps": entry.steps,
            "checkpoints": self.checkpoints,
            "eval_draws": self.eval_draws,
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON definition (first 16 hex digits)."""
        blob = json.dumps(self.definition(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, name: str, **changes: Any) -> Suite:
        """A copy with entry ``name`` changed (``steps=...`` or method parameters ``lr=...``), e.g.
        to plant a regression.  Unknown entry names raise KeyError."""
        if name not in {e.name for e in self.entries}:
            raise KeyError(name)
        steps = changes.pop("steps", None)
        entries = tuple(
            dataclasses.replace(
                e,
                steps=steps if steps is not None else e.steps,
                method_params=e.method_params | changes,
            )
            if e.name == name
            else e
            for e in self.entries
        )
        return dataclasses.replace(self, entries=entries)


# The metrics of an entry follow from its dataset: the KL where the evidence is exact, else the ELBO and
# the accuracy against the stored gated NUTS reference.
DATASET_METRICS: dict[str, tuple[str, ...]] = {"hier-linear": EXACT_METRICS}
SUITE_PREFIX = "regress-"  # the suite "quick" is the experiment file experiments/regress-quick.toml


def suite_from_experiment(name: str) -> Suite:
    """The suite ``name`` from its experiment file ``experiments/regress-<name>.toml``.

    Each cell of the file (expanded by :func:`hierbench.suites.experiment.expand`; its seed is replaced by the
    gate's) is an entry named ``<dataset without "hier-">/<label>``, with the metrics of its dataset
    (:data:`DATASET_METRICS`, else :data:`REFERENCE_METRICS`).  Entries are listed dataset by dataset,
    in the order the datasets first appear (the order the baselines were written in).
    """
    from hierbench.suites.experiment import expand, find_experiment, load_experiment

    experiment = load_experiment(find_experiment(SUITE_PREFIX + name))
    cells = expand(experiment)
    datasets = list(dict.fromkeys(c.kwargs["dataset"] for c in cells))
    cells = sorted(cells, key=lambda c: datasets.index(c.kwargs["dataset"]))  # stable
    settings = {(c.kwargs["checkpoints"], c.kwargs["eval_draws"]) for c in cells}
    extra = {k for c in cells for k in c.kwargs} - {
        *SuiteEntry.__dataclass_fields__,
        "seed",
        "checkpoints",
        "eval_draws",
    }
    if len(settings) != 1 or extra:
        raise ParamError(
            f"{experiment.path}: a regression suite has one checkpoints and eval_draws for all its entries "
            f"and no {', '.join(sorted(extra)) or 'other run keys'}; got {sorted(settings)}"
        )
    ((checkpoints, eval_draws),) = settings
    entries = tuple(
        SuiteEntry(
            f"{kw['dataset'].removeprefix('hier-')}/{c.label}",
            kw["method"],
            kw["dataset"],
            dict(kw["data_params"]),
            dict(kw["method_params"]),
            kw["steps"],
            DATASET_METRICS.get(kw["dataset"], REFERENCE_METRICS),
        )
        for c in cells
        for kw in [c.kwargs]
    )
    return Suite(name, entries, checkpoints=checkpoints, eval_draws=eval_draws)


def suite_names() -> list[str]:
    """The suites shipped as ``experiments/regress-*.toml``."""
    from hierbench.suites.experiment import available_experiments

    return [e.removeprefix(SUITE_PREFIX) for e in available_experiments() if e.startswith(SUITE_PREFIX)]


SUITES: dict[str, Suite] = {name: suite_from_experiment(name) for name in suite_names()}
QUICK = SUITES["quick"]
TINY = SUITES["tiny"]  # small enough for the tests (seconds per seed)


def get_suite(name: str) -> Suite:
    """The registered suite ``name``; :class:`ParamError` lists the valid names otherwise."""
    if name not in SUITES:
        raise ParamError(f"unknown suite {name!r}; valid suites: {', '.join(SUITES)}")
    return SUITES[name]
