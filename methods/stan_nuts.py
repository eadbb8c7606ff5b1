"""Stan's NUTS (CmdStan via cmdstanpy, or PyStan 3) on the dataset's own Stan program: a cross-check.

The program is ``datasets/stan/<model name, '-' → '_'>.stan`` (package data of
:mod:`hierbench.datasets`) run on ``model.stan_data``; it outputs the model's natural parameters
under the names of :func:`~hierbench.datasets.base.natural_draws`, so its draws are compared with
numpyro's (:mod:`hierbench.methods.nuts`) and with exact posteriors name by name.  Stan runs
``hmc_nuts_diag_e_adapt`` (diagonal mass matrix) with its default initialization, Uniform(−2, 2)
on the unconstrained scale, seeded by ``run(seed)``; chains ``1..C`` share the seed and Stan
derives their streams from the chain id, so a run is a deterministic function of the seed.

Backends (``backend="auto"`` takes the first available):

* ``"cmdstanpy"``: cmdstanpy with a CmdStan installation (``cmdstanpy.cmdstan_path()`` succeeds).
  The program is copied to ``<cache>/cmdstan/<name>-<hash>.stan`` and compiled there once.
* ``"pystan"``: PyStan 3 (``import stan``; it needs ``pkg_resources``, i.e. ``setuptools<81``).
  httpstan compiles in-process and keeps the built extension, keyed by the program text, under
  ``<cache>/httpstan/<httpstan version>``; PyStan's ``stan.build`` calls ``asyncio.run``, so it
  cannot be used inside a running event loop (e.g. Jupyter) — fine for the harness and tests.

``<cache>`` is ``$HIERBENCH_CACHE_DIR`` or ``.cache/hierbench`` under the working directory, the folder
:mod:`hierbench.methods.nuts` keeps JAX's compilation cache in.  For PyStan it is fixed the first time a
model is built in the process (httpstan's sampling workers are forked then and keep it).  httpstan
would also cache every seeded *fit* and hand it back on a rerun with the same seed without sampling;
we keep fits in a private temporary folder and delete them after each run, so ``sample_s`` is always
a real run.  httpstan's model key hashes the program text *and* ``sys.executable``, so ``python`` and
``python3`` of one venv build separately.  Builds of one program are serialized across processes by
a lock file next to it (pytest-xdist workers would otherwise compile into the same folder at once).

``compile_s`` is the model build (stanc + C++ compile, or a cache hit, plus loading the data) and
``sample_s`` the wall time of warmup + sampling of all chains (PyStan runs them in parallel
processes, cmdstanpy in parallel CmdStan processes).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.resources
import io
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from hierbench._io import atomic_write_text, cache_dir, file_lock
from hierbench.datasets.base import HierModel, ParamError, check_positive_int, natural_draws
from hierbench.methods.base import Posterior, Sampler, Unavailable, check_choice

PYSTAN_REQUIREMENT = "pystan==3.10.0"
INSTALL_HINT = (
    f"install {PYSTAN_REQUIREMENT} with 'setuptools<81' (pip install {PYSTAN_REQUIREMENT} 'setuptools<81'), "
    "or CmdStan + cmdstanpy (pip install cmdstanpy && python -m cmdstanpy.install_cmdstan)"
)
BACKENDS = ("auto", "cmdstanpy", "pystan")
MAX_SEED = 2**32 - 1  # Stan's seeds are unsigned 32-bit integers

logger = logging.getLogger(__name__)


def program_file(model: HierModel) -> str:
    """File name of the model's Stan program under ``datasets/stan``."""
    return model.name.replace("-", "_") + ".stan"


def stan_program(model: HierModel) -> str:
    """The text of the model's Stan program.

    A Stan program is optional for a dataset: without one this raises :class:`Unavailable` (the run
    is recorded ``unavailable``); a program without ``model.stan_data`` is the dataset's bug
    (:class:`ParamError`).
    """
    resource = importlib.resources.files("hierbench.datasets") / "stan" / program_file(model)
    if not resource.is_file():
        raise Unavailable(
            f"unavailable: no Stan program for {model.name} (datasets/stan/{program_file(model)})"
        )
    if model.stan_data is None:
        raise ParamError(f"dataset {model.name!r} ships datasets/stan/{program_file(model)} but no stan_data")
    return resource.read_text(encoding="utf-8")


