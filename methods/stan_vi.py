"""Stan's variational algorithms as peers: ADVI (meanfield, fullrank) and Pathfinder, via CmdStan.

They run the dataset's own Stan program (``datasets/stan/<name>.stan``, the one ``stan-nuts`` runs;
every term keeps its normalizing constant, so Stan's ``lp__`` is our ``log_joint``) through
cmdstanpy, and need a CmdStan installation: PyStan 3 exposes neither ADVI nor Pathfinder.  Without
one the factory raises :class:`~hierbench.methods.base.Unavailable` and the harness records
``status="unavailable"`` with the install command, so the entries stay listed, never silently dropped.

Stan owns its optimization loop (a CmdStan process), so these entries are :class:`Sampler`-shaped: one
``run(seed)`` call, timed as ``compile_s`` (stanc + C++ build, or the cached executable) and
``wall_s`` (the CmdStan run: optimization plus output draws).  The record carries the timings and the
step count; the draws (``natural``, shape ``(1, draws, *shape)``) are Stan's output in the model's
natural parameterization.  No ELBO is recorded: CmdStan's ADVI reports q's log density only up to a
parameter-dependent constant (``log_g__``), and Pathfinder's default output is importance-resampled,
so neither gives an estimate comparable with ours.  Stan's ADVI also differs in its optimizer (its own
adaptive step-size sequence, ``eta``, not Adam) and stops early on ``tol_rel_obj``.

The cmdstanpy path is exercised here only against a stand-in module (``tests/test_peers.py``): this
machine has no CmdStan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hierbench._io import file_lock
from hierbench.datasets.base import HierModel, ParamError, check_positive_int
from hierbench.methods.base import Posterior, Sampler, Unavailable
from hierbench.methods.stan_nuts import (
    MAX_SEED,
    _cmdstan_stan_file,
    _cmdstanpy_problem,
    natural_shapes,
    program_file,
    stan_program,
)

CMDSTAN_HINT = (
    "install CmdStan with cmdstanpy: pip install cmdstanpy && python -m cmdstanpy.install_cmdstan "
    "(or conda install -c conda-forge cmdstanpy); PyStan 3 has no ADVI or Pathfinder"
)
# cmdstanpy is in the lock (`make setup` installs it); CmdStan itself is a download and a C++ build
CMDSTAN_ONLY_HINT = (
    "cmdstanpy is installed, only CmdStan is missing: python -m cmdstanpy.install_cmdstan (downloads and "
    "builds CmdStan, not done by make setup); PyStan 3 has no ADVI or Pathfinder"
)


def _hint(problem: str) -> str:
    return CMDSTAN_HINT if problem == "cmdstanpy is not installed" else CMDSTAN_ONLY_HINT


def unavailable() -> str | None:
    """Why these entries cannot run here (``hierbench list`` shows it), or None when CmdStan is found."""
    problem = _cmdstanpy_problem()
    return None if problem is None else f"no CmdStan ({problem}); {_hint(problem)}"


def _require_cmdstan(name: str) -> None:
    problem = _cmdstanpy_problem()
    if problem is not None:
        raise Unavailable(f"no CmdStan: {name} needs CmdStan through cmdstanpy ({problem}); {_hint(problem)}")


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ParamError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _stan_vi(
    model: HierModel, name: str, cfg: dict[str, Any], fit: Callable[[Any, dict, int], Any], steps_key: str
) -> Sampler:
    """The Sampler running ``fit(cmdstan_model, data, seed)`` on the model's Stan program.

    ``fit`` returns a cmdstanpy fit whose ``stan_variable(name)`` gives ``(draws, *shape)``.
    """
    program = stan_program(model)  # Unavailable when the dataset ships no Stan program
    _require_cmdstan(name)
    data = dict(model.stan_data or {})
    shapes = natural_shapes(model)
    draws = cfg["draws"]

    def run(seed: int) -> Posterior:
        import cmdstanpy

        seed = check_positive_int("seed", seed, minimum=0)
        if seed > MAX_SEED:
            raise ParamError(f"seed must be at most {MAX_SEED} (Stan seeds are 32-bit), got {seed}")
        stan_file = _cmdstan_stan_file(program_file(model).removesuffix(".stan"), program)
        start = time.perf_counter()
        with file_lock(stan_file.with_suffix(".lock")):
            cmdstan_model = cmdstanpy.CmdStanModel(stan_file=str(stan_file))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        result = fit(cmdstan_model, data, seed)
        sample_s = time.perf_counter() - start
        natural = {
            key: np.asarray(result.stan_variable(key), np.float64).reshape(1, draws, *shape)
            for key, shape in shapes.items()
        }
        version = cmdstanpy.cmdstan_version()
        settings = cfg | {
            "seed": seed,
            "program": program_file(model),
            "steps": cfg[steps_key],
            "stan_version": ".".join(map(str, version)) if version else "unknown",
            "cmdstanpy_version": getattr(cmdstanpy, "__version__", "unknown"),
        }
        return Posterior(None, None, natural, {}, float(compile_s), float(sample_s), settings)

    return Sampler(run, cfg)


def _advi(model: HierModel, algorithm: str, steps, num_samples, elbo_samples, eta, tol_rel_obj, draws):
    cfg = {
        "sampler": f"stan-advi-{algorithm}",
        "algorithm": algorithm,
        "steps": check_positive_int("steps", steps),
        "num_samples": check_positive_int("num_samples", num_samples),
        "elbo_samples": check_positive_int("elbo_samples", elbo_samples),
        "eta": None if eta is None else _positive_float("eta", eta),
        "tol_rel_obj": _positive_float("tol_rel_obj", tol_rel_obj),
        "draws": check_positive_int("draws", draws),
    }

    def fit(cmdstan_model: Any, data: dict, seed: int) -> Any:
        vb = cmdstan_model.variational(
            data=data,
            seed=seed,
            algorithm=algorithm,
            iter=cfg["steps"],
            grad_samples=cfg["num_samples"],
            elbo_samples=cfg["elbo_samples"],
            eta=cfg["eta"],
            adapt_engaged=cfg["eta"] is None,  # Stan tunes eta in its adaptation phase
            tol_rel_obj=cfg["tol_rel_obj"],
            output_samples=cfg["draws"],
            require_converged=False,
            show_console=False,
        )
        return _DrawsOf(vb)

    return _stan_vi(model, cfg["sampler"], cfg, fit, "steps")


class _DrawsOf:
    """A CmdStanVB whose ``stan_variable`` returns q's draws, not its mean (cmdstanpy ≥ 1.2)."""

    def __init__(self, vb: Any):
        self.vb = vb

    def stan_variable(self, name: str) -> Any:
        return self.vb.stan_variable(name, mean=False)


