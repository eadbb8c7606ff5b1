"""Run one method on one dataset and return its record.  Never raises for a failed run.

Timing is fair by construction (cf. numpyro's benchmark harness): the optimization loop is
``lax.scan`` over a chunk of K steps, compiled ahead of time (``compile_s``); each chunk is timed by
wall clock around ``block_until_ready`` (``wall_s`` sums the chunks only).  Between chunks, off the
clock, q is scored in float64 on the full data (see :mod:`hierbench.scoring`) and a trace point
{step, wall_s, elbo} recorded.  A non-finite loss or parameter stops the run as ``diverged``.
"""

from __future__ import annotations

import functools
import math
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hierbench import reference as refstore
from hierbench.accuracy import accuracy_block
from hierbench.datasets.base import ParamError
from hierbench.methods.base import Infeasible, Sampler, Unavailable, with_rows
from hierbench.records import env_info
from hierbench.registry import build_model, is_sampler, lookup, parse_params
from hierbench.scoring import Scorer

DEFAULT_STEPS = 10_000
BACKENDS = ("jax", "torch")
IMPOSSIBLE_SE = 5.0  # an ELBO this many SEs above an exact log evidence is a numerical failure
PROBE_STEPS = 5  # steps per compiled chunk of the speed probe of a seconds budget
PROBE_MIN_S = 1.0  # the probe runs chunks until this much time is measured
BUDGET_OVERRUN = 1.25  # a run with a seconds budget stops once it has used this multiple of it


def chunking(steps: int, checkpoints: int) -> tuple[int, int]:
    """(chunk length K, number of chunks) with K·chunks = the steps actually run (≥ ``steps``)."""
    num_chunks = max(1, min(checkpoints, steps))
    return math.ceil(steps / num_chunks), num_chunks


def run_one(
    method: str,
    dataset: str,
    data_params: dict[str, Any] | None = None,
    method_params: dict[str, Any] | None = None,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    eval_draws: int = 1000,
    checkpoints: int = 20,
    progress: bool | None = None,
    raise_param_errors: bool = False,
    references: str | Path | None = refstore.DEFAULT_ROOT,
    backend: str = "jax",
    backend_options: dict[str, Any] | None = None,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Fit ``method`` to ``dataset`` and return a record (a JSON-ready dict).

    Parameters
    ----------
    method, dataset : str
        Registry names.
    data_params, method_params : dict, optional
        Factory parameters (strings are parsed to the right types).
    seed : int
        Seed of the run's PRNG key (initialization, minibatches, draws, scoring).
    steps : int
        Optimization steps (rounded up to whole chunks; the record has the count actually run).
    eval_draws : int
        Draws of q per float64 ELBO estimate.
    checkpoints : int
        Number of timed chunks, each followed by an off-clock trace point.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal, after 2 s).
    raise_param_errors : bool
        Re-raise :class:`ParamError` (the CLI turns it into exit code 2) instead of recording it.
    references : path, optional
        The reference store: VI records get an accuracy block against the exact posterior or an
        accepted stored reference for the same data; an MCMC method's run is stored there as a
        (gated) reference.  None: no store.
    backend : {"jax", "torch"}
        Train a VI method with JAX (jit) or with its PyTorch twin (:mod:`hierbench.torch_harness`);
        scoring is the same float64 JAX code either way.
    backend_options : dict, optional
        torch only: ``compile`` (bool), ``threads`` (int), ``device`` (str), ``compile_mode``.
    budget_s : float, optional
        A budget of optimization wall time (VI methods, JAX backend).  A short probe, off the record's
        clock, measures the method's steps/s on this model; the run then gets
        ``min(steps, budget_s × rate)`` steps, so its learning-rate schedule spans the budget, and it
        stops early (``stopped="budget"``) if it has used :data:`BUDGET_OVERRUN` × ``budget_s``.
        The record keeps ``budget_s``, ``planned_steps`` and the probe's ``probe``
        {steps_per_s, steps, wall_s, compile_s}.
    """
    record: dict[str, Any] = {
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
    try:
        if not isinstance(seed, int) or seed < 0:
            raise ParamError(f"seed must be an integer >= 0, got {seed!r}")
        if backend not in BACKENDS or (backend_options and backend != "torch"):
            raise ParamError(
                f"backend must be one of {', '.join(BACKENDS)} (options: torch only); got {backend!r}"
            )
        if budget_s is not None and not (
            isinstance(budget_s, (int, float)) and not isinstance(budget_s, bool) and budget_s > 0
        ):
            raise ParamError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
        model = build_model(dataset, data_params)
        chunk, num_chunks = chunking(steps, checkpoints)
        factory = lookup("method", method)
        params = parse_params("method", method, method_params or {})
        if budget_s is not None:
            if is_sampler(factory) or backend != "jax":
                raise ParamError("budget_s applies to VI methods on the jax backend")
            record["budget_s"] = float(budget_s)
            record["probe"] = probe = _probe_speed(factory, model, params, seed)
            steps = max(1, min(steps, int(budget_s * probe["steps_per_s"])))
            chunk, num_chunks = chunking(steps, min(checkpoints, steps))
            record["planned_steps"] = chunk * num_chunks
        if not is_sampler(factory):
            params["steps"] = chunk * num_chunks
        record["data_params"] = model.params
        record |= {"num_groups": model.num_groups, "num_obs": model.num_obs}
        if model.exact is not None:
            record["log_evidence"] = float(model.exact.log_evidence)
        ref, ref_note = (None, "no reference store")
        if references is not None:
            ref, ref_note = refstore.find_accepted(dataset, model, Path(references))
        record |= {"accuracy": None, "reference": ref_note}
        algo = factory(model, **params)
        record["method_params"] = algo.config
        record["env"] = env_info(algo.config.get("dtype"))
        if isinstance(algo, Sampler):
            if backend != "jax":
                raise ParamError(f"backend {backend!r} runs VI methods only; {method!r} is a sampler")
            _sample(record, model, algo, seed, ref, references)
        else:
            optimize = _optimize
            if backend == "torch":
                from hierbench.torch_harness import optimize_torch

                optimize = functools.partial(optimize_torch, **(backend_options or {}))
            if budget_s is not None:
                optimize = functools.partial(_optimize, max_wall_s=BUDGET_OVERRUN * budget_s)
            last = optimize(record, model, algo, seed, chunk, num_chunks, eval_draws, progress)
            if record["status"] == "ok" and ref is not None:
                record["accuracy"] = accuracy_block(ref, last["theta"], last["z"], last["log_w"])
    except ParamError as err:
        if raise_param_errors:
            raise
        record |= {"status": "error", "error": f"ParamError: {err}"}
    except Infeasible as err:
        record |= {"status": "infeasible", "error": str(err), "memory_bytes": err.memory_bytes}
    except Unavailable as err:
        record |= {"status": "unavailable", "error": str(err)}
    except Exception as err:  # a sweep must survive any single failure
        record |= {
            "status": "error",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    record.setdefault("env", env_info(None))
    return record


def _train_data(model, algo) -> dict[str, Any]:
    """The model's data in the training dtype (plus the row layout where the method uses it)."""
    dtype = jnp.dtype(algo.config["dtype"])
    data = {k: jnp.asarray(v, dtype) for k, v in model.data.items()}
    if algo.config.get("row_layout"):
        data = with_rows(model, data, dtype)
    return data


