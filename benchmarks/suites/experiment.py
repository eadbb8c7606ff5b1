"""Experiments as TOML files: the schema, and the grid of cells an experiment expands to.

An experiment (``benchmarks/experiments/<name>.toml``, or any path) is a grid of runs.  Each
``[[runs]]`` table expands to the product of its list-valued keys; each resulting **cell** is the
keyword arguments of one :func:`hierbench.harness.run_one` call.  ``hierbench sweep`` runs the cells
(:mod:`hierbench.suites.sweep`) and appends one record per cell to a JSON-lines records file.

Schema
------
::

    [experiment]                    # optional
    name = "scaling"                # default: the file name without .toml
    description = "..."             # free text, shown by --dry-run
    isolate = false                 # optional: one fresh worker process per cell (its own peak RSS)
    stall_s = 900                   # optional: kill a worker silent this long; its cell is an error

    [defaults]                      # optional: run keys shared by every [[runs]] table
    dataset = "hier-linear"
    data_params = { n = 100, d = 10, N = [10, 100, 1000] }   # a list is a sweep axis
    seeds = [0, 1, 2]               # run seeds (the data seed is data_params.seed)
    steps = 10_000                  # optimization steps: the budget (a list sweeps budgets)
    checkpoints = 20                # timed chunks, each followed by an off-clock ELBO
    eval_draws = 1000               # draws of q per ELBO estimate

    [[runs]]                        # one or more
    label = "amortized (potential)" # optional; default: the method and its params
    method = "amortized"
    method_params = { head = "potential", batch_groups = 32 }

    [runs.quick]                    # optional: this run's overrides under --quick
    method_params = { batch_groups = 8 }
    # skip = true                   # or: leave this run out under --quick

    [quick]                         # optional: overrides of every run under --quick
    data_params = { N = [10, 100], n = 20 }
    seeds = [0]
    steps = 500

Run keys are ``method``, ``dataset``, ``data_params``, ``method_params``, ``seeds``, ``steps``,
``budget_s``, ``checkpoints``, ``eval_draws``, ``chunk_steps``, ``scoring``, ``backend``,
``backend_options``, ``cases``, ``label`` and (in a run) ``quick``. ``backend`` (``"jax"`` or ``"torch"``),
``backend_options`` (a table like ``method_params``: ``compile``, ``threads``, ``device``), ``chunk_steps``
(steps per compiled chunk, apart from ``checkpoints``) and ``scoring`` (a table of scorer options:
``eval_segments`` on a model whose ratings are kept in a store) are :func:`~hierbench.harness.run_one`'s;
a cell has them only where the experiment sets them, so the cells of experiments without them are
unchanged. ``budget_s`` (optional) is a budget of optimization seconds on top of ``steps``: the run gets
``min(steps, budget_s × its measured steps/s)`` steps, its schedule spanning the budget (see
:func:`~hierbench.harness.run_one`); with ``budget_s`` and no ``steps`` in any layer, as many steps as fit
the budget (the cell's ``steps`` is null). ``seeds``, ``steps``, ``checkpoints`` and ``eval_draws`` default
to seed 0, 10,000 steps, 20 checkpoints and 1000 draws (:func:`~hierbench.harness.run_one`'s, but the steps
are stated: not a method's own default). Any value may
be a list, and so may any value inside ``data_params``, ``method_params``, ``backend_options`` and
``scoring``: a list is a sweep axis, and a run's cells are the product of its axes (no registered
parameter takes a list). Layers merge in the order ``[defaults]`` < ``[[runs]]`` < ``[quick]`` <
``[runs.quick]`` (the last two only with ``--quick``): ``data_params``, ``method_params``,
``backend_options``, ``scoring`` and ``cases`` merge key by key, every other key is replaced (so runs on
another dataset than ``[defaults]``'s should not inherit its ``data_params``: put those in the runs).
``skip = true`` in a ``[runs.quick]`` table leaves that run out under ``--quick``. The optimization
budget is set by the run keys ``steps`` and ``budget_s``, never by a method parameter.

**Tuning** (:mod:`hierbench.harness.tune`): ``tune = "lr"`` runs every cell by the tuning protocol (one
run per step size of the grid, ``tune_grid`` to give other values, the best by a held-apart ELBO).
With ``tune_once = { seed = 0 }`` the step size is tuned once per configuration instead — on that
seed, for all the cells that differ only in their seed, steps or budget — and each cell then runs once
at the chosen value; its record says so (:mod:`hierbench.suites.tuning`).  The tuning run keeps the
cells' steps and budget unless ``steps`` or ``budget_s`` is given; a shorter one plans a shorter
cosine schedule, which favours larger step sizes (measured: ``results/sweeps/README.md``).
``checkpoints = 1`` evaluates only each grid point's final q, which is all the choice reads.

Axes that vary together are **cases**: ``cases`` is a table of named axes, each a list of tables of run
keys (no ``label``, ``quick`` or ``cases``); a run gets one cell set per combination of one case from
each axis, the case merged over the run as a layer right after it (before ``[quick]``), and the case
axes are the outermost (in the order the names first appear).  Layers merge ``cases`` axis by axis: a
run's (or ``[quick]``'s) axis of the same name replaces the earlier one. ::

    [defaults.cases]
    size = [ { data_params = { N = 100 }, steps = 1_000 }, { data_params = { N = 1_000 }, steps = 300 } ]
    engine = [ { backend = "jax" }, { backend = "torch", backend_options = { compile = true } } ]

Before anything runs, every cell is checked without building its model
(:func:`hierbench.suites.validate.validate`).  ``isolate`` and ``stall_s`` are described in
:mod:`hierbench.suites.executors`.

Cells
-----
A cell's ``cell_id`` is the first 16 hex digits of the SHA-256 of its canonical JSON (the run_one
keyword arguments with sorted keys), so it is stable across processes, machines and edits of other
runs; two runs that expand to the same cell run it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from hierbench.datasets.base import ParamError

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"

TOP_KEYS = ("experiment", "defaults", "runs", "quick")
EXPERIMENT_KEYS = ("name", "description", "isolate", "stall_s")
PARAM_KEYS = ("data_params", "method_params", "backend_options", "scoring", "tune_once")  # merged key by key
RUN_KEYS = (
    "label",
    "method",
    "dataset",
    "data_params",
    "method_params",
    "seeds",
    "steps",
    "checkpoints",
    "eval_draws",
    "budget_s",
    "chunk_steps",
    "scoring",
    "tune",
    "tune_grid",
    "tune_once",
    "backend",
    "backend_options",
    "cases",
)
CASE_KEYS = tuple(k for k in RUN_KEYS if k not in ("label", "cases"))
# run_one's defaults, but a stated step count (the harness's 10,000) where run_one's default is the
# method's own: a cell's meaning and id do not follow a method's default (tests/suites/test_sweep.py)
RUN_DEFAULTS: dict[str, Any] = {"seeds": 0, "steps": 10_000, "checkpoints": 20, "eval_draws": 1000}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A parsed experiment file (see the module docstring for the schema)."""

    name: str
    description: str
    runs: tuple[dict[str, Any], ...]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    quick: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None
    isolate: bool = False  # one fresh worker process per cell (hierbench.suites.executors)
    stall_s: float | None = None  # the no-progress watchdog's limit (hierbench.suites.executors)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of an experiment's grid: ``kwargs`` for :func:`~hierbench.harness.run_one`."""

    cell_id: str
    label: str
    run_index: int  # which [[runs]] table (0-based) it came from
    kwargs: dict[str, Any]