def natural_shapes(model: HierModel) -> dict[str, tuple[int, ...]]:
    """Names and per-draw shapes the Stan program must output: those of ``natural_draws``."""
    theta = np.zeros((1, model.dim_global))
    z = np.zeros((1, model.num_groups, model.dim_local))
    return {name: tuple(value.shape[1:]) for name, value in natural_draws(model, theta, z).items()}


# --------------------------------------------------------------------------------------------------
# Backend discovery


def _import_pystan() -> Any:
    """``import stan`` (PyStan 3) without its import-time noise (pkg_resources' deprecation, httpstan's
    marshmallow-4 warnings): nothing we can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import stan

    return stan


def _cmdstanpy_problem() -> str | None:
    """Why the cmdstanpy backend cannot run here, or None if it can."""
    try:
        import cmdstanpy
    except ImportError:
        return "cmdstanpy is not installed"
    try:
        cmdstanpy.cmdstan_path()
    except Exception as err:  # ValueError when no installation is found; anything else is as fatal
        return f"cmdstanpy finds no CmdStan installation ({err})"
    return None


def _pystan_problem() -> str | None:
    """Why the PyStan backend cannot run here, or None if it can."""
    try:
        _import_pystan()
    except ImportError as err:
        return f"PyStan 3 cannot be imported ({err})"
    return None


def resolve_backend(backend: str) -> str:
    """``"cmdstanpy"`` or ``"pystan"`` for ``backend``; :class:`Unavailable` naming what to install."""
    check_choice("backend", backend, BACKENDS)
    problems = []
    if backend in ("auto", "cmdstanpy"):
        problem = _cmdstanpy_problem()
        if problem is None:
            return "cmdstanpy"
        problems.append(problem)
    if backend in ("auto", "pystan"):
        problem = _pystan_problem()
        if problem is None:
            return "pystan"
        problems.append(problem)
    raise Unavailable(f"stan-nuts (backend={backend!r}) cannot run: {'; '.join(problems)}; {INSTALL_HINT}")


# --------------------------------------------------------------------------------------------------
# Draw layouts


def split_pystan(fit: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``fit[name]`` of a PyStan 3 fit as ``(C, S, *shape)``.

    PyStan returns ``(*shape, S·C)`` whose last axis is ``_draws[..., s, c]`` flattened in C order,
    i.e. index ``s·C + c``: the chains are *interleaved*, not concatenated (``stan.fit.Fit.__getitem__``
    reshapes the ``(P, S, C)`` store).  Scalars come back as ``(1, S·C)``.
    """
    chains = int(fit.num_chains)
    values = np.asarray(fit[name], dtype=np.float64)
    per_chain = values.size // (chains * max(1, int(np.prod(shape, dtype=np.int64))))
    values = values.reshape(*shape, per_chain, chains)
    return np.moveaxis(values, (-1, -2), (0, 1))


def split_cmdstanpy(values: np.ndarray, chains: int, shape: tuple[int, ...]) -> np.ndarray:
    """``CmdStanMCMC.stan_variable(name)`` ``(C·S, *shape)``, chain by chain, as ``(C, S, *shape)``.

    cmdstanpy documents its draws "in chain order": the first S rows are chain 1, and so on.
    Scalars come back as ``(C·S,)`` (or ``(C·S, 1)`` in old versions).
    """
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(chains, -1, *shape)


def _stats(diverging: np.ndarray, energy: np.ndarray, num_steps: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "diverging": np.asarray(diverging) != 0,
        "energy": np.asarray(energy, dtype=np.float64),
        "num_steps": np.asarray(num_steps).astype(np.int64),
    }