def _probe_speed(factory, model, params, seed) -> dict[str, float]:
    """Steps/s of a method on a model: chunks of :data:`PROBE_STEPS` steps, compiled once, run until
    :data:`PROBE_MIN_S` is measured (the first chunk, a warm-up, is not counted).  Off the clock."""
    algo = factory(model, **(params | {"steps": DEFAULT_STEPS}))
    data = _train_data(model, algo)
    key = jax.random.key(seed)
    state = algo.init(key)

    def run_chunk(key, state, data):
        return jax.lax.scan(lambda s, k: algo.step(k, s, data), state, jax.random.split(key, PROBE_STEPS))

    t0 = time.perf_counter()
    compiled = jax.jit(run_chunk).lower(key, state, data).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(key, state, data)
    jax.block_until_ready(state)
    steps, wall_s = 0, 0.0
    while wall_s < PROBE_MIN_S or steps < 2 * PROBE_STEPS:
        t0 = time.perf_counter()
        state, _ = compiled(jax.random.fold_in(key, steps), state, data)
        jax.block_until_ready(state)
        wall_s += time.perf_counter() - t0
        steps += PROBE_STEPS
    return {"steps_per_s": steps / wall_s, "steps": steps, "wall_s": wall_s, "compile_s": compile_s}


def _optimize(
    record, model, algo, seed, chunk, num_chunks, eval_draws, progress, max_wall_s: float | None = None
) -> dict[str, np.ndarray]:
    """Train in timed chunks with off-clock scoring; returns the final scoring's draws of q.  With
    ``max_wall_s`` the run stops after the first chunk that takes its wall time past it."""
    data = _train_data(model, algo)
    key_init, key_run, key_score = jax.random.split(jax.random.key(seed), 3)
    state = algo.init(key_init)

    def run_chunk(key, state, data):
        return jax.lax.scan(lambda s, k: algo.step(k, s, data), state, jax.random.split(key, chunk))

    t0 = time.perf_counter()
    compiled = jax.jit(run_chunk).lower(key_run, state, data).compile()
    record["compile_s"] = time.perf_counter() - t0

    scorer = Scorer(model, algo, num_draws=eval_draws)
    samples = algo.config["num_samples"]
    groups = algo.config.get("batch_groups") or model.num_groups

    def checkpoint(step: int, wall_s: float, train_neg_elbo: float | None) -> dict[str, Any]:
        return _trace_point(record, scorer, key_score, step, wall_s, state.params, train_neg_elbo)

    score = checkpoint(0, 0.0, None)
    record["eval_compile_s"] = scorer.compile_s
    wall_s, status = 0.0, "ok"
    bar = tqdm(
        total=chunk * num_chunks,
        desc=f"{record['method']} on {record['dataset']}",
        unit="step",
        disable=None if progress is None else not progress,
        delay=2.0,
        leave=False,
    )
    with bar:
        for c in range(num_chunks):
            t0 = time.perf_counter()
            state, info = compiled(jax.random.fold_in(key_run, c), state, data)
            jax.block_until_ready(state)
            wall_s += time.perf_counter() - t0
            losses = np.asarray(info.neg_elbo)
            finite = np.isfinite(losses)
            done = chunk * c + (int(np.argmin(finite)) if not finite.all() else chunk)
            record |= {"steps": done, "wall_s": wall_s}
            if not finite.all() or not _all_finite(state.params):
                status = "diverged"
                record["error"] = f"non-finite loss or parameters at step {done}"
                break
            score = checkpoint(done, wall_s, float(losses.mean()))
            bar.update(chunk)
            bar.set_postfix(elbo=f"{score['elbo']:.2f}" if score["elbo"] is not None else "nan")
            if max_wall_s is not None and wall_s > max_wall_s and c < num_chunks - 1:
                record["stopped"] = "budget"
                break
    _finish(record, status, score, samples, groups)
    return scorer.last


