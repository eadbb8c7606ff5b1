"""Amortized VI at MovieLens-25M size without padding: ``python -m hierbench.scale`` (``make scale``).

The registered datasets hand methods padded ``(N, n_max, d)`` arrays; for 162,541 users with up to
16,265 ratings each (seed 0) that is far beyond memory (0.42 TB in float64).  This runner trains on the
:class:`~hierbench.datasets.movielens_synth.RatingStore` instead, a CSR layout of 5 bytes a rating:

* **Minibatches** of users, stratified by size exactly as :func:`~hierbench.methods.base.make_vi`
  does on ragged groups: the log₂ size buckets merged into at most ``max_strata`` strata, about
  B·N_s/N users (at least one) from stratum s, drawn without replacement and scaled by N_s/B_s, so
  the estimate of the ELBO stays unbiased (tested).  Each stratum has a fixed shape (its users pad
  to its widest user); the batch's rows are gathered on the device (``jnp.take``) from the CSR
  arrays and x is materialized per batch from the movie × feature table.
* **The family** is the registered method's: amortized VI's :class:`~hierbench.methods.base.Family`
  from :func:`hierbench.methods.amortized.build` (feature statistics from the store), with the
  model's own ``log_local`` (movielens-small's densities).  The loss is make_vi's stratified loss
  term for term (each stratum its own θ draws, STL, the global term once), optimized by Adam from the
  same :class:`~hierbench.methods.base.TrainConfig`.
* **Timing** as in :mod:`hierbench.harness`: ``lax.scan`` chunks of ``chunk_steps`` steps compiled
  ahead of time (``compile_s``, never part of ``wall_s``), each timed around ``block_until_ready``.
  With a time ``budget_s`` and no ``steps``, one chunk is run twice off the clock and discarded,
  the second (warm) call measuring the step time, and the cosine schedule is set to the steps that
  fit the budget (``calibration``); the run still stops when the budget is spent.
* **Scoring**, off the clock between chunks, in float64 over chunks of users: every θ draw is made
  once, then each chunk of users draws its z given those θ draws, so each draw's log weight summed
  over chunks is exactly the full-data log p(θ, z, y) − log q(θ, z).  The ELBO (± se), IW-ELBO and
  the Var[log q] = D/2 check are :func:`hierbench.scoring.summarize`'s and
  :func:`~hierbench.scoring.log_q_check`'s; the held-out log predictive density is
  :func:`~hierbench.scoring.heldout_scores`' Σ_i log (1/S) Σ_s p(y_test_i | θ_s, z_is), summed over
  user chunks.  Users are scored one by one under ``vmap`` (per-user keys), so a chunk padded with
  dummy users simply drops them.
* **Comparisons**: branch VI (free per-user parameters, the same minibatches; its family is built
  here from the same :mod:`~hierbench.methods._gaussian` pieces as ``branch.make``'s, tested equal)
  and a joint dense Gaussian, recorded ``infeasible`` by ``dense.make`` with the memory it would
  need, not attempted.

Each method runs in its own process (so that the peak RSS of the record is that method's; a watchdog
kills one that stops making progress, see :func:`_run_isolated`) and appends a record in the schema
of :func:`hierbench.harness.run_one` to ``<out>/records.jsonl``; ``summary.md`` and ``scale.png`` are
rebuilt from the records.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import resource
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from hierbench.datasets import movielens_synth as synth
from hierbench.datasets.base import HierModel, ParamError, check_positive_int
from hierbench.methods import _gaussian as g
from hierbench.methods import amortized, dense
from hierbench.methods.base import (
    Family,
    Infeasible,
    StepInfo,
    TrainConfig,
    VIState,
    choice_without_replacement,
    stratified_neg_elbo,
    train_config,
)
from hierbench.records import append_record, env_info, read_records
from hierbench.scoring import log_q_check, summarize

jax.config.update("jax_enable_x64", True)

METHODS = ("amortized-potential", "amortized-moments", "branch", "dense")
DEFAULT_OUT = Path("results/scale")
DEFAULT_BUDGET_S = 600.0
EVAL_FLOATS = 2**24  # float64 numbers of one scoring chunk's largest intermediates (128 MiB)
NET_FLOATS_PER_ROW = 256  # per-row intermediates of the amortization net (width 64, a few layers)
MEMORY_HEADROOM = 0.8  # a run whose estimated memory exceeds this share of the machine's is refused
# Quick mode: a smoke check, about 35 s on 2 cores (2,000 users, fixed steps, one checkpoint).
QUICK = {
    "num_users": 2000,
    "methods": ("amortized-potential", "branch", "dense"),
    "steps": 40,
    "budget_s": 20.0,
    "chunk_steps": 20,
    "checkpoints": 1,
    "eval_draws": 8,
    "eval_segments": 2,
    "max_strata": 3,  # compiles in a third of the time of every bucket's stratum
}


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    """One scale run's settings (every method of the run shares them).

    Parameters
    ----------
    num_users : int
        Users of the synthetic store (162,541 = ML-25M), or the first this many of ``path``'s.
    seed : int
        Seed of the data (generator and held-out split) and of the runs' PRNG keys.
    path : str, optional
        Folder of a MovieLens CSV release to train on instead of synthetic data.
    methods : tuple of str
        Of :data:`METHODS`.
    batch_users : int
        Users per step (B), allocated to the strata in proportion to their sizes.
    max_strata : int
        Size strata of a minibatch (each is a separately shaped part of the compiled step).
    budget_s : float, optional
        Optimization seconds (wall time of the timed chunks) after which a run stops.
    steps : int, optional
        Steps (the cosine schedule's length); None: as many as fit ``budget_s`` (calibrated).
    chunk_steps : int
        Steps per compiled ``lax.scan`` chunk.
    checkpoints : int
        Off-clock trace points (besides step 0), spread over the run.
    eval_draws : int
        θ draws per float64 score.
    eval_segments : int, optional
        Size groups of the scoring (one compiled program each); None: every log₂ bucket.
    method_params : dict
        Training parameters (``TrainConfig`` fields) for every method and amortized settings
        (``width``, …) for the amortized runs.
    stall_s : float
        A method's worker process that reports no progress for this long is killed (see
        :func:`_run_isolated`).
    """

    num_users: int = synth.ML25M_USERS
    seed: int = 0
    path: str | None = None
    methods: tuple[str, ...] = METHODS
    batch_users: int = 256
    # Every log₂ bucket its own stratum (10 at full size): measured on the full store, 256 users a
    # step, 3 strata pad to 131,632 rows and take 242 ms a step, 10 pad to 72,586 rows and take
    # 117 ms (2.1× faster) for 18 s more compilation (10.5 → 28.9 s)
    max_strata: int = 16
    budget_s: float | None = DEFAULT_BUDGET_S
    steps: int | None = None
    chunk_steps: int = 25
    checkpoints: int = 8
    eval_draws: int = 32
    eval_segments: int | None = None
    method_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    stall_s: float = 900.0

    def __post_init__(self) -> None:
        check_positive_int("num_users", self.num_users)
        check_positive_int("seed", self.seed, minimum=0)
        check_positive_int("batch_users", self.batch_users)
        check_positive_int("max_strata", self.max_strata)
        check_positive_int("chunk_steps", self.chunk_steps)
        check_positive_int("checkpoints", self.checkpoints)
        check_positive_int("eval_draws", self.eval_draws, minimum=2)
        if self.steps is not None:
            check_positive_int("steps", self.steps)
        if self.eval_segments is not None:
            check_positive_int("eval_segments", self.eval_segments)
        if self.budget_s is not None and not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise ParamError(f"budget_s must be a positive number of seconds, got {self.budget_s!r}")
        if self.steps is None and self.budget_s is None:
            raise ParamError("give steps, budget_s or both")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ParamError(f"methods must be some of {', '.join(METHODS)}; got {', '.join(self.methods)}")


# --------------------------------------------------------------------------- data on the device


class DeviceStore(NamedTuple):
    """A :class:`~hierbench.datasets.movielens_synth.RatingStore`'s arrays on the device."""

    offsets: jax.Array  # (N + 1,) int64
    num_train: jax.Array  # (N,) int32
    movie: jax.Array  # (R,) int32
    y: jax.Array  # (R,) uint8
    table: jax.Array  # (M, d) float: the movie × feature table


