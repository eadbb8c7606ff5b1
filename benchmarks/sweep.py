"""Experiments as TOML files, and sweeps over them that survive failures.

An experiment (``benchmarks/experiments/<name>.toml``, or any path) is a grid of runs.  Each
``[[runs]]`` table expands to the product of its list-valued keys; each resulting **cell** is the
keyword arguments of one :func:`hierbench.harness.run_one` call.  ``hierbench sweep`` runs the cells
and appends one record per cell to a JSON-lines records file.

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
to :func:`~hierbench.harness.run_one`'s (seed 0, 10,000 steps, 20 checkpoints, 1000 draws). Any value may
be a list, and so may any value inside ``data_params``, ``method_params``, ``backend_options`` and
``scoring``: a list is a sweep axis, and a run's cells are the product of its axes (no registered
parameter takes a list). Layers merge in the order ``[defaults]`` < ``[[runs]]`` < ``[quick]`` <
``[runs.quick]`` (the last two only with ``--quick``): ``data_params``, ``method_params``,
``backend_options``, ``scoring`` and ``cases`` merge key by key, every other key is replaced (so runs on
another dataset than ``[defaults]``'s should not inherit its ``data_params``: put those in the runs).
``skip = true`` in a ``[runs.quick]`` table leaves that run out under ``--quick``. The optimization
budget is set by the run keys ``steps`` and ``budget_s``, never by a method parameter.

Axes that vary together are **cases**: ``cases`` is a table of named axes, each a list of tables of run
keys (no ``label``, ``quick`` or ``cases``); a run gets one cell set per combination of one case from
each axis, the case merged over the run as a layer right after it (before ``[quick]``), and the case
axes are the outermost (in the order the names first appear).  Layers merge ``cases`` axis by axis: a
run's (or ``[quick]``'s) axis of the same name replaces the earlier one. ::

    [defaults.cases]
    size = [ { data_params = { N = 100 }, steps = 1_000 }, { data_params = { N = 1_000 }, steps = 300 } ]
    engine = [ { backend = "jax" }, { backend = "torch", backend_options = { compile = true } } ]

Before anything runs, every cell is checked without building its model: names of methods, datasets
and parameters, parameter types, budgets, a dataset's ``validate_params`` where it has one, and a VI
method's own value checks (it is built on a tiny model).  What only the real model can tell (a missing
data folder, ``max_dim``) shows up when the cell runs, as its record's status.

Cells and records
-----------------
A cell's ``cell_id`` is the first 16 hex digits of the SHA-256 of its canonical JSON (the run_one
keyword arguments with sorted keys), so it is stable across processes, machines and edits of other
runs; two runs that expand to the same cell run it once.  Each record gets the fields ``experiment``,
``cell_id``, ``label``, ``quick``, ``cell`` (the requested keyword arguments) and ``compilation_cache``
on top of :func:`~hierbench.harness.run_one`'s.

Failures and resuming
---------------------
The records file is the sweep's state.  On start the sweep reads it and skips every cell that has a
record, so an interrupted sweep loses nothing and a rerun never duplicates a cell; ``retry_failed``
reruns the cells whose only records are errors.  A cell whose run raises, or whose worker process
dies (a segfault, the out-of-memory killer), is recorded with ``status="error"`` and its error
message, and the sweep goes on.  Only the driver process writes records, one locked, fsynced line per
cell, and a lock file (``<records>.lock``) keeps a second sweep from writing the same file.

Isolation and the watchdog
--------------------------
Two experiment-level options (``[experiment]``, or :func:`run_sweep`'s arguments; not cell keys, so
they change no cell id) apply to local worker processes (``jobs`` ≥ 1):

- ``isolate = true``: every cell runs in a fresh spawned process (``max_tasks_per_child=1``), so its
  record's peak RSS (:func:`hierbench.harness.memory.memory_info`) is that cell's own.
- ``stall_s = S``: a no-progress watchdog.  Each worker stamps the time into memory the driver reads
  whenever the run makes progress (:func:`hierbench.harness.loop.beat`: after every compile, chunk and
  score, and every chunk of users the chunked scorer scores).  A worker silent for ``S`` seconds is
  killed and its cell recorded as an ``error`` ("no progress for S s": XLA:CPU has deadlocked on 2
  cores, every thread parked, see the README's "Pinned versions"); the sweep goes on.  A worker's
  start-up, before its cell starts, may take up to ``max(S, STARTUP_S)`` (120 s).  Such a cell is
  not rerun as a crash suspect (it did not crash, it was killed); cells the kill broke the pool under
  run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import tomllib
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from hierbench._io import REFERENCES_DIR, SWEEPS_DIR, file_lock, seal
from hierbench.datasets.base import ParamError
from hierbench.records import Record, append_record, failed_record, read_records
from hierbench.records import validate as validate_record

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"

TOP_KEYS = ("experiment", "defaults", "runs", "quick")
EXPERIMENT_KEYS = ("name", "description", "isolate", "stall_s")
PARAM_KEYS = ("data_params", "method_params", "backend_options", "scoring")  # tables merged key by key
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
    "backend",
    "backend_options",
    "cases",
)
CASE_KEYS = tuple(k for k in RUN_KEYS if k not in ("label", "cases"))
BACKENDS = ("jax", "torch")
# run_one's defaults (tests/test_sweep.py checks they agree)
RUN_DEFAULTS: dict[str, Any] = {"seeds": 0, "steps": 10_000, "checkpoints": 20, "eval_draws": 1000}
EXECUTORS = ("local", "dask")

Runner = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]  # (cell kwargs, run options) -> record


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A parsed experiment file (see the module docstring for the schema)."""

    name: str
    description: str
    runs: tuple[dict[str, Any], ...]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    quick: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None
    isolate: bool = False  # one fresh worker process per cell (module docstring)
    stall_s: float | None = None  # the no-progress watchdog's limit (module docstring)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of an experiment's grid: ``kwargs`` for :func:`~hierbench.harness.run_one`."""

    cell_id: str
    label: str
    run_index: int  # which [[runs]] table (0-based) it came from
    kwargs: dict[str, Any]