def make_advi_meanfield(
    model: HierModel,
    steps: int = 10_000,
    num_samples: int = 8,
    elbo_samples: int = 100,
    eta: float | None = None,
    tol_rel_obj: float = 0.01,
    draws: int = 1000,
) -> Sampler:
    """Stan ADVI, meanfield (CmdStan via cmdstanpy); 'unavailable' without a CmdStan install.

    Parameters
    ----------
    model : HierModel
        The model; it must ship ``datasets/stan/<name>.stan`` and ``stan_data``.
    steps : int
        Maximum ADVI iterations (Stan's ``iter``).
    num_samples : int
        Monte Carlo draws per gradient (``grad_samples``; ours: ``num_samples``).
    elbo_samples : int
        Draws per ELBO estimate of Stan's convergence check.
    eta : float, optional
        Stan's step-size scale; None lets Stan's adaptation phase choose it.
    tol_rel_obj : float
        Stan's relative-ELBO-change stopping tolerance (0.01 is Stan's default).
    draws : int
        Draws of q in the output (``output_samples``).
    """
    return _advi(model, "meanfield", steps, num_samples, elbo_samples, eta, tol_rel_obj, draws)


def make_advi_fullrank(
    model: HierModel,
    steps: int = 10_000,
    num_samples: int = 8,
    elbo_samples: int = 100,
    eta: float | None = None,
    tol_rel_obj: float = 0.01,
    draws: int = 1000,
) -> Sampler:
    """Stan ADVI, fullrank (CmdStan via cmdstanpy); 'unavailable' without a CmdStan install.

    Parameters as for :func:`make_advi_meanfield`.
    """
    return _advi(model, "fullrank", steps, num_samples, elbo_samples, eta, tol_rel_obj, draws)


def make_pathfinder(
    model: HierModel,
    num_paths: int = 4,
    max_lbfgs_iters: int = 1000,
    num_elbo_draws: int = 25,
    draws: int = 1000,
) -> Sampler:
    """Stan Pathfinder (CmdStan via cmdstanpy); 'unavailable' without a CmdStan install.

    Parameters
    ----------
    model : HierModel
        The model; it must ship ``datasets/stan/<name>.stan`` and ``stan_data``.
    num_paths : int
        Single-path Pathfinder runs combined by importance resampling (Stan's default 4).
    max_lbfgs_iters : int
        L-BFGS iterations per path (recorded as ``steps``).
    num_elbo_draws : int
        Draws per ELBO estimate along each path.
    draws : int
        Draws returned after resampling.
    """
    cfg = {
        "sampler": "stan-pathfinder",
        "num_paths": check_positive_int("num_paths", num_paths),
        "max_lbfgs_iters": check_positive_int("max_lbfgs_iters", max_lbfgs_iters),
        "num_elbo_draws": check_positive_int("num_elbo_draws", num_elbo_draws),
        "draws": check_positive_int("draws", draws),
    }

    def fit(cmdstan_model: Any, data: dict, seed: int) -> Any:
        return cmdstan_model.pathfinder(
            data=data,
            seed=seed,
            num_paths=cfg["num_paths"],
            max_lbfgs_iters=cfg["max_lbfgs_iters"],
            num_elbo_draws=cfg["num_elbo_draws"],
            draws=cfg["draws"],
            show_console=False,
        )

    return _stan_vi(model, "stan-pathfinder", cfg, fit, "max_lbfgs_iters")


# `hierbench list` marks an entry whose factory has an ``unavailable() -> reason | None`` attribute.
for _factory in (make_advi_meanfield, make_advi_fullrank, make_pathfinder):
    _factory.unavailable = unavailable
