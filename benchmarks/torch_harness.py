"""The harness's PyTorch path: train a VI method's torch twin, score it with the same JAX float64 code.

:func:`hierbench.harness.run_one` with ``backend="torch"`` (or :func:`run_torch`) builds the JAX method
as usual — that validates the parameters, resolves the defaults and initializes the parameters from
the run's key — then trains the torch twin (:mod:`hierbench.methods.torch_families`) from that same
initialization.  The record has the shape of a JAX record:

- **Timing.** ``compile_s`` is the time of ``WARMUP_STEPS`` throw-away steps on a copy of the state
  (``torch.compile``'s tracing and code generation, and any recompilation on the next calls; in eager
  mode the one-time setup of the first call), never part of ``wall_s``.  ``wall_s`` sums the chunks of
  steps, each timed by wall clock (after a device synchronization on CUDA), drawing the random numbers
  inside the clock as JAX's scan does.
- **Scoring.** Between chunks, off the clock, the torch parameters are converted to the JAX family's
  parameter pytree and scored by the same :class:`~hierbench.scoring.Scorer` with the same keys as a
  JAX run, so scores from the two backends are directly comparable (common random numbers).
- **Provenance.** ``backend: "torch"``, ``torch_version``, ``torch_threads``
  (``torch.get_num_threads()``), ``torch_interop_threads``, ``torch_compile``, ``device``.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
import torch
from tqdm.auto import tqdm

from hierbench.datasets.base import HierModel
from hierbench.harness import _finish, _trace_point, run_one
from hierbench.methods.base import Method
from hierbench.methods.torch_backend import TorchRuntime, to_numpy, tree_leaves
from hierbench.methods.torch_families import make_torch_vi
from hierbench.scoring import Scorer

WARMUP_STEPS = 3  # the first call compiles; the next two catch recompilations (e.g. guards on new values)


def run_torch(
    method: str,
    dataset: str,
    data_params: dict[str, Any] | None = None,
    method_params: dict[str, Any] | None = None,
    *,
    compile: bool = False,
    threads: int | None = None,
    device: str = "cpu",
    compile_mode: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`~hierbench.harness.run_one` on the PyTorch backend.

    Parameters
    ----------
    method, dataset, data_params, method_params
        As ``run_one``.
    compile : bool
        ``torch.compile`` the loss and its backward (else eager).
    threads : int, optional
        ``torch.set_num_threads`` (process-wide); None keeps torch's default.
    device : str
        A torch device.
    compile_mode : str, optional
        ``torch.compile``'s ``mode``.
    **kwargs
        Any other ``run_one`` argument (seed, steps, eval_draws, checkpoints, references …).

    Returns
    -------
    dict
        A record (never raises for a failed run).
    """
    options = {"compile": compile, "threads": threads, "device": device, "compile_mode": compile_mode}
    return run_one(
        method, dataset, data_params, method_params, backend="torch", backend_options=options, **kwargs
    )


def optimize_torch(
    record: dict[str, Any],
    model: HierModel,
    algo: Method,
    seed: int,
    chunk: int,
    num_chunks: int,
    eval_draws: int,
    progress: bool | None,
    *,
    compile: bool = False,
    threads: int | None = None,
    device: str = "cpu",
    compile_mode: str | None = None,
) -> dict[str, np.ndarray]:
    """Train ``algo``'s torch twin in timed chunks with off-clock JAX scoring (the twin of
    ``harness._optimize``); returns the final scoring's draws of q."""
    threads_before = torch.get_num_threads()
    try:
        runtime = TorchRuntime(algo.config["dtype"], device, threads, compile, compile_mode)
        return _optimize_torch(record, model, algo, runtime, seed, chunk, num_chunks, eval_draws, progress)
    finally:
        torch.set_num_threads(threads_before)  # threads are process-wide: do not leak into later runs


def _optimize_torch(record, model, algo, runtime, seed, chunk, num_chunks, eval_draws, progress):
    vi = make_torch_vi(record["method"], model, algo.config, runtime)
    record |= runtime.describe() | {"warmup_steps": WARMUP_STEPS}
    # The same keys as a JAX run: the same initial parameters and the same scoring draws.
    key_init, _, key_score = jax.random.split(jax.random.key(seed), 3)
    init_params = algo.init(key_init).params
    seed_run, seed_warm = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

    warm = vi.init(init_params)  # a throw-away copy: the run starts from the untouched initialization
    gen = runtime.generator(seed_warm)
    t0 = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        vi.step(warm, vi.draw_noise(gen))
    runtime.sync()
    record["compile_s"] = time.perf_counter() - t0
    del warm

    state = vi.init(init_params)
    scorer = Scorer(model, algo, num_draws=eval_draws)
    samples = algo.config["num_samples"]
    groups = algo.config.get("batch_groups") or model.num_groups

    def checkpoint(step: int, wall_s: float, train_neg_elbo: float | None) -> dict[str, Any]:
        params = to_numpy(state.params)
        return _trace_point(record, scorer, key_score, step, wall_s, params, train_neg_elbo)

    score = checkpoint(0, 0.0, None)
    record["eval_compile_s"] = scorer.compile_s
    wall_s, status = 0.0, "ok"
    gen = runtime.generator(seed_run)
    bar = tqdm(
        total=chunk * num_chunks,
        desc=f"{record['method']} on {record['dataset']} (torch)",
        unit="step",
        disable=None if progress is None else not progress,
        delay=2.0,
        leave=False,
    )
    with bar:
        for c in range(num_chunks):
            t0 = time.perf_counter()
            losses = [vi.step(state, vi.draw_noise(gen)) for _ in range(chunk)]
            runtime.sync()
            wall_s += time.perf_counter() - t0
            losses = torch.stack(losses).cpu().numpy()
            finite = np.isfinite(losses)
            done = chunk * c + (int(np.argmin(finite)) if not finite.all() else chunk)
            record |= {"steps": done, "wall_s": wall_s}
            if not finite.all() or not all(bool(torch.isfinite(p).all()) for p in tree_leaves(state.params)):
                status = "diverged"
                record["error"] = f"non-finite loss or parameters at step {done}"
                break
            score = checkpoint(done, wall_s, float(losses.mean()))
            bar.update(chunk)
            bar.set_postfix(elbo=f"{score['elbo']:.2f}" if score["elbo"] is not None else "nan")
    _finish(record, status, score, samples, groups)
    return scorer.last
