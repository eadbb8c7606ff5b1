"""The one timed loop every VI run goes through, whatever the backend and the data source.

::

    runner = backend.runner(model, method, seed, chunk)     # the state, on the backend
    compile_s = runner.compile()                            # timed apart, never on the run's clock
    score step 0                                            # off the clock
    for each chunk c:
        t0; runner.run_chunk(c); runner.sync(); wall_s += now - t0     # the only time on the clock
        non-finite loss or parameters  ->  status "diverged", stop
        every `score_every` chunks, and at the end: score (off the clock), a trace point
        wall_s past `max_wall_s`  ->  stopped "budget"
    the last score's fields; checks that turn an impossible score into "diverged"

A :class:`~hierbench.harness.backends.Backend` supplies the runner (JAX: ``lax.scan`` chunks compiled
ahead of time; torch: eager or ``torch.compile`` steps); the method's batch source
(:mod:`hierbench.methods.batches`) supplies what a step sees; a scorer (:class:`hierbench.scoring.Scorer`
on padded data, or :class:`hierbench.scoring_store.ChunkedScorer` on a rating store) supplies the
float64 scores.

**Heartbeat.**  After every compile, chunk and score, the loop calls :func:`beat` (so do the budget
probe and the chunked scorer, after each chunk of users): a no-op unless a hook is set with
:func:`set_heartbeat`.  A sweep's worker process sets one that stamps the time into memory its driver
reads, and the driver kills a worker that stays silent too long (an XLA:CPU deadlock; see
:mod:`hierbench.suites.executors`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from hierbench.datasets.base import HierModel
from hierbench.methods.base import Method
from hierbench.records import Record, finish

IMPOSSIBLE_SE = 5.0  # an ELBO this many SEs above an exact log evidence is a numerical failure
HELD_APART_TAG = 2**31 - 1  # fold_in tag of the held-apart draws (a trace point's tag is its step)
TRACE_SCORE_FIELDS = ("elbo", "elbo_se", "heldout_lpd_per_obs")  # a score's fields kept in trace points

_heartbeat: Callable[[], None] | None = None  # this process's proof-of-progress hook (module docstring)


def set_heartbeat(hook: Callable[[], None] | None) -> Callable[[], None] | None:
    """Make :func:`beat` call ``hook`` (None: nothing) in this process; returns the previous hook."""
    global _heartbeat
    previous, _heartbeat = _heartbeat, hook
    return previous


def beat() -> None:
    """Report progress to whoever watches this process (a no-op unless :func:`set_heartbeat` set a hook)."""
    if _heartbeat is not None:
        _heartbeat()


class Plan(NamedTuple):
    """How a run is cut: ``num_chunks`` chunks of ``chunk`` steps, a trace point every ``score_every``
    chunks (and after the last), stopped after the chunk that takes the wall time past ``max_wall_s``."""

    chunk: int
    num_chunks: int
    score_every: int = 1
    max_wall_s: float | None = None

    @property
    def steps(self) -> int:
        return self.chunk * self.num_chunks


def chunking(steps: int, checkpoints: int) -> Plan:
    """``steps`` cut into ``checkpoints`` chunks (a trace point after each); the plan runs
    ``chunk · num_chunks ≥ steps`` steps."""
    num_chunks = max(1, min(checkpoints, steps))
    return Plan(math.ceil(steps / num_chunks), num_chunks)


def score_keys(seed: int) -> jax.Array:
    """The key of a run's scoring draws (the third of the run key's split, after init and training)."""
    return jax.random.split(jax.random.key(seed), 3)[2]


def fit(
    record: Record,
    model: HierModel,
    method: Method,
    backend: Any,
    scorer: Callable[[jax.Array, Any], dict[str, Any]],
    plan: Plan,
    seed: int,
    progress: bool | None = None,
    held_apart: bool = False,
) -> dict[str, np.ndarray] | None:
    """Train ``method`` on ``backend`` by ``plan``, scoring off the clock; fills ``record``.

    Parameters
    ----------
    record : Record
        The run's record (:func:`~hierbench.records.new_record`); gets ``compile_s``,
        ``eval_compile_s``, ``steps``, ``wall_s``, ``trace``, the backend's own fields, the final
        score's fields and the status.
    model, method
        What is fitted.
    backend : Backend
        Where (:mod:`hierbench.harness.backends`).
    scorer : callable
        ``scorer(key, params) -> dict`` with at least ``elbo`` and ``elbo_se``; ``compile_s`` and
        ``last`` (the final draws, for accuracy scores) attributes.
    plan : Plan
        Chunks, scoring and the wall-time limit.
    seed : int
        The run's seed (init, training and scoring keys derive from it).
    progress : bool, optional
        A progress bar (default: when stderr is a terminal, after 2 s).
    held_apart : bool
        Also score the final q on draws held apart from every trace point's (key
        ``fold_in(scoring key, HELD_APART_TAG)``), off the clock, into ``record["held_apart"]``: what a
        tuning grid selects by (:mod:`hierbench.harness.tune`), never what the record reports.

    Returns
    -------
    dict or None
        The final score's draws (``scorer.last``).
    """
    runner = backend.runner(model, method, seed, plan.chunk)
    try:
        record |= runner.describe()
        record["compile_s"] = runner.compile()
        beat()
        key_score = score_keys(seed)

        def checkpoint(step: int, wall_s: float, train_neg_elbo: float | None) -> dict[str, Any]:
            t0 = time.perf_counter()
            score = scorer(jax.random.fold_in(key_score, step), runner.params())
            point = {"step": step, "wall_s": wall_s}
            point |= {k: score[k] for k in TRACE_SCORE_FIELDS if k in score}
            point |= {"train_neg_elbo": train_neg_elbo, "eval_s": time.perf_counter() - t0}
            record["trace"].append(point)
            beat()
            return score

        score = checkpoint(0, 0.0, None)
        record["eval_compile_s"] = scorer.compile_s
        wall_s, status, error = 0.0, "ok", None
        bar = tqdm(
            total=plan.steps,
            desc=f"{record['method']} on {record['dataset']}"
            + ("" if record["backend"] == "jax" else f" ({record['backend']})"),
            unit="step",
            disable=None if progress is None else not progress,
            delay=2.0,
            leave=False,
        )
        with bar:
            for c in range(plan.num_chunks):
                t0 = time.perf_counter()
                runner.run_chunk(c)
                runner.sync()
                wall_s += time.perf_counter() - t0
                beat()
                losses = runner.losses()
                finite = np.isfinite(losses)
                done = plan.chunk * c + (int(np.argmin(finite)) if not finite.all() else plan.chunk)
                record |= {"steps": done, "wall_s": wall_s}
                bar.update(plan.chunk)
                if not finite.all() or not runner.finite():
                    status, error = "diverged", f"non-finite loss or parameters at step {done}"
                    break
                last = c == plan.num_chunks - 1
                over = plan.max_wall_s is not None and wall_s >= plan.max_wall_s
                if last or over or (c + 1) % plan.score_every == 0:
                    score = checkpoint(done, wall_s, float(losses.mean()))
                    bar.set_postfix(elbo=f"{score['elbo']:.4g}" if score["elbo"] is not None else "nan")
                if over and not last:
                    record["stopped"] = "budget"
                    break
        final_draws = getattr(scorer, "last", None)
        if held_apart and status == "ok":
            extra = scorer(jax.random.fold_in(key_score, HELD_APART_TAG), runner.params())
            record["held_apart"] = {k: extra[k] for k in ("elbo", "elbo_se", "eval_draws") if k in extra}
    finally:
        runner.close()
    if "probe" in record and wall_s > 0:  # how far the budget probe was off (harness.budget)
        record["probe"]["rate_ratio"] = record["steps"] / wall_s / record["probe"]["steps_per_s"]
    finish_vi(record, status, error, score, method.config)
    return final_draws


def finish_vi(record: Record, status: str, error: str | None, score: dict[str, Any], config: dict) -> None:
    """Close a VI run's record: evaluation counts, rate, the last score's fields, and the checks that
    read an impossible score as a numerical failure (``diverged``), never as a result."""
    samples = config["num_samples"]
    groups = config.get("groups_per_step") or config.get("batch_groups") or record.get("num_groups") or 0
    record["grad_evals"] = record["steps"] * samples
    record["group_evals"] = record["steps"] * samples * groups
    wall_s = record["wall_s"]
    record["steps_per_s"] = record["steps"] / wall_s if wall_s > 0 else None
    if status != "ok":
        finish(record, status, error)
        return
    record |= score
    if score["elbo"] is None:  # finite training loss but a non-finite full-data score
        finish(record, "diverged", "non-finite log weights when scoring q")
        return
    if score.get("log_q_ok") is False:
        ratio = score.get("log_q_var_ratio") or float("inf")
        finish(
            record,
            "diverged",
            f"Var[log q] on q's own draws is {ratio:.3g}× the D/2 of every Gaussian: q's density broke "
            "down numerically (near-singular factor)",
        )
        return
    if record.get("log_evidence") is not None:
        record["kl"] = record["log_evidence"] - score["elbo"]
        record["kl_per_group"] = record["kl"] / record["num_groups"]
        # KL ≥ 0 always: an ELBO clearly above the exact evidence means q's log density has broken
        # down numerically (e.g. a near-singular Cholesky factor), not a good fit.
        if record["kl"] < -(IMPOSSIBLE_SE * score["elbo_se"] + 1e-8 * abs(record["log_evidence"])):
            finish(
                record,
                "diverged",
                f"ELBO exceeds the exact log evidence by {-record['kl']:.3g} nats "
                f"({IMPOSSIBLE_SE}+ standard errors): q's density broke down numerically",
            )
            return
    finish(record, "ok")