def _trace_point(record, scorer, key_score, step, wall_s, params, train_neg_elbo) -> dict[str, Any]:
    """Score ``params`` off the clock and append a trace point {step, wall_s, elbo, …}; returns the score."""
    score = scorer(jax.random.fold_in(key_score, step), params)
    point = {
        "step": step,
        "wall_s": wall_s,
        "elbo": score["elbo"],
        "elbo_se": score["elbo_se"],
        "train_neg_elbo": train_neg_elbo,
    }
    record["trace"].append(point)
    return score


def _finish(record, status, score, samples, groups) -> None:
    """Final status, evaluation counts, rate and the last score's fields (KL where log Z is exact)."""
    record["status"] = status
    record["grad_evals"] = record["steps"] * samples
    record["group_evals"] = record["steps"] * samples * groups
    wall_s = record["wall_s"]
    record["steps_per_s"] = record["steps"] / wall_s if wall_s > 0 else None
    if status == "ok":
        record |= score
        if score["elbo"] is None:  # finite training loss but a non-finite full-data score
            record |= {"status": "diverged", "error": "non-finite log weights when scoring q"}
        elif score.get("log_q_ok") is False:
            record |= {
                "status": "diverged",
                "error": f"Var[log q] on q's own draws is {score['log_q_var_ratio'] or float('inf'):.3g}× "
                "the D/2 of every Gaussian: q's density broke down numerically (near-singular factor)",
            }
        if record["log_evidence"] is not None and score["elbo"] is not None:
            record["kl"] = record["log_evidence"] - score["elbo"]
            record["kl_per_group"] = record["kl"] / record["num_groups"]
            # KL ≥ 0 always: an ELBO clearly above the exact evidence means q's log density has
            # broken down numerically (e.g. a near-singular Cholesky factor), not a good fit.
            if record["kl"] < -(IMPOSSIBLE_SE * score["elbo_se"] + 1e-8 * abs(record["log_evidence"])):
                record |= {
                    "status": "diverged",
                    "error": f"ELBO exceeds the exact log evidence by {-record['kl']:.3g} nats "
                    f"({IMPOSSIBLE_SE}+ standard errors): q's density broke down numerically",
                }


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def _sample(record, model, algo: Sampler, seed, ref, references) -> None:
    """Run an MCMC method; score it against the exact posterior if any; store it as a reference."""
    post = algo.run(seed)
    iterations = post.settings.get("warmup", 0) + post.settings.get("draws", 0)
    record |= {
        "compile_s": post.compile_s,
        "wall_s": post.sample_s,
        # an optimizer that owns its loop (Stan ADVI, Pathfinder) states its iterations as "steps"
        "steps": int(post.settings.get("steps", iterations)),
        "grad_evals": int(np.sum(post.stats["num_steps"])) if "num_steps" in post.stats else None,
    }
    if post.theta is None:  # e.g. Stan: natural quantities only
        record["status"] = "ok"
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
    if references is not None:
        path = refstore.save(stored, draws, Path(references))
        record["reference_file"] = str(path)
    if ref is not None and ref.source == "exact":
        C, S = post.theta.shape[:2]
        theta = post.theta.reshape(C * S, -1)
        z = post.z.reshape(C * S, *post.z.shape[2:])
        record["accuracy"] = accuracy_block(ref, theta, z[:, : ref.local_mean.shape[0]])
    record["status"] = "ok"