# ---------------------------------------------------------------------------------------------------
# Experiment files


def available_experiments() -> list[str]:
    """Names of the experiment files shipped in ``benchmarks/experiments/``."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def find_experiment(name_or_path: str | os.PathLike) -> Path:
    """The file of an experiment given as a path or as the name of a shipped experiment."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = EXPERIMENTS_DIR / f"{path.name}.toml"
    if path.suffix != ".toml" and len(path.parts) == 1 and shipped.is_file():
        return shipped
    raise ParamError(
        f"no experiment {os.fspath(name_or_path)!r}: not a file, and not one of the shipped "
        f"experiments: {', '.join(available_experiments()) or '(none)'}"
    )


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and check the structure of an experiment file; :class:`ParamError` names what is wrong."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ParamError(f"{path}: cannot read the experiment file: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ParamError(f"{path}: not valid TOML: {err}") from None
    _check_keys(path, "the top level", doc, TOP_KEYS)
    head = _table(path, "[experiment]", doc.get("experiment", {}))
    _check_keys(path, "[experiment]", head, EXPERIMENT_KEYS)
    defaults = _run_table(path, "[defaults]", doc.get("defaults", {}), allow_quick=False)
    quick = _run_table(path, "[quick]", doc.get("quick", {}), allow_quick=False)
    runs = doc.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ParamError(f"{path}: an experiment needs at least one [[runs]] table")
    runs = tuple(_run_table(path, f"[[runs]] #{i + 1}", run, allow_quick=True) for i, run in enumerate(runs))
    name = head.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise ParamError(f"{path}: [experiment] name must be a non-empty string without '/', got {name!r}")
    isolate = head.get("isolate", False)
    if not isinstance(isolate, bool):
        raise ParamError(f"{path}: [experiment] isolate must be true or false, got {isolate!r}")
    try:
        stall_s = check_stall_s(head.get("stall_s"))
    except ParamError as err:
        raise ParamError(f"{path}: [experiment] {err}") from None
    return Experiment(
        name=name,
        description=str(head.get("description", "")).strip(),
        runs=runs,
        defaults=defaults,
        quick=quick,
        path=path,
        isolate=isolate,
        stall_s=stall_s,
    )