def to_device(store: synth.RatingStore, dtype: Any) -> DeviceStore:
    """Move the store to the default device; the feature table in ``dtype``."""
    return DeviceStore(
        jnp.asarray(store.offsets),
        jnp.asarray(store.num_train),
        jnp.asarray(store.movie),
        jnp.asarray(store.y),
        jnp.asarray(store.genres, dtype),
    )


def gather(store: DeviceStore, users: jax.Array, width: int, part: str = "train") -> dict[str, jax.Array]:
    """The contract's padded rows of ``users`` ``(B,)``: ``x (B, width, d)``, ``y``, ``mask``, in the
    table's dtype, gathered from the CSR arrays (padding is zero, like the registered datasets')."""
    dtype = store.table.dtype
    start = store.offsets[users]
    n_train = store.num_train[users].astype(start.dtype)
    if part == "train":
        first, size = start, n_train
    else:
        first, size = start + n_train, store.offsets[users + 1] - start - n_train
    pos = jnp.arange(width, dtype=start.dtype)
    valid = pos[None, :] < size[:, None]
    rows = jnp.where(valid, first[:, None] + pos[None, :], 0)
    movie = jnp.take(store.movie, rows)
    x = jnp.take(store.table, movie, axis=0) * valid[..., None].astype(dtype)
    y = jnp.where(valid, jnp.take(store.y, rows), 0).astype(dtype)
    return {"x": x, "y": y, "mask": valid.astype(dtype)}


class Stratum(NamedTuple):
    """Users of one size stratum, the width they pad to, users per step and the scale N_s/B_s."""

    users: np.ndarray
    width: int
    alloc: int
    scale: float


def size_levels(sizes: np.ndarray) -> np.ndarray:
    """⌊log₂ n_i⌋ (n_i ≥ 1), the size buckets of :func:`~hierbench.datasets.base.row_layout`."""
    return np.floor(np.log2(np.maximum(sizes, 1))).astype(np.int64)


def plan_strata(sizes: np.ndarray, batch_users: int, max_strata: int) -> list[Stratum]:
    """make_vi's stratification: log₂ buckets merged into ≤ ``max_strata`` runs of consecutive sizes,
    proportional allocation of ``batch_users`` with at least one user per stratum."""
    level = size_levels(sizes)
    levels = np.unique(level)
    runs = np.array_split(np.arange(len(levels)), min(max_strata, len(levels)))
    num_users = len(sizes)
    batch_users = min(batch_users, num_users)
    out = []
    for run in runs:
        users = np.flatnonzero(np.isin(level, levels[run])).astype(np.int32)
        n = len(users)
        alloc = min(n, max(1, round(batch_users * n / num_users)))
        out.append(Stratum(users, max(1, int(sizes[users].max())), alloc, n / alloc))
    return out


# --------------------------------------------------------------------------- families