@dataclasses.dataclass
class SweepResult:
    """What a sweep did: counts of cells, statuses of the cells run now, and the failed cells."""

    experiment: str
    out: Path
    cells: int
    skipped: int = 0
    ran: Counter = dataclasses.field(default_factory=Counter)  # status -> cells run now
    failed: list[str] = dataclasses.field(default_factory=list)  # cell ids whose records are all errors
    wall_s: float = 0.0
    dry_run: bool = False

    def summary(self) -> str:
        """The final one-line summary."""
        statuses = (
            "" if self.dry_run else ", ".join(f"{n} {status}" for status, n in sorted(self.ran.items()))
        )
        verb = "to run" if self.dry_run else "run now"
        line = (
            f"sweep {self.experiment}: {self.cells} cells; {sum(self.ran.values())} {verb}"
            f"{f' ({statuses})' if statuses else ''}, {self.skipped} skipped (already recorded)"
        )
        if not self.dry_run:
            line += f"; {len(self.failed)} failed in all; {self.wall_s:.0f} s"
        return line + f"; records: {self.out}"


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
    for point in itertools.product(*(values for _, values in axes)):
        kwargs: dict[str, Any] = {"data_params": {}, "method_params": {}}
        for key in ("backend_options", "scoring"):  # only where the experiment sets them
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
            raise ParamError(f"{where}: [[runs]] #{index + 1}: a value is not plain data: {err}") from None
        if cid in seen:
            continue
        seen.add(cid)
        cells.append(Cell(cid, spec.get("label") or default_label(kwargs), index, kwargs))


def default_label(kwargs: dict[str, Any]) -> str:
    """``method k=v ...`` from a cell's method and method params."""
    params = " ".join(f"{k}={v}" for k, v in kwargs["method_params"].items())
    return f"{kwargs['method']} {params}".strip()


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