def check_stall_s(value: Any) -> float | None:
    """A watchdog limit: None, or a positive number of seconds (:class:`ParamError` otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ParamError(f"stall_s must be a positive number of seconds, got {value!r}")
    return float(value)


def _table(path: Path, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParamError(f"{path}: {where} must be a table, got {value!r}")
    return value


def _check_keys(path: Path, where: str, table: dict[str, Any], valid: tuple[str, ...]) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise ParamError(f"{path}: unknown key(s) {', '.join(unknown)} in {where}; valid: {', '.join(valid)}")


def _run_table(
    path: Path, where: str, value: Any, allow_quick: bool, allow_skip: bool = False
) -> dict[str, Any]:
    table = _table(path, where, value)
    _check_keys(
        path, where, table, RUN_KEYS + (("quick",) if allow_quick else ()) + (("skip",) if allow_skip else ())
    )
    if not isinstance(table.get("skip", False), bool):
        raise ParamError(f"{path}: {where} skip must be true or false, got {table['skip']!r}")
    for key in PARAM_KEYS:
        _table(path, f"{where} {key}", table.get(key, {}))
    for axis, cases in _table(path, f"{where} cases", table.get("cases", {})).items():
        if not isinstance(cases, list) or not cases:
            raise ParamError(
                f"{path}: {where} cases.{axis} must be a non-empty list of tables, not {cases!r}"
            )
        for i, case in enumerate(cases):
            case_where = f"{where} cases.{axis} #{i + 1}"
            _check_keys(path, case_where, _table(path, case_where, case), CASE_KEYS)
            for key in PARAM_KEYS:
                _table(path, f"{case_where} {key}", case.get(key, {}))
    if allow_quick and "quick" in table:
        quick = _run_table(path, f"{where} quick", table["quick"], allow_quick=False, allow_skip=True)
        table = dict(table) | {"quick": quick}
    if "label" in table and not isinstance(table["label"], str):
        raise ParamError(f"{path}: {where} label must be a string, got {table['label']!r}")
    return table


# ---------------------------------------------------------------------------------------------------
# Cells


def canonical_json(kwargs: dict[str, Any]) -> str:
    """The canonical JSON text of a cell's keyword arguments (sorted keys, no spaces)."""
    return json.dumps(kwargs, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def cell_id(kwargs: dict[str, Any]) -> str:
    """A cell's stable id: 16 hex digits of the SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(kwargs).encode()).hexdigest()[:16]


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("quick", "skip"):
                continue
            out[key] = out.get(key, {}) | value if key in (*PARAM_KEYS, "cases") else value
    return out


def _axis(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def expand(experiment: Experiment, quick: bool = False) -> list[Cell]:
    """The experiment's cells in file order (run by run; within a run, the product of its axes).

    Parameters
    ----------
    experiment : Experiment
        A loaded experiment.
    quick : bool
        Apply the ``[quick]`` and ``[runs.quick]`` overrides.

    Returns
    -------
    list of Cell
        One per distinct set of run_one keyword arguments (a repeated cell is listed once).
    """
    cells, seen = [], set()
    where = experiment.path or experiment.name
    for index, run in enumerate(experiment.runs):
        if quick and run.get("quick", {}).get("skip"):
            continue
        head, tail = [RUN_DEFAULTS, experiment.defaults, run], []
        if quick:
            tail = [experiment.quick, run.get("quick", {})]
        case_axes = _merge(*head, *tail).get("cases", {})
        for combo in itertools.product(*case_axes.values()):
            layers = [*head, *combo, *tail]
            spec = _merge(*layers)
            if spec.get("budget_s") is not None and not any("steps" in layer for layer in layers[1:]):
                spec["steps"] = None  # a budget and no steps: as many steps as fit it
            _expand_spec(spec, index, where, cells, seen)
    return cells


def _expand_spec(spec: dict[str, Any], index: int, where: Any, cells: list[Cell], seen: set[str]) -> None:
    """Append the cells of one merged run table (one combination of its cases) to ``cells``."""
    for key in ("method", "dataset"):
        if key not in spec:
            raise ParamError(f"{where}: [[runs]] #{index + 1} has no {key} (nor does [defaults])")
    # outermost first: method, dataset, data params, method params, backend, budgets, seeds
    axes: list[tuple[tuple[str, ...], list[Any]]] = [((k,), _axis(spec[k])) for k in ("method", "dataset")]
    for group in ("data_params", "method_params"):
        axes += [((group, k), _axis(v)) for k, v in spec.get(group, {}).items()]
    axes += [(("backend",), _axis(spec["backend"]))] if "backend" in spec else []
    axes += [(("backend_options", k), _axis(v)) for k, v in spec.get("backend_options", {}).items()]
    budgets = ("steps", "budget_s") if spec.get("budget_s") is not None else ("steps",)
    axes += [((k,), _axis(spec[k])) for k in (*budgets, "checkpoints", "eval_draws", "seeds")]
    axes += [(("chunk_steps",), _axis(spec["chunk_steps"]))] if "chunk_steps" in spec else []
    axes += [(("scoring", k), _axis(v)) for k, v in spec.get("scoring", {}).items()]
    axes += [(("tune",), _axis(spec["tune"]))] if "tune" in spec else []
    axes += [(("tune_grid",), [spec["tune_grid"]])] if "tune_grid" in spec else []  # a list, not an axis
    axes += [(("tune_once", k), _axis(v)) for k, v in spec.get("tune_once", {}).items()]
    for point in itertools.product(*(values for _, values in axes)):
        kwargs: dict[str, Any] = {"data_params": {}, "method_params": {}}
        for key in ("backend_options", "scoring", "tune_once"):  # only where the experiment sets them
            if key in spec:
                kwargs[key] = {}
        for (key, *sub), value in zip((k for k, _ in axes), point, strict=True):
            if sub:
                kwargs[key][sub[0]] = value
            else:
                kwargs["seed" if key == "seeds" else key] = value
        try:
            cid = cell_id(kwargs)
        except (TypeError, ValueError) as err:
            bad = [k for k, v in kwargs.items() if isinstance(v, float) and not math.isfinite(v)]
            what = (
                f"{bad[0]} = {kwargs[bad[0]]} is not a finite number"
                if bad
                else f"a value is not plain data: {err}"
            )
            raise ParamError(f"{where}: [[runs]] #{index + 1}: {what}") from None
        if cid in seen:
            continue
        seen.add(cid)
        cells.append(Cell(cid, spec.get("label") or default_label(kwargs), index, kwargs))


def default_label(kwargs: dict[str, Any]) -> str:
    """``method k=v ...`` from a cell's method and method params."""
    params = " ".join(f"{k}={v}" for k, v in kwargs["method_params"].items())
    return f"{kwargs['method']} {params}".strip()
