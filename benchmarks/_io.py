"""The one home of hierbench's file plumbing: atomic writes, file locks, locked appends, default paths.

Every file hierbench writes goes through here, so a crash never leaves a half-written file behind
(:func:`atomic_write`), two processes never interleave a line (:func:`append_line`), and two sweeps
never write the same records file (:func:`file_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path("results")  # relative to the working directory: `make` runs from the checkout
REFERENCES_DIR = RESULTS_DIR / "references"
SWEEPS_DIR = RESULTS_DIR / "sweeps"
BASELINES_DIR = RESULTS_DIR / "baselines"


def cache_dir() -> Path:
    """Project-local cache folder (compiled XLA programs, Stan models, generated data):
    ``$HIERBENCH_CACHE_DIR`` or ``.cache/hierbench`` under the current directory."""
    return Path(os.environ.get("HIERBENCH_CACHE_DIR", Path.cwd() / ".cache" / "hierbench"))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], binary: bool = True) -> Path:
    """Write ``path`` all or nothing: ``write(fh)`` fills a temporary file in the same folder, which is
    fsynced and renamed over ``path`` (readable by all: 0644).  On any failure ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared and committed
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text (UTF-8)."""
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of bytes."""
    return atomic_write(path, lambda fh: fh.write(data))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock (POSIX ``flock``) on ``path`` (created if missing).

    With ``blocking=False`` raise :class:`BlockingIOError` at once if another process holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one complete line under an exclusive lock, flushed and fsynced.

    One ``write`` of a whole line under ``flock`` means concurrent writers never interleave, and a
    crash leaves at most a torn last line (which :func:`seal` ends and readers skip).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not line.endswith("\n"):
        line += "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def seal(path: str | os.PathLike) -> None:
    """End a torn last line (a crash mid-append) so that the next line starts a line of its own."""
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