def _check_shapes(
    natural: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], chains: int, draws: int
) -> None:
    for name, shape in shapes.items():
        if natural[name].shape != (chains, draws, *shape):
            raise RuntimeError(
                f"Stan output {name!r} has shape {natural[name].shape}, expected {(chains, draws, *shape)}"
            )


# --------------------------------------------------------------------------------------------------
# PyStan 3

_HTTPSTAN_FITS: Path | None = None  # this process's private folder for httpstan's fit files


def _use_project_cache_for_httpstan() -> None:
    """Point httpstan's model cache at ``cache_dir()/httpstan`` and its fit cache at a private folder.

    httpstan (4.13) resolves every path through ``httpstan.cache.cache_directory()`` and
    ``httpstan.cache.fit_path()`` at call time, in this process and in the sampling workers it forks
    on first use, so we replace both once per process (later calls are no-ops: forked workers keep
    the paths they were forked with).
    """
    global _HTTPSTAN_FITS
    if _HTTPSTAN_FITS is not None:
        return
    import httpstan
    import httpstan.cache

    models_root = (cache_dir() / "httpstan" / httpstan.__version__).resolve()
    fits_root = Path(tempfile.mkdtemp(prefix="hierbench-httpstan-fits-"))
    atexit.register(shutil.rmtree, fits_root, True)

    def cache_directory() -> Path:
        return models_root

    def fit_path(fit_name: str) -> Path:
        return fits_root / (fit_name.replace("/", "_") + ".jsonlines.gz")

    httpstan.cache.cache_directory = cache_directory
    httpstan.cache.fit_path = fit_path
    _HTTPSTAN_FITS = fits_root


def _httpstan_build_lock(program: str) -> Path:
    import httpstan.cache
    import httpstan.models

    model_id = httpstan.models.calculate_model_name(program).split("/")[1]
    return httpstan.cache.cache_directory() / "models" / f"{model_id}.lock"


def _clear_pystan_fits() -> None:
    if _HTTPSTAN_FITS is not None:
        for path in _HTTPSTAN_FITS.glob("*.jsonlines.gz"):
            path.unlink(missing_ok=True)


def _httpstan_stan_version() -> str:
    """Stan version bundled with httpstan, from its ``stan/version.hpp``."""
    import httpstan

    header = Path(httpstan.__file__).parent / "include" / "stan" / "version.hpp"
    parts = {}
    with contextlib.suppress(OSError):
        for line in header.read_text().splitlines():
            tokens = line.split()
            if len(tokens) == 3 and tokens[0] == "#define" and tokens[1].startswith("STAN_"):
                parts[tokens[1]] = tokens[2]
    keys = ("STAN_MAJOR", "STAN_MINOR", "STAN_PATCH")
    return ".".join(parts[k] for k in keys) if all(k in parts for k in keys) else "unknown"


@contextlib.contextmanager
def _captured_output(stderr_fd: bool = False) -> Iterator[None]:
    """Collect PyStan's console output and log it: at DEBUG, or at WARNING when the block failed.

    ``sys.stdout`` and ``sys.stderr`` are redirected in Python, except with ``stderr_fd=True`` (for
    ``stan.build``), where file descriptor 2 itself goes to a temporary file instead: httpstan
    silences the compiler by redirecting the descriptor behind ``sys.stderr``, which it cannot do
    if ``sys.stderr`` is a StringIO.  (Not for sampling: httpstan forks its sampling workers then,
    and they would keep the temporary file as their stderr.)  httpstan's warnings are ignored.
    """
    buffer = io.StringIO()
    spill = tempfile.TemporaryFile("w+") if stderr_fd else None
    failed = True
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", module=r"httpstan\.")  # aiohttp's NotAppKeyWarning …
            warnings.simplefilter("ignore", DeprecationWarning)  # … and importlib.resources' legacy API
            stack.enter_context(contextlib.redirect_stdout(buffer))
            stack.enter_context(_fd_redirected(2, spill) if spill else contextlib.redirect_stderr(buffer))
            yield
        failed = False
    finally:  # the streams are restored by now
        text = buffer.getvalue()
        if spill is not None:
            spill.seek(0)
            text += spill.read()
            spill.close()
        if text.strip():
            logger.log(logging.WARNING if failed else logging.DEBUG, "pystan output:\n%s", text.strip())