def pending(
    cells: list[Cell], records: list[dict[str, Any]], retry_failed: bool = False
) -> tuple[list[Cell], list[Cell]]:
    """Split cells into (to run, to skip) given the records already written.

    A cell with any record is skipped; with ``retry_failed``, a cell whose only records are errors
    runs again."""
    statuses: dict[str, set[str]] = {}
    for rec in records:
        if rec.get("cell_id"):  # records are validated (status is there); cell_id is a sweep's field
            statuses.setdefault(rec["cell_id"], set()).add(rec["status"])
    todo, skip = [], []
    for cell in cells:
        seen = statuses.get(cell.cell_id)
        if not seen or (retry_failed and seen <= {"error"}):
            todo.append(cell)
        else:
            skip.append(cell)
    return todo, skip


def default_out(experiment: str, quick: bool = False) -> Path:
    """``results/sweeps/<experiment>[-quick]/records.jsonl``."""
    return SWEEPS_DIR / f"{experiment}{'-quick' if quick else ''}" / "records.jsonl"


# ---------------------------------------------------------------------------------------------------
# Running cells


def run_cell(kwargs: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one cell and return its record; an exception becomes an ``error`` record (never raises).

    This is what worker processes (local or Dask) execute; it is importable by name so it pickles.

    Parameters
    ----------
    kwargs : dict
        The cell: keyword arguments of :func:`~hierbench.harness.run_one`.
    options : dict, optional
        ``references`` (the reference store, default none) and ``compilation_cache`` (switch on JAX's
        persistent compilation cache in ``.cache/hierbench/jax``, or ``$HIERBENCH_CACHE_DIR/jax``).
    """
    options = options or {}
    try:
        from hierbench.harness import run_one

        if options.get("compilation_cache"):
            from hierbench._jax import enable_compilation_cache

            enable_compilation_cache()
        return run_one(**kwargs, progress=False, references=options.get("references"))
    except Exception as err:
        return _exception_record(kwargs, err, traceback.format_exc())


WORKER_CRASHED = "WorkerCrashed: the worker process running this cell died (a segfault, or out of memory?)"


def _exception_record(kwargs: dict[str, Any], err: BaseException, tb: str | None = None) -> Record:
    """The ``error`` record (:func:`hierbench.records.failed_record`) of a cell whose run raised."""
    return failed_record(kwargs, "error", f"{type(err).__name__}: {err}", **({"traceback": tb} if tb else {}))


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _threads_per_worker(jobs: int) -> int:
    return max(1, (len(_cpus()) or os.cpu_count() or 1) // max(1, jobs))


@contextlib.contextmanager
def _worker_env(threads: int) -> Iterator[None]:
    """BLAS/OpenMP thread counts for spawned workers, which inherit the environment when they start
    (values the user set win).  XLA ignores them: workers are pinned to CPUs instead (_init_worker)."""
    settings = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {name: os.environ.get(name) for name in settings}
    for name, value in settings.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Set in each spawned worker by _init_worker: the driver's shared heartbeat and pid slots, and the slot
# of the cell this worker runs now (None between cells).
_BEATS: Any = None
_PIDS: Any = None
_SLOT: int | None = None
STARTUP_S = 120.0  # a worker's start-up (spawn, imports) may stay silent this long, whatever stall_s
STALLED = (
    "no progress for {stall_s:g} s: the worker was killed (an XLA:CPU deadlock? every thread parked, see "
    "the README's 'Pinned versions'); --retry-failed reruns the cell, or pin it to one core with taskset"
)


def _init_worker(driver_pid: int, slots: Any, jobs: int, isolate: bool, beats: Any, pids: Any) -> None:
    """Set up a spawned worker before it imports JAX's backend: ignore Ctrl-C (the driver stops the
    workers), pin it to its share of the CPUs (XLA sizes its thread pool from the CPUs it may use,
    and no XLA flag or environment variable reliably limits it; an isolated worker, which runs one
    cell, is pinned by that cell's slot instead: :func:`_watched`), exit if the driver dies, and
    point the loop's heartbeat (:func:`hierbench.harness.loop.set_heartbeat`) at the driver's memory."""
    global _BEATS, _PIDS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not isolate:
        with slots.get_lock():
            slot = slots.value
            slots.value += 1
        _pin(slot, jobs)

    def exit_with_driver() -> None:  # a killed driver must not leave workers computing for nobody
        while os.getppid() == driver_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_driver, daemon=True, name="hierbench-watch-driver").start()
    _BEATS, _PIDS = beats, pids
    # imports jax but starts no backend: XLA sizes its threads later, from the CPUs pinned by then
    from hierbench.harness.loop import set_heartbeat

    set_heartbeat(_stamp)


def _pin(slot: int, jobs: int) -> None:
    """Pin this process to the ``slot``-th of ``jobs`` equal shares of the CPUs (with ``jobs`` > 1)."""
    cpus = _cpus()
    if jobs > 1 and len(cpus) > 1:
        share = max(1, len(cpus) // jobs)
        start = (slot % jobs) * share % len(cpus)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus[start : start + share])


def _stamp() -> None:
    """The worker's heartbeat hook: the time of this progress, in the running cell's slot."""
    if _SLOT is not None:
        _BEATS[_SLOT] = time.time()


def _watched(runner: Runner, kwargs: dict[str, Any], options: dict[str, Any], slot: int, pin: int) -> Any:
    """Run one cell in a worker, its progress stamped in ``slot`` (pinned by the slot if ``pin`` > 0:
    the number of jobs of an isolated pool)."""
    global _SLOT
    _SLOT = slot
    _stamp()  # before the pid: the driver times a slot with a pid from its latest stamp
    _PIDS[slot] = os.getpid()
    if pin:
        _pin(slot, pin)
    try:
        return runner(kwargs, options)
    finally:
        _SLOT = None


def _terminate(pool: ProcessPoolExecutor) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _kill_worker(pool: ProcessPoolExecutor, pid: int) -> None:
    """Kill the worker ``pid`` (0: not known yet, so every worker of the pool)."""
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.kill()


def _pool_pass(
    queue: deque[Cell],
    jobs: int,
    runner: Runner,
    options: dict[str, Any],
    finish: Callable[[Cell, dict], None],
    isolate: bool = False,
    stall_s: float | None = None,
) -> tuple[list[Cell], int]:
    """Run cells from ``queue`` on a fresh pool of ``jobs`` spawned workers until the queue is empty
    or the pool breaks.  Returns (the cells in flight when it broke, cells finished).

    ``isolate``: a fresh worker per cell.  ``stall_s``: a cell whose worker stamps no progress for this
    long is killed and recorded (module docstring); the pool then breaks, and the other cells in flight
    go back to the queue, not to the suspects (the cause is known)."""
    suspects: list[Cell] = []
    finished = 0
    killed = False
    poll_s = None if stall_s is None else min(1.0, stall_s / 4)
    with _worker_env(_threads_per_worker(jobs)):
        ctx = multiprocessing.get_context("spawn")
        beats, pids = ctx.Array("d", jobs, lock=False), ctx.Array("q", jobs, lock=False)
        pool = ProcessPoolExecutor(
            jobs,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(os.getpid(), ctx.Value("i", 0), jobs, isolate, beats, pids),
            max_tasks_per_child=1 if isolate else None,
        )
        inflight: dict[Future, tuple[Cell, int]] = {}
        free = list(range(jobs - 1, -1, -1))  # heartbeat slots; one per cell in flight
        try:
            while queue or inflight:
                while queue and len(inflight) < jobs and not suspects and not killed:
                    cell, slot = queue.popleft(), free.pop()
                    beats[slot], pids[slot] = time.time(), 0  # start-up: limit max(stall_s, STARTUP_S)
                    try:
                        fut = pool.submit(
                            _watched, runner, cell.kwargs, options, slot, jobs if isolate else 0
                        )
                    except BrokenProcessPool:
                        queue.appendleft(cell)
                        free.append(slot)
                        break
                    inflight[fut] = (cell, slot)
                if not inflight:
                    break
                done, _ = wait(inflight, timeout=poll_s, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done, _ = wait(inflight)  # a broken pool fails every future it holds
                for fut in done:
                    cell, slot = inflight.pop(fut)
                    free.append(slot)
                    err = fut.exception()
                    if isinstance(err, BrokenProcessPool):
                        # after a kill the cause is known: the others only lost their pool; run them again
                        (queue.appendleft if killed else suspects.append)(cell)
                        continue
                    finish(
                        cell,
                        fut.result() if err is None else _exception_record(cell.kwargs, err),
                    )
                    finished += 1
                if stall_s is not None:
                    now = time.time()
                    for fut, (cell, slot) in list(inflight.items()):
                        # until its task starts (pid stamped), a worker is still starting up: on a
                        # loaded machine spawning and importing JAX take seconds, not a deadlock
                        limit = stall_s if pids[slot] else max(stall_s, STARTUP_S)
                        if fut.done() or now - beats[slot] <= limit:
                            continue
                        _kill_worker(pool, int(pids[slot]))
                        del inflight[fut]
                        free.append(slot)
                        finish(cell, failed_record(cell.kwargs, "error", STALLED.format(stall_s=stall_s)))
                        finished += 1
                        killed = True
                if suspects or (killed and not inflight):
                    break
        except BaseException:  # KeyboardInterrupt: stop the workers; their cells stay unrecorded
            _terminate(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
    return suspects, finished


def _run_local(
    todo: list[Cell],
    jobs: int,
    runner: Runner,
    options: dict[str, Any],
    finish,
    isolate: bool = False,
    stall_s: float | None = None,
) -> None:
    """Run cells in ``jobs`` spawned worker processes; a crashed worker's cell is found and recorded,
    a stalled one killed and recorded (:func:`_pool_pass`)."""
    queue = deque(todo)
    while queue:
        suspects, finished = _pool_pass(queue, jobs, runner, options, finish, isolate, stall_s)
        if not suspects and not finished and queue:
            raise RuntimeError("the worker processes died before running any cell")
        if len(suspects) == 1:  # the only cell in flight killed its worker
            finish(suspects[0], failed_record(suspects[0].kwargs, "error", WORKER_CRASHED))
        elif suspects:  # several were in flight: rerun them one at a time to find the culprit(s)
            _run_local(suspects, 1, runner, options, finish, isolate, stall_s)


def _run_dask(todo: list[Cell], scheduler: Any, runner: Runner, options: dict[str, Any], finish) -> None:
    """Send cells to a Dask cluster; the workers return records and only this process writes them."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ParamError("--executor dask needs dask and distributed: pip install dask distributed") from None
    if not scheduler:
        raise ParamError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    try:
        client = Client(scheduler)
    except (OSError, TimeoutError, ValueError) as err:
        raise ParamError(f"cannot connect to the Dask scheduler {scheduler!r}: {err}") from None
    with client:
        futures = {
            client.submit(
                runner,
                cell.kwargs,
                options,
                key=f"hierbench-{cell.cell_id}-{uuid.uuid4().hex[:8]}",
                pure=False,
            ): cell
            for cell in todo
        }
        try:
            for fut in as_completed(futures):
                cell = futures[fut]
                try:
                    record = fut.result()
                except Exception as err:  # e.g. KilledWorker: the cell kept killing its workers
                    record = _exception_record(cell.kwargs, err)
                finish(cell, record)
                fut.release()
        except BaseException:
            client.cancel(list(futures))
            raise


def _sweep_lock(out: Path) -> contextlib.ExitStack:
    """Hold ``<out>.lock`` (:func:`hierbench._io.file_lock`) for the sweep, or raise :class:`ParamError`
    at once if another sweep holds it."""
    lock_path = out.with_name(out.name + ".lock")
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(file_lock(lock_path, blocking=False))
    except BlockingIOError:
        raise ParamError(
            f"another sweep is writing {out} (lock {lock_path}); wait for it or choose another --out"
        ) from None
    return stack


def _describe(cell: Cell) -> str:
    kw = cell.kwargs
    data = " ".join(f"{k}={v}" for k, v in kw["data_params"].items())
    options = " ".join(f"{k}={v}" for k, v in (kw.get("backend_options") or {}).items())
    backend = f" | {kw['backend']} {options}".rstrip() if "backend" in kw else ""
    steps = f"{kw['steps']} steps" if kw["steps"] is not None else f"the steps that fit {kw['budget_s']:g} s"
    line = f"{cell.label} | {kw['dataset']} {data}{backend} | run seed {kw['seed']}, {steps}"
    return line.replace("  ", " ")


def _outcome(record: Record) -> str:
    parts = [record["status"]]
    if record["kl_per_group"] is not None:
        parts.append(f"KL/N {record['kl_per_group']:.3g}")
    elif record["elbo"] is not None:
        parts.append(f"ELBO {record['elbo']:.4g}")
    if record["wall_s"]:
        parts.append(f"{record['wall_s']:.1f} s")
    if record["status"] == "error" and record.get("error"):
        parts.append(str(record["error"]).splitlines()[0][:200])
    return ", ".join(parts)


def run_sweep(
    experiment: Experiment | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    jobs: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    references: str | os.PathLike | None = REFERENCES_DIR,
    compilation_cache: bool = False,
    progress: bool | None = None,
    runner: Runner = run_cell,
    cells: list[Cell] | None = None,
    isolate: bool | None = None,
    stall_s: float | None = None,
) -> SweepResult:
    """Run an experiment's cells that have no record yet, appending one record per cell to ``out``.

    Parameters
    ----------
    experiment : Experiment, str or path
        A loaded experiment, a file, or the name of a shipped experiment.
    out : path, optional
        The records file (JSON lines); default ``results/sweeps/<name>[-quick]/records.jsonl``.
    quick : bool
        Apply the experiment's ``--quick`` overrides.
    jobs : int
        Local worker processes (spawned, never forked; with K > 1 each is pinned to its 1/K share of
        the CPUs).  0 runs the cells in this process (no isolation from crashes; for debugging).
    executor : {"local", "dask"}
        Where cells run: local processes, or a Dask cluster at ``scheduler``.
    scheduler : str or object, optional
        The Dask scheduler address (``tcp://host:8786``), or anything ``distributed.Client`` accepts.
    retry_failed : bool
        Also rerun cells whose only records are errors.
    dry_run : bool
        Validate and list the cells (``todo`` or ``done``) without running anything.
    references : path, optional
        The reference store passed to run_one (None: none).
    compilation_cache : bool
        Switch on JAX's persistent compilation cache in every worker (see :func:`run_cell`): cells of
        the same shapes then compile once, and their ``compile_s`` is the time to load the program.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal).
    runner : callable
        ``runner(kwargs, options) -> record`` executed per cell (default :func:`run_cell`); it must be
        importable by name to reach worker processes.
    cells : list of Cell, optional
        The cells to run (default: all of :func:`expand`'s): a command that offers a subset of an
        experiment (e.g. ``hierbench bench --sizes``) selects them from :func:`expand`'s list.
    isolate : bool, optional
        One fresh worker process per cell (default: the experiment's ``isolate``); local workers only.
    stall_s : float, optional
        Kill a worker that reports no progress for this many seconds and record its cell as an error
        (default: the experiment's ``stall_s``, else no watchdog); local workers only (module docstring).

    Returns
    -------
    SweepResult
        Counts of skipped cells, statuses of cells run now, and the cells whose records are all errors.

    Raises
    ------
    ParamError
        For a bad experiment (unknown name, bad TOML, unknown method, dataset or parameter, bad
        value), bad options, or a records file another sweep holds; nothing has run then.
    """
    from tqdm.auto import tqdm

    if not isinstance(experiment, Experiment):
        experiment = load_experiment(find_experiment(experiment))
    if executor not in EXECUTORS:
        raise ParamError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if not isinstance(jobs, int) or jobs < 0:
        raise ParamError(f"jobs must be an integer >= 0, got {jobs!r}")
    if executor == "dask" and not scheduler:
        raise ParamError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    isolate = experiment.isolate if isolate is None else bool(isolate)
    stall_s = experiment.stall_s if stall_s is None else check_stall_s(stall_s)
    cells = expand(experiment, quick=quick) if cells is None else list(cells)
    validate(cells, str(experiment.path or experiment.name))
    out = Path(out) if out is not None else default_out(experiment.name, quick)
    options = {
        "references": None if references is None else str(Path(references).resolve()),
        "compilation_cache": bool(compilation_cache),
    }
    name = experiment.name + ("-quick" if quick else "")

    def read_existing() -> list[Record]:  # validated; unreadable lines are skipped with a warning
        return read_records([out]) if out.is_file() else []

    if dry_run:
        todo, skip = pending(cells, read_existing(), retry_failed)
        todo_ids = {c.cell_id for c in todo}
        if experiment.description:
            print(experiment.description)
        for cell in cells:
            print(f"{'todo' if cell.cell_id in todo_ids else 'done'}  {cell.cell_id}  {_describe(cell)}")
        return SweepResult(name, out, len(cells), len(skip), Counter({"todo": len(todo)}), dry_run=True)

    t0 = time.perf_counter()
    with _sweep_lock(out):
        seal(out)
        existing = read_existing()
        todo, skip = pending(cells, existing, retry_failed)
        result = SweepResult(name, out, len(cells), skipped=len(skip))
        statuses: dict[str, set[str]] = {}
        for rec in existing:
            statuses.setdefault(rec.get("cell_id"), set()).add(rec["status"])
        bar = tqdm(
            total=len(todo),
            desc=f"sweep {name}",
            unit="cell",
            disable=None if progress is None else not progress,
            file=sys.stderr,
        )
        counter = itertools.count(1)

        def finish(cell: Cell, record: dict[str, Any]) -> None:
            problems = validate_record(record)
            if problems:  # written as is, the line would be skipped on resume and the cell rerun forever
                record = failed_record(
                    cell.kwargs, "error", f"the runner returned an invalid record: {'; '.join(problems)}"
                )
            record = dict(record) | {
                "experiment": experiment.name,
                "cell_id": cell.cell_id,
                "label": cell.label,
                "quick": quick,
                "cell": cell.kwargs,
                "compilation_cache": options["compilation_cache"],
            }
            append_record(out, record)
            status = record["status"]
            statuses.setdefault(cell.cell_id, set()).add(status)
            result.ran[status] += 1
            bar.update(1)
            failed = sum(n for s, n in result.ran.items() if s == "error")
            bar.set_postfix_str(f"done {sum(result.ran.values())}, skipped {result.skipped}, failed {failed}")
            bar.write(f"[{next(counter)}/{len(todo)}] {_describe(cell)}: {_outcome(record)}", file=sys.stdout)

        with bar:
            bar.set_postfix_str(f"done 0, skipped {result.skipped}, failed 0")
            if todo and executor == "dask":
                _run_dask(todo, scheduler, runner, options, finish)
            elif todo and jobs == 0:
                for cell in todo:
                    try:
                        record = runner(cell.kwargs, options)
                    except Exception as err:  # a custom runner that raises
                        record = _exception_record(cell.kwargs, err, traceback.format_exc())
                    finish(cell, record)
            elif todo:
                _run_local(todo, jobs, runner, options, finish, isolate, stall_s)
    result.failed = [c.cell_id for c in cells if statuses.get(c.cell_id, set()) == {"error"}]
    result.wall_s = time.perf_counter() - t0
    return result