def schema_model(store: synth.RatingStore, name: str, params: dict[str, Any]) -> HierModel:
    """A data-free :class:`HierModel` with the store's dimensions and movielens-small's densities:
    what the methods' factories need to build their families (``data`` is never padded)."""
    features = store.feature_names
    return HierModel(
        name=name,
        num_groups=store.num_users,
        dim_global=2 * store.dim,
        dim_local=store.dim,
        data={},
        log_prior_global=synth.log_prior_global,
        log_local=synth.log_local,
        params=params,
        global_names=tuple(f"mu[{f}]" for f in features) + tuple(f"log_sigma[{f}]" for f in features),
        log_lik=synth.log_lik,
        natural=synth.natural,
    )


def branch_family(num_groups: int, dim_global: int, dim_local: int, init_sd: float = 0.1) -> Family:
    """:mod:`hierbench.methods.branch`'s family, built from the same :mod:`~hierbench.methods._gaussian`
    pieces, with its ``draw_local`` for chunked scoring (``branch.make`` returns only a Method; the
    draws and densities are tested to equal its ``sample``)."""

    def init_params(key):
        return g.global_init(dim_global, init_sd) | {
            "l_shift": jnp.zeros((num_groups, dim_local)),
            "l_gain": jnp.zeros((num_groups, dim_local, dim_global)),
            "l_chol": g.raw_chol_init((num_groups, dim_local, dim_local), init_sd),
        }

    def local(params, idx):
        keys = ("l_shift", "l_gain", "l_chol")
        shift, gain, raw = (params[k] if idx is None else params[k][idx] for k in keys)
        return shift, gain, g.chol_from_raw(raw)

    def draw_local(params, key, theta, idx, data_b):
        return g.conditional_draw(key, theta - params["g_mean"], *local(params, idx))

    def draw(params, key, num_draws, idx, data_b):
        k_global, k_local = jax.random.split(key)
        theta = g.global_draw(params, k_global, num_draws)
        return theta, draw_local(params, k_local, theta, idx, data_b)

    def log_q(params, theta, z, idx, data_b):
        lq_local = g.conditional_log_q(theta - params["g_mean"], z, *local(params, idx))
        return g.global_log_q(params, theta), lq_local

    return Family(
        init_params,
        draw,
        log_q,
        factorizes_over_groups=True,
        draw_global=g.global_draw,
        draw_local=draw_local,
    )


TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def build_method(
    name: str, model: HierModel, store: synth.RatingStore, method_params: dict[str, Any]
) -> tuple[Family, TrainConfig, dict[str, Any]]:
    """(family, training config, recorded settings) of ``amortized-potential``, ``amortized-moments``
    or ``branch`` on the schema ``model``; ``dense`` raises :class:`Infeasible` (via ``dense.make``)."""
    train = {k: v for k, v in method_params.items() if k in TRAIN_KEYS}
    if name.startswith("amortized"):
        own = {k: v for k, v in method_params.items() if k not in TRAIN_KEYS and k != "head"}
        head = name.split("-", 1)[1]
        family, cfg, config = amortized.build(model, store.feature_stats(), head=head, **own, **train)
        return family, cfg, config
    if name == "branch":
        init_sd = method_params.get("init_sd", 0.1)
        family = branch_family(model.num_groups, model.dim_global, model.dim_local, init_sd)
        return family, train_config(train), {"init_sd": init_sd}
    if name == "dense":
        dense.make(model, **train)  # raises Infeasible far below this size
        raise ParamError("dense is feasible at this size: use `hierbench run --method dense`")
    raise ParamError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")


# --------------------------------------------------------------------------- training


def make_loss(family: Family, model: HierModel, cfg: TrainConfig, strata: list[Stratum]) -> Callable:
    """``loss(params, key, data)``: make_vi's stratified minibatch estimate of −ELBO, its users drawn
    (without replacement, per stratum) and gathered from ``data = {"store": DeviceStore, "strata":
    (users_s, ...)}``; unbiased for the full-data −ELBO's expectation (tested)."""
    scales = [s.scale for s in strata]

    def neg_elbo(params, key, picks):
        return stratified_neg_elbo(model, family, cfg, scales, params, key, picks)

    def loss(params, key, data):
        key_batch, key_draw = jax.random.split(key)
        picks = []
        for s, stratum in enumerate(strata):
            key_s = jax.random.fold_in(key_batch, s)
            pick = choice_without_replacement(key_s, len(stratum.users), stratum.alloc)
            users = data["strata"][s][pick]
            picks.append((users, gather(data["store"], users, stratum.width)))
        return neg_elbo(params, key_draw, picks)

    return loss


def make_step(
    family: Family, model: HierModel, cfg: TrainConfig, strata: list[Stratum]
) -> tuple[Callable, optax.GradientTransformation]:
    """``step(key, state, data) -> (state, StepInfo)``: one Adam step (``cfg.optimizer()``) on
    :func:`make_loss`; returns the step and the optimizer."""
    opt = cfg.optimizer()
    loss = make_loss(family, model, cfg, strata)

    def step(key, state, data):
        value, grads = jax.value_and_grad(loss)(state.params, key, data)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        return VIState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), StepInfo(value)

    return step, opt


def strata_data(store: synth.RatingStore, strata: list[Stratum], dtype: Any) -> dict[str, Any]:
    """The ``data`` argument of :func:`make_loss` and :func:`make_step`: the store and the strata's users."""
    return {"store": to_device(store, dtype), "strata": tuple(jnp.asarray(s.users) for s in strata)}


def step_setup(
    name: str, store: synth.RatingStore, model: HierModel, batch_users: int, max_strata: int
) -> tuple[Callable, VIState, dict[str, Any], list[Stratum]]:
    """``(step, initial state, data, strata)`` of ``name``'s training step with its default settings,
    built as :func:`_fit` builds it (float64): what the perf suite and ``benchmarks/perf/strata_step.py``
    time."""
    family, train, _ = build_method(name, model, store, {})
    strata = plan_strata(store.train_sizes, batch_users, max_strata)
    step, opt = make_step(family, model, train, strata)
    params = family.init_params(jax.random.key(0))
    state = VIState(params, opt.init(params), jnp.zeros((), jnp.int32))
    return step, state, strata_data(store, strata, jnp.dtype(train.dtype)), strata