@contextlib.contextmanager
def _fd_redirected(fd: int, target: IO[str]) -> Iterator[None]:
    """Point file descriptor ``fd`` at ``target`` for the block (flushing ``sys.stderr`` around it)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(fd)
    try:
        os.dup2(target.fileno(), fd)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _run_pystan(
    program: str, data: dict[str, Any], shapes: dict[str, tuple[int, ...]], cfg: dict[str, Any], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, float, dict[str, Any]]:
    stan = _import_pystan()
    import httpstan

    _use_project_cache_for_httpstan()
    _clear_pystan_fits()
    try:
        start = time.perf_counter()
        with _captured_output(stderr_fd=True), file_lock(_httpstan_build_lock(program)):
            posterior = stan.build(program, data=data, random_seed=seed)
        compile_s = time.perf_counter() - start
        with _captured_output():
            start = time.perf_counter()
            fit = posterior.sample(
                num_chains=cfg["chains"],
                num_warmup=cfg["warmup"],
                num_samples=cfg["draws"],
                delta=cfg["target_accept"],
                max_depth=cfg["max_tree_depth"],
            )
            sample_s = time.perf_counter() - start
    finally:
        _clear_pystan_fits()
    natural = {name: split_pystan(fit, name, shape) for name, shape in shapes.items()}
    stats = _stats(*(split_pystan(fit, key, ()) for key in ("divergent__", "energy__", "n_leapfrog__")))
    versions = {"stan_version": _httpstan_stan_version(), "pystan_version": _version("pystan")}
    versions["httpstan_version"] = httpstan.__version__
    return natural, stats, compile_s, sample_s, versions


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------------
# CmdStan via cmdstanpy


def _cmdstan_stan_file(name: str, program: str) -> Path:
    """A copy of the program under ``cache_dir()/cmdstan``, named by its content hash.

    CmdStanModel compiles the executable next to the ``.stan`` file and reuses it while it is newer
    than the file, so the copy is written only when absent (the package folder stays untouched).
    """
    digest = hashlib.sha256(program.encode()).hexdigest()[:16]
    folder = cache_dir() / "cmdstan"
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{name}-{digest}.stan").resolve()
    if not path.is_file():
        atomic_write_text(path, program)
    return path


def _run_cmdstanpy(
    program: str,
    data: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    cfg: dict[str, Any],
    seed: int,
    name: str,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float, float, dict[str, Any]]:
    import cmdstanpy

    stan_file = _cmdstan_stan_file(name, program)
    start = time.perf_counter()
    with file_lock(stan_file.with_suffix(".lock")):
        model = cmdstanpy.CmdStanModel(stan_file=str(stan_file))
    compile_s = time.perf_counter() - start
    chains = cfg["chains"]
    start = time.perf_counter()
    fit = model.sample(
        data=data,
        chains=chains,
        iter_warmup=cfg["warmup"],
        iter_sampling=cfg["draws"],
        adapt_delta=cfg["target_accept"],
        max_treedepth=cfg["max_tree_depth"],
        seed=seed,
        show_progress=False,
    )
    sample_s = time.perf_counter() - start
    natural = {key: split_cmdstanpy(fit.stan_variable(key), chains, shape) for key, shape in shapes.items()}
    method = fit.method_variables()  # name -> (S, C) (older versions: (S, C, 1))
    draws = cfg["draws"]
    keys = ("divergent__", "energy__", "n_leapfrog__")
    stats = _stats(*(np.asarray(method[key]).reshape(draws, chains).T for key in keys))
    version = cmdstanpy.cmdstan_version()
    versions = {
        "stan_version": ".".join(map(str, version)) if version else "unknown",
        "cmdstanpy_version": getattr(cmdstanpy, "__version__", "unknown"),
    }
    return natural, stats, compile_s, sample_s, versions


# --------------------------------------------------------------------------------------------------


def make(
    model: HierModel,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    backend: str = "auto",
) -> Sampler:
    """Stan NUTS cross-check (CmdStan or PyStan 3) on the dataset's own Stan program.

    Parameters
    ----------
    model : HierModel
        The model; it must ship ``datasets/stan/<name>.stan`` and ``stan_data``.
    chains, warmup, draws : int
        Number of chains, warmup (adaptation) iterations and kept draws per chain.
    target_accept : float
        Stan's ``adapt_delta`` (step-size adaptation target), in (0, 1).
    max_tree_depth : int
        Stan's ``max_treedepth`` (at most 2^depth leapfrog steps per draw).
    backend : {"auto", "cmdstanpy", "pystan"}
        ``"auto"``: cmdstanpy if it is installed and finds CmdStan, else PyStan 3.

    Returns
    -------
    Sampler
        ``run(seed) -> Posterior`` with ``theta``/``z`` None and ``natural`` holding every name of
        :func:`~hierbench.datasets.base.natural_draws` as ``(C, S, *shape)``; ``config`` the resolved
        parameters (the backend included).

    Raises
    ------
    ParamError
        If a parameter is invalid, or the dataset ships a Stan program without ``stan_data``.
    Unavailable
        If the dataset ships no Stan program, or the requested backend (any backend, for ``"auto"``)
        is not installed; the message says what is missing.
    """
    chains = check_positive_int("chains", chains)
    warmup = check_positive_int("warmup", warmup, minimum=0)
    draws = check_positive_int("draws", draws)
    max_tree_depth = check_positive_int("max_tree_depth", max_tree_depth)
    if (
        isinstance(target_accept, bool)
        or not isinstance(target_accept, (int, float))
        or not 0 < target_accept < 1
    ):
        raise ParamError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
    check_choice("backend", backend, BACKENDS)
    program = stan_program(model)
    data = dict(model.stan_data or {})
    shapes = natural_shapes(model)
    resolved = resolve_backend(backend)
    cfg: dict[str, Any] = {
        "sampler": "stan-nuts",
        "chains": chains,
        "warmup": warmup,
        "draws": draws,
        "target_accept": float(target_accept),
        "max_tree_depth": max_tree_depth,
        "backend": resolved,
    }

    def run(seed: int) -> Posterior:
        seed = check_positive_int("seed", seed, minimum=0)
        if seed > MAX_SEED:
            raise ParamError(f"seed must be at most {MAX_SEED} (Stan seeds are 32-bit), got {seed}")
        runner: Callable[..., Any]
        if resolved == "pystan":
            runner = _run_pystan
            args: tuple = (program, data, shapes, cfg, seed)
        else:
            runner = _run_cmdstanpy
            args = (program, data, shapes, cfg, seed, program_file(model).removesuffix(".stan"))
        natural, stats, compile_s, sample_s, versions = runner(*args)
        _check_shapes(natural, shapes, chains, draws)
        settings = {**cfg, **versions, "program": program_file(model), "seed": seed}
        return Posterior(None, None, natural, stats, float(compile_s), float(sample_s), settings)

    return Sampler(run, cfg)


def note() -> str | None:
    """Which Stan backend ``backend=auto`` takes here, and what CmdStan needs (``hierbench list``)."""
    problem = _cmdstanpy_problem()
    if problem is None:
        return "backend=auto runs CmdStan through cmdstanpy"
    cmdstan = (
        "cmdstanpy is installed, only CmdStan is missing: python -m cmdstanpy.install_cmdstan"
        if problem != "cmdstanpy is not installed"
        else "for CmdStan: pip install cmdstanpy && python -m cmdstanpy.install_cmdstan"
    )
    pystan = "PyStan 3" if _pystan_problem() is None else "nothing (no PyStan 3 either)"
    return f"backend=auto runs {pystan} here; {cmdstan}"


make.note = note  # `hierbench list` prints a factory's note
