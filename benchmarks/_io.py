"""The one home of hierbench's file plumbing: atomic writes, file locks, locked appends, default paths.

Every file hierbench writes goes through here, so a crash never leaves a half-written file behind
(:func:`atomic_write`), a set of outputs is replaced as one (:func:`replace_files`), two processes never
interleave a line (:func:`append_line`), and two sweeps never write the same records file
(:func:`file_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse an output path this process cannot write, before any work is done: a temporary file is
    written and removed in the nearest existing folder on the way to ``path``'s folder (``path`` itself
    with ``folder``), so a refusal, or a run refused later for another reason, leaves nothing behind;
    an existing file must be writable.  Raises :class:`~hierbench.datasets.base.ParamError` (exit 2)."""
    from hierbench.datasets.base import ParamError

    path = Path(path)
    where = path if folder else path.parent
    nearest = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    if not nearest.is_dir():
        raise ParamError(f"cannot write into {where}: {nearest} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as err:
        raise ParamError(f"cannot write into {where}: {err.strerror or err}") from None
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise ParamError(f"cannot write {path}: the file is not writable")
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text (UTF-8)."""
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of bytes."""
    return atomic_write(path, lambda fh: fh.write(data))


def replace_files(
    files: Mapping[str | os.PathLike, str | bytes], remove: Iterable[str | os.PathLike] = ()
) -> list[Path]:
    """Replace a set of files as one: every path of ``files`` gets its content (str: UTF-8) and every
    path of ``remove`` is deleted, or, on any failure, nothing changes.

    Every content is first written to a temporary file beside its path and fsynced (a failure there
    changes nothing); then each path is swapped in with :func:`os.replace`, keeping a hard link to the
    file it replaces, and a failure among the swaps puts every replaced or removed file back.  Only a
    crash of the process during the swaps (microseconds, after everything was written) can leave a mix,
    with the old files beside it as ``.<name>.<token>.bak``.  Returns the written paths.
    """
    staged: list[tuple[Path, Path]] = []  # (temporary file, path)
    try:
        for path, content in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared and committed
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    token = uuid.uuid4().hex[:8]
    done: list[tuple[Path, Path | None]] = []  # (path, backup of what it was; None: it was not there)
    try:
        for tmp, path in staged:
            done.append((path, _backup(path, token)))
            os.replace(tmp, path)
        for path in map(Path, remove):
            if path.exists():
                backup = path.with_name(f".{path.name}.{token}.bak")
                os.replace(path, backup)
                done.append((path, backup))
    except BaseException:
        for path, backup in reversed(done):
            if backup is not None:
                os.replace(backup, path)
                backup.unlink(missing_ok=True)  # rename does nothing where both are links of one file
            else:
                path.unlink(missing_ok=True)
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)
    for folder in {path.parent for _, path in staged}:
        _fsync_dir(folder)
    return [path for _, path in staged]


def _backup(path: Path, token: str) -> Path | None:
    """A hard link (else a copy) of ``path`` as ``.<name>.<token>.bak``; None when there is no file."""
    if not path.exists():
        return None
    backup = path.with_name(f".{path.name}.{token}.bak")
    try:
        os.link(path, backup)
    except OSError:  # a file system without hard links
        shutil.copy2(path, backup)
    return backup


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not every file system syncs a folder
        pass
    finally:
        os.close(fd)


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
