"""Run records: one JSON object per line, appended atomically, with full provenance.

Never pickle: records are plain JSON so anyone can read them with any tool.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("jax", "jaxlib", "numpyro", "optax", "numpy", "scipy", "pandas", "array-api-compat", "torch")
REPO_ROOT = Path(__file__).resolve().parent.parent


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


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as a single line, under an exclusive lock, flushed and fsynced.

    One ``write`` of a complete line under ``flock`` means concurrent writers never interleave and a
    crash leaves at most a torn last line, which :func:`read_records` skips with a warning.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_jsonable(record), allow_nan=False, sort_keys=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read records from JSONL files, skipping (with a warning) lines that are not complete JSON."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for num, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    warnings.warn(f"{path}:{num}: skipping a line that is not complete JSON", stacklevel=2)
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
