"""Run records: the versioned schema, its constructors, the one reader, and provenance.

One JSON object per line, appended under a lock (:func:`append_record`).  Never pickle: records are
plain JSON so anyone can read them with any tool.  A record is made by :func:`new_record` and closed by
:func:`finish` (or made whole by :func:`failed_record`); :func:`read_records` validates every line
(:func:`validate`) and counts, by file and line, what it skips.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from hierbench._io import REPO_ROOT, append_line

PACKAGES = ("jax", "jaxlib", "numpyro", "optax", "numpy", "scipy", "pandas", "array-api-compat", "torch")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/jax scalars and arrays to JSON types; non-finite floats become ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "infeasible", "unavailable", "error")

# The fields every record has, with their JSON types (None allowed where listed).  Anything else a
# runner adds (accuracy, trace details, sweep and scale provenance) is optional and documented where
# it is written; the reader keeps it as is.
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
REQUIRED: dict[str, tuple[type, ...]] = {
    "record_id": (str,),
    "method": (str,),
    "dataset": (str,),
    "data_params": (dict,),
    "method_params": (dict,),
    "seed": (int,),
    "status": (str,),
    "elbo": _OPT_NUM,
    "elbo_se": _OPT_NUM,
    "log_evidence": _OPT_NUM,
    "kl": _OPT_NUM,
    "kl_per_group": _OPT_NUM,
    "global_mean": (list, type(None)),
    "global_sd": (list, type(None)),
    "steps": (int,),
    "grad_evals": (int, type(None)),
    "wall_s": _NUM,
    "compile_s": _OPT_NUM,
    "trace": (list,),
}
TRACE_REQUIRED: dict[str, tuple[type, ...]] = {"step": (int,), "wall_s": _NUM, "elbo": _OPT_NUM}


class Record(TypedDict, total=False):
    """One run.  :data:`REQUIRED` lists the fields every record has; the rest are optional.

    ``status`` is one of :data:`STATUSES`; every status but ``ok`` carries ``error`` (why).  A record
    is made by :func:`new_record` (status ``error`` until the run ends) and closed by
    :func:`finish`, or made whole by :func:`failed_record` when a run produced nothing of its own.
    """

    schema_version: int
    record_id: str
    method: str
    dataset: str
    data_params: dict[str, Any]
    method_params: dict[str, Any]
    seed: int
    backend: str
    status: str
    error: str
    traceback: str
    elbo: float | None
    elbo_se: float | None
    iw_elbo: float | None
    iw_elbo_se: float | None
    log_evidence: float | None
    kl: float | None
    kl_per_group: float | None
    global_mean: list[float] | None
    global_sd: list[float] | None
    num_groups: int
    num_obs: int
    steps: int
    grad_evals: int | None
    group_evals: int
    wall_s: float
    compile_s: float | None
    eval_compile_s: float
    steps_per_s: float | None
    trace: list[dict[str, Any]]
    accuracy: dict[str, Any] | None
    reference: str
    budget_s: float
    planned_steps: int
    stopped: str
    memory_bytes: float
    env: dict[str, Any]


def new_record(
    method: str,
    dataset: str,
    data_params: dict[str, Any] | None = None,
    method_params: dict[str, Any] | None = None,
    seed: int = 0,
    backend: str = "jax",
    **fields: Any,
) -> Record:
    """A record before its run: every :data:`REQUIRED` field present, status ``error`` until
    :func:`finish` says otherwise (so a run that dies half-way is never read as a result)."""
    record: Record = {
        "schema_version": SCHEMA_VERSION,
        "record_id": uuid.uuid4().hex,
        "method": method,
        "dataset": dataset,
        "data_params": dict(data_params or {}),
        "method_params": dict(method_params or {}),
        "seed": seed,
        "backend": backend,
        "status": "error",
        "elbo": None,
        "elbo_se": None,
        "log_evidence": None,
        "kl": None,
        "kl_per_group": None,
        "global_mean": None,
        "global_sd": None,
        "steps": 0,
        "grad_evals": 0,
        "wall_s": 0.0,
        "compile_s": None,
        "trace": [],
    }
    record |= fields  # type: ignore[typeddict-item]
    return record


def finish(record: Record, status: str, error: str | None = None, **fields: Any) -> Record:
    """Close ``record`` with ``status`` (one of :data:`STATUSES`); every status but ``ok`` needs an
    ``error`` saying why.  ``fields`` are merged in.  Returns the same dict."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    if status != "ok" and not error:
        raise ValueError(f"a {status!r} record needs an error message")
    record |= fields  # type: ignore[typeddict-item]
    record["status"] = status
    if error is not None:
        record["error"] = error
    return record


