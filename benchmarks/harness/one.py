"""Run one method on one dataset and return its record.  Never raises for a failed run.

:func:`run_one` resolves the names, validates every argument, builds the model and the method, then
hands a VI method to the one timed loop (:func:`hierbench.harness.loop.fit`) on the asked backend, or
runs an MCMC sampler (which owns its loop) and gates its draws as a reference.  Timing is fair by
construction: compilation is timed apart (``compile_s``), chunks of steps are timed around the
backend's synchronization (``wall_s``), and q is scored in float64 off the clock between chunks
(:mod:`hierbench.scoring`; :mod:`hierbench.scoring_store` for a model whose ratings are kept in a
store).

Whatever the method, the record states the process's memory (:func:`~hierbench.harness.memory.memory_info`)
and, for a VI method, the memory it was estimated to need; a VI run whose estimate exceeds 80% of the
machine's memory is refused (``infeasible``) before it starts (:mod:`hierbench.harness.memory`).  A
model that knows the θ its data were simulated from (``theta_true``) gets q(θ)'s standardized error
against it; one whose ratings are kept in a store states the store's size and the padding it avoids.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import numpy as np

from hierbench import reference as refstore
from hierbench._io import cache_dir
from hierbench.accuracy import accuracy_block
from hierbench.datasets.base import HierModel, ParamError, check_positive_int
from hierbench.harness import memory
from hierbench.harness.backends import make_backend
from hierbench.harness.budget import plan_run
from hierbench.harness.checks import check_run
from hierbench.harness.loop import fit
from hierbench.harness.tune import check_tune, tuned
from hierbench.methods.base import Infeasible, Method, Sampler, Unavailable
from hierbench.records import Record, env_info, finish, new_record
from hierbench.registry import build_model, is_sampler, lookup, parse_params
from hierbench.scoring import Scorer

DEFAULT_STEPS = 10_000
METHOD_STEPS = "default"
"""``steps=METHOD_STEPS``: the method's own default step count, its ``steps`` default (DEFAULT_STEPS
unless the method sets another, as the amortized potential head does)."""
# Scorer options a run may set (``scoring``), by the data layout they apply to.
STORE_SCORING_OPTIONS = ("eval_segments",)  # ChunkedScorer's size groups (one compiled program each)


def run_one(
    method: str,
    dataset: str,
    data_params: dict[str, Any] | None = None,
    method_params: dict[str, Any] | None = None,
    seed: int = 0,
    steps: int | str | None = METHOD_STEPS,
    eval_draws: int = 1000,
    checkpoints: int = 20,
    progress: bool | None = None,
    raise_param_errors: bool = False,
    references: str | Path | None = refstore.DEFAULT_ROOT,
    backend: str = "jax",
    backend_options: dict[str, Any] | None = None,
    budget_s: float | None = None,
    chunk_steps: int | None = None,
    save_reference: str | Path | None = None,
    scoring: dict[str, Any] | None = None,
    tune: str | None = None,
    tune_grid: list[float] | None = None,
) -> Record:
    """Fit ``method`` to ``dataset`` and return its record (a JSON-ready dict).

    Parameters
    ----------
    method, dataset : str
        Registry names.
    data_params, method_params : dict, optional
        Factory parameters (strings are parsed to the right types).
    seed : int
        Seed of the run's PRNG key (initialization, minibatches, draws, scoring).
    steps : int, "default" or None
        Optimization steps (rounded up to whole chunks; the record has the count actually run).
        ``"default"`` (:data:`METHOD_STEPS`): the method's own default, also under a budget.  None with
        ``budget_s``: as many as fit the budget.
    eval_draws : int
        Draws of q per float64 ELBO estimate.
    checkpoints : int
        Off-clock trace points after step 0 (one after each chunk unless ``chunk_steps`` is set).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal, after 2 s).
    raise_param_errors : bool
        Re-raise :class:`ParamError` (the CLI turns it into exit code 2) instead of recording it.
    references : path, optional
        The reference store read for scoring: VI records get an accuracy block against the exact
        posterior or an accepted stored reference for the same data.  None: no store.
    save_reference : path, optional
        Where an MCMC method's run is stored as a (gated) reference; default the user cache
        (``.cache/hierbench/references``), never the repository's committed store unless asked
        (``hierbench reference`` builds that one).
    backend : {"jax", "torch"}
        Where a VI method trains (:mod:`hierbench.harness.backends`); scoring is the same float64 JAX
        code either way.
    backend_options : dict, optional
        The backend's options (torch: ``compile``, ``threads``, ``device``, ``compile_mode``).
    budget_s : float, optional
        A budget of optimization wall time (VI methods): the run gets ``min(steps, budget_s × the
        probed steps/s)`` steps and stops early if it overruns (:mod:`hierbench.harness.budget`).
    chunk_steps : int, optional
        Steps per compiled chunk (default: ``steps / checkpoints``, a trace point after each); with it
        set, a trace point every ⌈chunks / checkpoints⌉ chunks.
    scoring : dict, optional
        Options of the scorer: on a model whose ratings are kept in a store, ``eval_segments`` (the
        chunked scorer's size groups, one compiled program each; default every log₂ bucket).
    tune : {"lr"}, optional
        Tune this hyperparameter by the tuning protocol (:mod:`hierbench.harness.tune`): one run per
        grid value with the same seed and plan, the best by a held-apart ELBO; the record is the chosen
        run's, with the grid, every point and the total cost in its ``tuning`` block.
    tune_grid : list of float, optional
        The values to try (default the protocol's grid, :data:`~hierbench.harness.tune.GRIDS`).
    """
    record = new_record(method, dataset, data_params, method_params, seed, backend)
    try:
        # the one validation layer (run, sweep, bench and the API refuse the same inputs), before any work
        check_run(
            {
                "method": method,
                "dataset": dataset,
                "data_params": data_params,
                "method_params": method_params,
                "seed": seed,
                "steps": steps,
                "eval_draws": eval_draws,
                "checkpoints": checkpoints,
                "backend": backend,
                "backend_options": backend_options,
                "budget_s": budget_s,
                "chunk_steps": chunk_steps,
                "scoring": scoring,
                "tune": tune,
                "tune_grid": tune_grid,
            }
        )
        scoring = check_scoring(scoring)
        engine = make_backend(backend, backend_options)
        model = build_model(dataset, data_params)
        factory = lookup("method", method)
        params = parse_params("method", method, method_params or {})
        grid = check_tune(tune, params, tune_grid)
        sampler = is_sampler(factory)
        if scoring and model.store is None:
            raise ParamError(
                f"scoring option(s) {', '.join(scoring)} apply to a model whose ratings are kept in a store"
            )
        record["data_params"] = model.params
        record |= {"num_groups": model.num_groups, "num_obs": model.num_obs}
        record["dim"] = model.dim_global + model.num_groups * model.dim_local  # of the joint (θ, z)
        if model.store is not None:
            record |= model.store.describe()
        if model.theta_true is not None:
            record["theta_true"] = np.asarray(model.theta_true).tolist()
        if sampler and model.store is not None:
            from hierbench.methods.batches import refuse_full_data

            refuse_full_data(model, f"the sampler {method}")

        def build(
            num_steps: int | None, **overrides: Any
        ) -> Method:  # every VI build (the probe's too) passes the memory guard
            steps_param = {} if num_steps is None else {"steps": num_steps}
            algo = factory(model, **(params | overrides | steps_param))
            memory.check_vi(record, model, algo, method)
            return algo

        if steps == METHOD_STEPS:
            # the method's default step count, as its own build states it (its config's "steps")
            steps = DEFAULT_STEPS if sampler else int(build(None).config.get("steps", DEFAULT_STEPS))

        plan, probe = plan_run(
            engine,
            model,
            build,
            seed,
            steps=steps,
            checkpoints=checkpoints,
            budget_s=budget_s,
            chunk=chunk_steps,
        )
        if probe is not None:
            record |= {"budget_s": float(budget_s), "probe": probe, "planned_steps": plan.steps}
        if model.exact is not None:
            record["log_evidence"] = float(model.exact.log_evidence)
        ref, ref_note = (None, "no reference store")
        if references is not None:
            ref, ref_note = refstore.find_accepted(dataset, model, Path(references))
        record |= {"accuracy": None, "reference": ref_note}
        if sampler:
            algo = factory(model, **params)
            record["method_params"] = algo.config
            record["env"] = env_info(algo.config.get("dtype"))
            _sample(record, model, algo, seed, ref, save_reference)
        else:

            def run_point(rec: Record, overrides: dict[str, Any], held_apart: bool = False) -> Any:
                algo = build(plan.steps, **overrides)
                rec["method_params"] = algo.config
                rec["env"] = env_info(algo.config.get("dtype"))
                scorer = make_scorer(model, algo, eval_draws, scoring)
                return fit(rec, model, algo, engine, scorer, plan, seed, progress, held_apart=held_apart)

            if grid:
                record, last = tuned(
                    record, tune, grid, lambda rec, value: run_point(rec, {tune: value}, True)
                )
            else:
                last = run_point(record, {})
            if record["status"] == "ok" and ref is not None:
                record["accuracy"] = accuracy_block(ref, last["theta"], last["z"], last["log_w"])
            if record["status"] == "ok" and model.theta_true is not None:
                record["theta_true_std_err"] = truth_error(model.theta_true, record)
    except ParamError as err:
        if raise_param_errors:
            raise
        finish(record, "error", f"ParamError: {err}")
    except Infeasible as err:
        finish(record, "infeasible", str(err), memory_bytes=err.memory_bytes, **err.fields)
    except Unavailable as err:
        finish(record, "unavailable", str(err))
    except Exception as err:  # a sweep must survive any single failure
        finish(record, "error", f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record.setdefault("env", env_info(None))
    record |= memory.memory_info()
    return record


def check_scoring(options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a run's scorer options (:data:`STORE_SCORING_OPTIONS`); :class:`ParamError` otherwise."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ParamError(f"scoring must be a table of options, got {options!r}")
    unknown = sorted(set(options) - set(STORE_SCORING_OPTIONS))
    if unknown:
        raise ParamError(
            f"unknown scoring option(s) {', '.join(unknown)}; valid: {', '.join(STORE_SCORING_OPTIONS)}"
        )
    if options.get("eval_segments") is not None:
        check_positive_int("eval_segments", options["eval_segments"])
    return dict(options)


def make_scorer(model: HierModel, method: Method, num_draws: int, options: dict[str, Any]) -> Any:
    """The float64 scorer of a VI run: :class:`~hierbench.scoring_store.ChunkedScorer` over user chunks
    for a model whose ratings are kept in a store, else :class:`~hierbench.scoring.Scorer`."""
    if model.store is None:
        return Scorer(model, method, num_draws=num_draws)
    from hierbench.scoring_store import ChunkedScorer  # it imports the loop's heartbeat

    return ChunkedScorer(model, method, num_draws, max_segments=options.get("eval_segments"))


def truth_error(theta_true: Any, record: Record) -> dict[str, float]:
    """|mean_q(θ) − θ_true| / sd_q(θ) per coordinate of θ: its mean and max over the coordinates."""
    mean, sd = np.asarray(record["global_mean"]), np.asarray(record["global_sd"])
    err = np.abs(mean - np.asarray(theta_true)) / np.maximum(sd, 1e-12)
    return {"mean": float(err.mean()), "max": float(err.max())}


def _sample(record, model, algo: Sampler, seed, ref, save_to: str | Path | None) -> None:
    """Run an MCMC method; score it against the exact posterior if any; store it as a reference in
    ``save_to`` (default: the user cache)."""
    post = algo.run(seed)
    iterations = post.settings.get("warmup", 0) + post.settings.get("draws", 0)
    record |= {
        "compile_s": post.compile_s,
        "wall_s": post.sample_s,
        # an optimizer that owns its loop (Stan ADVI, Pathfinder) states its iterations as "steps"
        "steps": int(post.settings.get("steps", iterations)),
        "grad_evals": int(np.sum(post.stats["num_steps"])) if "num_steps" in post.stats else None,
    }
    if "backend" in post.settings:  # Stan: pystan or cmdstanpy, not JAX
        record["backend"] = str(post.settings["backend"])
    if post.theta is None:  # e.g. Stan: natural quantities only; moments, diagnostics and gate on those
        summary = refstore.natural_summary(post)
        record |= summary
        if "failed_checks" in summary:
            record["gate_passed"] = not summary["failed_checks"]
        finish(record, "ok")
        return
    key = refstore.reference_key(record["dataset"], model, algo.config, seed)
    command = refstore.regenerate_command(record["dataset"], model.params, seed, record["method_params"])
    stored, draws = refstore.from_posterior(record["dataset"], model, post, key, command)
    record |= {
        "diagnostics": stored.meta["diagnostics"],
        "gate_passed": stored.accepted,
        "failed_checks": stored.failed_checks,
        "global_mean": stored.global_mean.tolist(),
        "global_sd": stored.global_sd.tolist(),
    }
    path = refstore.save(stored, draws, Path(save_to) if save_to is not None else cache_dir() / "references")
    record["reference_file"] = str(path)
    if ref is not None and ref.source == "exact":
        C, S = post.theta.shape[:2]
        theta = post.theta.reshape(C * S, -1)
        z = post.z.reshape(C * S, *post.z.shape[2:])
        record["accuracy"] = accuracy_block(ref, theta, z[:, : ref.local_mean.shape[0]])
    finish(record, "ok")