def compile_chunk(step: Callable, chunk: int, key: jax.Array, state: VIState, data: Any) -> tuple[Any, float]:
    """``lax.scan`` of ``chunk`` steps, compiled ahead of time; returns (program, compile seconds)."""

    def run_chunk(key, state, data):
        return jax.lax.scan(lambda s, k: step(k, s, data), state, jax.random.split(key, chunk))

    t0 = time.perf_counter()
    compiled = jax.jit(run_chunk).lower(key, state, data).compile()
    return compiled, time.perf_counter() - t0


# --------------------------------------------------------------------------- scoring


def as_float64(tree: Any) -> Any:
    """Every floating leaf of a pytree in float64."""
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class ChunkedScorer:
    """Float64 ELBO and held-out log predictive density of a group-factorized q, over user chunks.

    Users are grouped by log₂ size bucket (each pads to its own widest user, < 2× its ratings), and
    each bucket cut into chunks of a fixed number of users (padded with weight-0 dummy users), so one
    program is compiled per bucket.  ``max_segments`` merges consecutive buckets into fewer groups
    (fewer programs to compile, more padding: for small runs).  The θ draws are shared by all chunks
    (module docstring).
    """

    def __init__(
        self,
        family: Family,
        model: HierModel,
        store: synth.RatingStore,
        device_store: DeviceStore,
        num_draws: int,
        iw_k: int = 10,
        max_floats: int = EVAL_FLOATS,
        max_segments: int | None = None,
    ):
        if family.draw_global is None or family.draw_local is None:
            raise ParamError("chunked scoring needs a family with draw_global and draw_local")
        self.family, self.model, self.num_draws = family, model, num_draws
        self.iw_k = max(1, min(iw_k, num_draws // 2))  # at least two IW-ELBO terms
        self.store = device_store
        self.dim = model.dim_global + store.num_users * store.dim
        self.num_test = int(store.test_sizes.sum())
        train, test = store.train_sizes, store.test_sizes
        level = size_levels(train)
        levels = np.unique(level)
        runs = np.array_split(np.arange(len(levels)), min(max_segments or len(levels), len(levels)))
        self.segments = []
        for run in runs:
            users = np.flatnonzero(np.isin(level, levels[run]))
            width, twidth = max(1, int(train[users].max())), max(1, int(test[users].max()))
            per_user = max(width * max(num_draws, NET_FLOATS_PER_ROW), twidth * num_draws, 1)
            size = int(max(1, min(len(users), max_floats // per_user)))
            padded = size * math.ceil(len(users) / size)
            valid = np.zeros(padded)
            valid[: len(users)] = 1.0
            ids = np.full(padded, users[0], np.int32)
            ids[: len(users)] = users
            self.segments.append(
                (jnp.asarray(ids.reshape(-1, size)), jnp.asarray(valid.reshape(-1, size)), width, twidth)
            )
        self._chunk = jax.jit(self._score_chunk, static_argnums=(0, 1))
        self._theta = jax.jit(family.draw_global, static_argnums=2)
        self.compile_s: float | None = None

    def _score_chunk(self, width, twidth, params, theta, key, users, valid, store):
        family, model, S = self.family, self.model, theta.shape[0]
        data = gather(store, users, width, "train")
        test = gather(store, users, twidth, "test")
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(users.shape[0]))

        def one(k, u, d, t):  # one user: per-draw terms (S,), so dummy users can be dropped
            d1, t1, u1 = jax.tree.map(lambda a: a[None], d), jax.tree.map(lambda a: a[None], t), u[None]
            z = family.draw_local(params, k, theta, u1, d1)
            lq_global, lq_local = family.log_q(params, theta, z, u1, d1)
            local = model.log_local(theta[:, None, :], z, d1)[:, 0]
            test_ll = model.log_lik(theta[:, None, :], z, t1)[:, 0]
            return local - lq_local, lq_local, test_ll, lq_global

        w, lq, test_ll, lq_global = jax.vmap(one)(keys, users, data, test)  # (C, S) each
        lpd = jnp.sum(valid * (logsumexp(test_ll, axis=1) - math.log(S)))
        return valid @ w, valid @ lq, lpd, lq_global[0]

    def __call__(self, key: jax.Array, params: Any) -> dict[str, Any]:
        """Score ``params``: :func:`~hierbench.scoring.summarize`'s fields, the Var[log q] check and
        ``heldout_lpd``, ``heldout_lpd_per_obs``, ``heldout_obs``."""
        t0 = time.perf_counter()
        params = as_float64(params)
        k_theta, k_local = jax.random.split(key)
        theta = self._theta(params, k_theta, self.num_draws)
        local = jnp.zeros(self.num_draws)
        lq_local = jnp.zeros(self.num_draws)
        lpd, lq_global, c = 0.0, None, 0
        for ids, valid, width, twidth in self.segments:
            for j in range(ids.shape[0]):
                out = self._chunk(
                    width, twidth, params, theta, jax.random.fold_in(k_local, c), ids[j], valid[j], self.store
                )
                c += 1
                _beat()
                local, lq_local = local + out[0], lq_local + out[1]
                lpd += float(out[2])
                lq_global = out[3] if lq_global is None else lq_global
        log_w = np.asarray(self.model.log_prior_global(theta) - lq_global + local)
        summary = summarize(log_w, np.asarray(theta), self.iw_k)
        summary |= log_q_check(np.asarray(lq_global + lq_local), self.dim)
        # scoring.heldout_scores' fields: Σ_i log (1/S) Σ_s p(y_test_i | θ_s, z_is), total and per rating
        summary |= {
            "heldout_lpd": lpd,
            "heldout_lpd_per_obs": lpd / self.num_test,
            "heldout_obs": self.num_test,
        }
        if self.compile_s is None:  # the first call compiles every bucket's program
            self.compile_s = time.perf_counter() - t0
        summary["eval_s"] = time.perf_counter() - t0
        return summary


# --------------------------------------------------------------------------- one run


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss``; KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def memory_info() -> dict[str, Any]:
    """Peak RSS and, with psutil, the current RSS and the machine's total and available memory."""
    out: dict[str, Any] = {"peak_rss_bytes": peak_rss_bytes()}
    try:
        import psutil

        out["rss_bytes"] = psutil.Process().memory_info().rss
        vm = psutil.virtual_memory()
        out["machine_memory_bytes"], out["available_memory_bytes"] = vm.total, vm.available
    except ImportError:  # psutil is optional
        pass
    return out


def machine_memory() -> int:
    """Physical memory of the machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tree_bytes(tree: Any) -> int:
    """Bytes of a pytree's arrays."""
    return int(sum(np.dtype(a.dtype).itemsize * math.prod(a.shape) for a in jax.tree.leaves(tree)))


def load_store(
    cfg: ScaleConfig, progress: bool | None = None
) -> tuple[synth.RatingStore, str, dict[str, Any]]:
    """The run's store, its dataset name and data params (synthetic, or ``cfg.path``'s CSVs)."""
    if cfg.path is None:
        store = synth.load_or_generate(cfg.num_users, cfg.seed, progress=bool(progress))
        return store, "movielens-synth", {"num_users": cfg.num_users, "seed": cfg.seed}
    store = synth.load_csv_store(cfg.path, cfg.seed)
    if cfg.num_users < store.num_users:
        store = store.head(cfg.num_users)
    params = {"num_users": store.num_users, "seed": cfg.seed, "path": cfg.path, "source": "csv"}
    return store, "movielens-small", params


def new_record(name: str, cfg: ScaleConfig, dataset: str, data_params: dict[str, Any], run_id: str) -> dict:
    """A record in :func:`hierbench.harness.run_one`'s schema, before the run."""
    method = name.split("-", 1)[0]
    return {
        "record_id": uuid.uuid4().hex,
        "run_id": run_id,
        "runner": "hierbench.scale",
        "method": method,
        "dataset": dataset,
        "data_params": data_params,
        "method_params": dict(cfg.method_params),
        "seed": cfg.seed,
        "backend": "jax",
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
        "accuracy": None,
        "reference": "no reference store",
        "budget_s": cfg.budget_s,
    }


def run_method(name: str, cfg: ScaleConfig, run_id: str = "", progress: bool | None = None) -> dict[str, Any]:
    """Fit one method of :data:`METHODS` to the run's store and return its record (never raises)."""
    record: dict[str, Any] = {}
    try:
        store, dataset, data_params = load_store(cfg)
        record = new_record(name, cfg, dataset, data_params, run_id)
        record |= {
            "num_groups": store.num_users,
            "num_obs": int(store.train_sizes.sum()),
            "store_bytes": store.nbytes,
            "store_layout": {
                "ratings": int(store.sizes.sum()),
                "movies": int(store.genres.shape[0]),
                "features": int(store.dim),
                "bytes_per_rating": store.movie.itemsize + store.y.itemsize,
            },
            "padded_bytes": 8 * store.num_users * int(store.train_sizes.max()) * (store.dim + 2),
        }
        if dataset == "movielens-synth":
            record["theta_true"] = synth.true_theta().tolist()
        model = schema_model(store, dataset, data_params)
        record["dim"] = model.dim_global + model.num_groups * model.dim_local  # of the joint (θ, z)
        family, train, config = build_method(name, model, store, cfg.method_params)
        _fit(record, name, cfg, store, model, family, train, config, progress)
    except Infeasible as err:
        record |= {"status": "infeasible", "error": str(err), "memory_bytes": err.memory_bytes}
        if name == "dense" and "dim" in record:  # the D × D factor alone, in float64
            record["covariance_bytes"] = 8 * record["dim"] ** 2
    except Exception as err:  # one method's failure is its record, not the run's end
        record = record or new_record(name, cfg, "", {}, run_id)
        record |= {
            "status": "error",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    record |= memory_info()
    record.setdefault("env", env_info(record.get("method_params", {}).get("dtype")))
    return record


def _fit(record, name, cfg, store, model, family, train, config, progress) -> None:
    """Train in timed chunks with off-clock chunked scoring; fills ``record``."""
    strata = plan_strata(store.train_sizes, cfg.batch_users, cfg.max_strata)
    dtype = jnp.dtype(train.dtype)
    chunk = cfg.chunk_steps
    key_init, key_run, key_score = jax.random.split(jax.random.key(cfg.seed), 3)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), family.init_params(key_init))
    params_bytes = tree_bytes(params)
    # Adam keeps two moments; a step holds the gradient, the update and the new values besides.
    # Measured: branch on 20,000 users (195 MB of parameters) peaked 1.5 GiB above the runtime's base,
    # 7.7× its parameters, hence 8×.
    estimate = 8 * params_bytes + store.nbytes
    record |= {"params_bytes": params_bytes, "memory_estimate_bytes": estimate}
    if estimate > MEMORY_HEADROOM * machine_memory():
        raise Infeasible(
            f"{name} needs about {estimate / 2**30:.1f} GiB ({params_bytes / 2**30:.2f} GiB of parameters, "
            f"with gradient and Adam state), more than {MEMORY_HEADROOM:.0%} of this machine's memory",
            memory_bytes=estimate,
        )
    data = strata_data(store, strata, dtype)
    steps = cfg.steps
    calibration = None
    if steps is None:  # as many steps as fit the budget: time one chunk off the clock, then plan
        step, opt = make_step(family, model, dataclasses.replace(train, steps=chunk), strata)
        state = VIState(params, opt.init(params), jnp.zeros((), jnp.int32))
        compiled, compile_s = compile_chunk(step, chunk, key_run, state, data)
        _beat()
        # The first call is cold: it first touches the outputs' memory (branch at full size: 4.8 GB
        # of parameters and Adam state, 2.9 s a step against 1.4 s warm, which ended its schedule
        # after half its budget).  Plan on the second, warm call.
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(key_run, state, data))
        cold = (time.perf_counter() - t0) / chunk
        _beat()
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(key_run, state, data))
        per_step = (time.perf_counter() - t0) / chunk
        steps = max(chunk, chunk * int(cfg.budget_s / per_step / chunk))
        calibration = {
            "compile_s": compile_s,
            "cold_s_per_step": cold,
            "s_per_step": per_step,
            "planned_steps": steps,
        }
        del compiled
    steps = chunk * math.ceil(steps / chunk)
    train = dataclasses.replace(train, steps=steps)
    config = dataclasses.asdict(train) | config
    config |= {
        "batch_groups": cfg.batch_users,
        "strata": len(strata),
        "groups_per_step": sum(s.alloc for s in strata),
        "strata_widths": [s.width for s in strata],
        "strata_users": [len(s.users) for s in strata],
        "rows_per_step": sum(s.alloc * s.width for s in strata),
        "max_strata": cfg.max_strata,
        "chunk_steps": chunk,
        "gaussian_q": family.gaussian,
    }
    record |= {"method_params": config, "calibration": calibration, "env": env_info(train.dtype)}

    step, opt = make_step(family, model, train, strata)
    state = VIState(params, opt.init(params), jnp.zeros((), jnp.int32))
    compiled, record["compile_s"] = compile_chunk(step, chunk, key_run, state, data)
    _beat()
    scoring_store = data["store"]._replace(table=jnp.asarray(store.genres, jnp.float64))  # float64 x
    scorer = ChunkedScorer(
        family, model, store, scoring_store, cfg.eval_draws, max_segments=cfg.eval_segments
    )
    num_chunks = steps // chunk
    every = max(1, math.ceil(num_chunks / cfg.checkpoints))

    def checkpoint(done: int, wall_s: float, loss: float | None) -> dict[str, Any]:
        score = scorer(jax.random.fold_in(key_score, done), state.params)
        record["trace"].append(
            {
                "step": done,
                "wall_s": wall_s,
                "elbo": score["elbo"],
                "elbo_se": score["elbo_se"],
                "heldout_lpd_per_obs": score["heldout_lpd_per_obs"],
                "train_neg_elbo": loss,
                "eval_s": score["eval_s"],
            }
        )
        return score

    score = checkpoint(0, 0.0, None)
    record["eval_compile_s"] = scorer.compile_s
    from tqdm.auto import tqdm

    wall_s, status, stopped_by, done = 0.0, "ok", "steps", 0
    bar = tqdm(
        total=steps,
        desc=f"{name} N={store.num_users}",
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
            _beat()
            losses = np.asarray(info.neg_elbo)
            finite = np.isfinite(losses)
            done = chunk * c + (int(np.argmin(finite)) if not finite.all() else chunk)
            record |= {"steps": done, "wall_s": wall_s}
            bar.update(chunk)
            if not finite.all() or not all(
                bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(state.params)
            ):
                status = "diverged"
                record["error"] = f"non-finite loss or parameters at step {done}"
                break
            over = cfg.budget_s is not None and wall_s >= cfg.budget_s
            if over or c == num_chunks - 1 or (c + 1) % every == 0:
                score = checkpoint(done, wall_s, float(losses.mean()))
                bar.set_postfix(elbo=f"{score['elbo']:.4g}" if score["elbo"] is not None else "nan")
            if over:
                stopped_by = "budget"
                break
    record |= {"status": status, "stopped_by": stopped_by}
    groups = record["method_params"]["groups_per_step"]
    record["grad_evals"] = record["steps"] * train.num_samples
    record["group_evals"] = record["steps"] * train.num_samples * groups
    record["steps_per_s"] = record["steps"] / wall_s if wall_s > 0 else None
    if status == "ok":
        record |= {k: v for k, v in score.items() if k != "eval_s"}
        if score["elbo"] is None:
            record |= {"status": "diverged", "error": "non-finite log weights when scoring q"}
        elif score.get("log_q_ok") is False:
            record |= {"status": "diverged", "error": "Var[log q] on q's own draws is not D/2: q broke down"}
    if "theta_true" in record and record.get("global_mean") is not None:
        mean, sd = np.asarray(record["global_mean"]), np.asarray(record["global_sd"])
        err = np.abs(mean - np.asarray(record["theta_true"])) / np.maximum(sd, 1e-12)
        record["theta_true_std_err"] = {"mean": float(err.mean()), "max": float(err.max())}


# --------------------------------------------------------------------------- the whole run


def run_scale(
    cfg: ScaleConfig,
    out: str | os.PathLike[str] = DEFAULT_OUT,
    isolate: bool = True,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Run every method of ``cfg``, append their records to ``out/records.jsonl`` and rewrite the
    summary and figure.  ``isolate``: each method in a fresh process (its own peak RSS)."""
    out = Path(out)
    t0 = time.perf_counter()
    store, dataset, _ = load_store(cfg, progress)  # built and cached once, loaded by each method
    print(
        f"hierbench scale: {dataset} with {store.num_users:,} users, {int(store.sizes.sum()):,} ratings "
        f"({store.nbytes / 2**20:,.1f} MiB store) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    del store
    run_id = uuid.uuid4().hex
    records = []
    for name in cfg.methods:
        if isolate:
            record = _run_isolated(name, cfg, run_id, progress, dataset)
        else:
            record = run_method(name, cfg, run_id, progress)
        append_record(out / "records.jsonl", record)
        records.append(record)
        print(describe(record), flush=True)
    write_summary(read_records([out / "records.jsonl"]), out, run_id)
    return records


_HEARTBEAT: Any = None  # in a worker process: a shared double, the time of its last progress


def _beat() -> None:
    """Report progress to the parent's watchdog (no-op outside a worker)."""
    if _HEARTBEAT is not None:
        _HEARTBEAT.value = time.time()


def _worker(name, cfg, run_id, progress, heartbeat, conn) -> None:
    global _HEARTBEAT
    _HEARTBEAT = heartbeat
    conn.send(run_method(name, cfg, run_id, progress))
    conn.close()


def _run_isolated(name: str, cfg: ScaleConfig, run_id: str, progress: bool | None, dataset: str) -> dict:
    """:func:`run_method` in a fresh spawned process, with a watchdog.

    XLA:CPU (jaxlib 0.10.2) sometimes deadlocks in multi-threaded execution even with the
    concurrency-optimized scheduler off (see :mod:`hierbench`): measured here, the amortized
    (potential head) step on 2,000 users hung with every thread idle in each of 8 tries during one
    half hour (with other XLA flags too), then ran in 11 of 11 later tries of the same program, and
    ran pinned to one core.  A hung worker
    never returns, so the worker reports progress after each compile, chunk and scored user chunk,
    and one silent for ``cfg.stall_s`` seconds is killed and recorded as an ``error``.
    """
    ctx = multiprocessing.get_context("spawn")
    heartbeat = ctx.Value("d", time.time(), lock=False)
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(name, cfg, run_id, progress, heartbeat, send), daemon=True)
    proc.start()
    send.close()
    failure = None
    while True:
        if receive.poll(1.0):
            try:
                record = receive.recv()
                break
            except EOFError:  # the worker died before sending its record
                failure = f"the worker process died (exit code {proc.exitcode}); out of memory?"
                break
        if not proc.is_alive() and not receive.poll(0):
            proc.join()
            failure = f"the worker process died (exit code {proc.exitcode}); out of memory?"
            break
        if time.time() - heartbeat.value > cfg.stall_s:
            proc.kill()
            failure = (
                f"no progress for {cfg.stall_s:.0f} s: the worker was killed (an XLA:CPU deadlock; "
                "rerun, or pin the run to one core with taskset)"
            )
            break
    proc.join()
    if failure is None:
        return record
    return new_record(name, cfg, dataset, {}, run_id) | {
        "status": "error",
        "error": failure,
        "env": env_info(None),
    }


def describe(rec: dict[str, Any]) -> str:
    """One line: method, status, ELBO, held-out lpd, steps, times, memory."""
    head = rec.get("method_params", {}).get("head")
    parts = [f"{rec['method']}{f' ({head})' if head else ''} N={rec.get('num_groups')}: {rec['status']}"]
    if rec.get("elbo") is not None:
        parts.append(f"ELBO {rec['elbo']:.1f} ± {rec['elbo_se']:.1f}")
    if rec.get("heldout_lpd_per_obs") is not None:
        parts.append(f"held-out lpd {rec['heldout_lpd_per_obs']:.4f}/rating")
    if rec.get("compile_s") is not None:
        parts.append(f"{rec['steps']} steps in {rec['wall_s']:.1f}s (+{rec['compile_s']:.1f}s compile)")
    if rec.get("memory_bytes") is not None:
        parts.append(f"needs {rec['memory_bytes'] / 2**30:,.1f} GiB")
    parts.append(f"peak RSS {rec.get('peak_rss_bytes', 0) / 2**30:.2f} GiB")
    if rec.get("error") and rec["status"] != "infeasible":
        parts.append(rec["error"])
    return "; ".join(parts)


SUMMARY_COLUMNS = (
    "method",
    "variant",
    "N",
    "status",
    "elbo_per_user",
    "elbo_se",
    "heldout_lpd_per_obs",
    "steps",
    "wall_s",
    "compile_s",
    "steps_per_s",
    "peak_rss_gib",
    "memory_gib",
)


def summary_frame(records: list[dict[str, Any]]):
    """One row per record (pandas DataFrame)."""
    import pandas as pd

    rows = []
    for rec in records:
        n = rec.get("num_groups") or 0
        mem = rec.get("memory_bytes") or rec.get("memory_estimate_bytes")
        rows.append(
            {
                "method": rec["method"],
                "variant": (rec.get("method_params") or {}).get("head") or "",
                "N": n,
                "status": rec["status"],
                "elbo_per_user": rec["elbo"] / n if rec.get("elbo") is not None and n else None,
                "elbo_se": rec.get("elbo_se"),
                "heldout_lpd_per_obs": rec.get("heldout_lpd_per_obs"),
                "steps": rec.get("steps"),
                "wall_s": rec.get("wall_s"),
                "compile_s": rec.get("compile_s"),
                "steps_per_s": rec.get("steps_per_s"),
                "peak_rss_gib": (rec.get("peak_rss_bytes") or 0) / 2**30,
                "memory_gib": mem / 2**30 if mem else None,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def write_summary(
    records: list[dict[str, Any]], out: str | os.PathLike[str], run_id: str | None = None
) -> dict:
    """``summary.md`` (every record) and ``scale.png`` (held-out lpd and ELBO per user against
    optimization time, the records of ``run_id``, default the last run) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = summary_frame(records)
    show = frame.copy()
    for col, fmt in {
        "elbo_per_user": "{:.4f}",
        "elbo_se": "{:.1f}",
        "heldout_lpd_per_obs": "{:.4f}",
        "wall_s": "{:.1f}",
        "compile_s": "{:.1f}",
        "steps_per_s": "{:.2f}",
        "peak_rss_gib": "{:.2f}",
        "memory_gib": "{:,.2f}",
    }.items():
        show[col] = show[col].map(lambda v, f=fmt: "" if v is None or pd.isna(v) else f.format(v))
    paths = {"summary_md": out / "summary.md"}
    paths["summary_md"].write_text(
        "# hierbench scale\n\nMovieLens-25M-shaped data trained without padding "
        "(`python -m hierbench.scale`). ELBO per user (float64, ± its Monte Carlo se in nats), held-out "
        "log predictive density per held-out rating, optimization wall time (compile excluded), peak RSS "
        "of the method's process, and the memory a method needs (estimated; for `infeasible` rows, what "
        "it would need).\n\n" + show.to_markdown(index=False) + "\n"
    )
    run_id = run_id or (records[-1].get("run_id") if records else None)
    rows = []
    for rec in records:
        if rec.get("run_id") != run_id:
            continue
        head = (rec.get("method_params") or {}).get("head")
        label = f"{rec['method']} ({head})" if head else rec["method"]
        for p in rec.get("trace") or []:
            if p.get("elbo") is not None:
                rows.append(
                    {
                        "method": label,
                        "optimization time (s)": p["wall_s"],
                        "held-out lpd per rating": p.get("heldout_lpd_per_obs"),
                        "ELBO per user": p["elbo"] / rec["num_groups"],
                    }
                )
    if rows:
        df = pd.DataFrame(rows)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, col in zip(axes, ("held-out lpd per rating", "ELBO per user"), strict=True):
            sns.lineplot(data=df, x="optimization time (s)", y=col, hue="method", marker="o", ax=ax)
        n = next(r["num_groups"] for r in records if r.get("run_id") == run_id)
        fig.suptitle(f"{records[-1]['dataset']}, N = {n:,} users")
        fig.tight_layout()
        paths["figure"] = out / "scale.png"
        fig.savefig(paths["figure"], dpi=120)
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scale runner's options (shared by ``python -m hierbench.scale`` and ``hierbench scale``)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: 2,000 users, 40 steps of amortized (potential) and branch",
    )
    parser.add_argument("--num-users", type=int, default=None, help="users (default 162,541 = ML-25M)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the runs")
    parser.add_argument("--path", help="MovieLens CSV folder (ratings.csv, movies.csv, e.g. ml-25m) instead")
    parser.add_argument(
        "--methods",
        help=f"comma-separated, of {', '.join(METHODS)} (default: all; --quick: {QUICK['methods']})",
    )
    parser.add_argument("--batch-users", type=int, default=256, help="users per step")
    parser.add_argument(
        "--max-strata",
        type=int,
        default=None,
        help="size strata of a minibatch (default 16: every log2 bucket)",
    )
    parser.add_argument(
        "--budget-s", type=float, default=None, help=f"optimization seconds (default {DEFAULT_BUDGET_S:g})"
    )
    parser.add_argument("--steps", type=int, default=None, help="steps (default: what fits the budget)")
    parser.add_argument("--chunk-steps", type=int, default=None, help="steps per compiled chunk (default 25)")
    parser.add_argument("--checkpoints", type=int, default=None, help="off-clock trace points (default 8)")
    parser.add_argument("--eval-draws", type=int, default=None, help="θ draws per score (default 32)")
    parser.add_argument(
        "--eval-segments",
        type=int,
        default=None,
        help="size groups of the scoring (default: each log2 bucket)",
    )
    parser.add_argument(
        "--method-param", action="append", metavar="KEY=VALUE", help="e.g. lr=0.003, width=32"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="output folder (records.jsonl, summary.md, scale.png)"
    )
    parser.add_argument("--no-isolate", action="store_true", help="run the methods in this process")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


def config_from_args(args: argparse.Namespace) -> ScaleConfig:
    """A :class:`ScaleConfig` from parsed options (``--quick`` supplies defaults, options win)."""
    from hierbench.registry import parse_params

    base = dict(QUICK) if args.quick else {}
    given = {
        "num_users": args.num_users,
        "steps": args.steps,
        "budget_s": args.budget_s,
        "chunk_steps": args.chunk_steps,
        "checkpoints": args.checkpoints,
        "eval_draws": args.eval_draws,
        "eval_segments": args.eval_segments,
        "max_strata": args.max_strata,
        "methods": tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None,
    }
    base |= {k: v for k, v in given.items() if v is not None}
    method_params = parse_params("method", "amortized", args.method_param or [])
    method_params.pop("batch_groups", None)  # the runner's --batch-users
    return ScaleConfig(
        seed=args.seed,
        path=args.path,
        batch_users=args.batch_users,
        method_params=method_params,
        **base,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m hierbench.scale``: exit 0 if every run ends ok or infeasible, 1 if not, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m hierbench.scale", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    """Run from parsed options; the exit code of :func:`main`."""
    try:
        cfg = config_from_args(args)
    except ParamError as err:
        print(f"hierbench scale: error: {err}", file=sys.stderr)
        return 2
    records = run_scale(cfg, args.out, isolate=not args.no_isolate, progress=args.progress)
    print(f"records: {Path(args.out) / 'records.jsonl'}; summary: {Path(args.out) / 'summary.md'}")
    return 0 if all(r["status"] in ("ok", "infeasible") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