def error_line(record: dict[str, Any], width: int = 200) -> str:
    """The first line of a record's error, at most ``width`` characters ("" when it has none)."""
    error = str(record.get("error") or "")
    return error.splitlines()[0][:width] if error else ""


def failed_record(identity: dict[str, Any], status: str, error: str, **fields: Any) -> Record:
    """A whole record of a run that produced none of its own (an exception before the run, a dead
    worker): ``identity`` holds run_one-style keys (method, dataset, data_params, method_params,
    seed, backend); provenance is added best effort."""
    record = new_record(
        str(identity.get("method") or ""),
        str(identity.get("dataset") or ""),
        identity.get("data_params"),
        identity.get("method_params"),
        identity.get("seed") if isinstance(identity.get("seed"), int) else 0,
        str(identity.get("backend") or "jax"),
    )
    try:
        record["env"] = env_info(None)
    except Exception:  # provenance is best effort here
        record["env"] = {}
    return finish(record, status, error, **fields)


def validate(record: Any) -> list[str]:
    """What is wrong with one parsed line as a record (an empty list: nothing)."""
    if not isinstance(record, dict):
        return [f"not a JSON object but {type(record).__name__}"]
    problems = []
    version = record.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        problems.append(f"schema_version {version!r} is not one this hierbench reads (<= {SCHEMA_VERSION})")
    for key, types in REQUIRED.items():
        if key not in record:
            problems.append(f"missing field {key!r}")
        elif not isinstance(record[key], types) or isinstance(record[key], bool) and bool not in types:
            problems.append(f"field {key!r} is {type(record[key]).__name__}, not {_names(types)}")
    if record.get("status") not in STATUSES and "status" in record:
        problems.append(f"status {record['status']!r} is not one of {', '.join(STATUSES)}")
    for i, point in enumerate(record.get("trace") or [] if isinstance(record.get("trace"), list) else []):
        if not isinstance(point, dict):
            problems.append(f"trace[{i}] is not an object")
            break
        bad = [k for k, t in TRACE_REQUIRED.items() if not isinstance(point.get(k, ...), t)]
        if bad:
            problems.append(f"trace[{i}] has no valid {', '.join(bad)}")
            break
    return problems


def _names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


class Records(list):
    """The records read from one or more files (a list), with ``skipped``: one
    ``(file, line, reason)`` per line that could not be read as a record."""

    skipped: list[tuple[str, int, str]]


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as a single JSON line (locked, flushed, fsynced: :func:`_io.append_line`)."""
    append_line(path, json.dumps(to_jsonable(record), allow_nan=False, sort_keys=False))


def read_records(paths: Iterable[str | os.PathLike], warn: bool = True) -> Records:
    """Read and validate records from JSON-lines files.

    Lines that are not UTF-8, not JSON, or not a valid record (:func:`validate`) are skipped and
    counted in ``result.skipped`` as (file, line, reason); with ``warn`` one warning names them all.
    """
    out = Records()
    out.skipped = []
    for path in paths:
        with open(path, "rb") as fh:
            for num, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    out.skipped.append((str(path), num, "not UTF-8"))
                    continue
                except json.JSONDecodeError:
                    out.skipped.append((str(path), num, "not complete JSON"))
                    continue
                problems = validate(rec)
                if problems:
                    out.skipped.append((str(path), num, "; ".join(problems)))
                else:
                    out.append(rec)
    if warn and out.skipped:
        where = ", ".join(f"{f}:{n} ({why})" for f, n, why in out.skipped[:10])
        more = f" and {len(out.skipped) - 10} more" if len(out.skipped) > 10 else ""
        warnings.warn(f"skipped {len(out.skipped)} unreadable record line(s): {where}{more}", stacklevel=2)
    return out


@functools.cache
def _static_env() -> dict[str, Any]:
    versions = {"python": platform.python_version(), "hierbench": _version("hierbench")}
    versions |= {name: _version(name) for name in PACKAGES}
    return {
        "versions": versions,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "git_sha": _git("rev-parse", "HEAD"),
        # dirty = uncommitted changes to the code; generated output under results/ does not count
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")),
        "argv": sys.argv,
    }


def env_info(dtype: str | None = None) -> dict[str, Any]:
    """Provenance for a record: package versions, CPU, git SHA (and whether the tree was dirty),
    the JAX backend and devices, the training dtype and a UTC timestamp."""
    import jax

    return _static_env() | {
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "dtype": dtype,
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
