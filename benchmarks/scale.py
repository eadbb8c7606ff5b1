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
from jax.scipy.special import logsumexp

import hierbench._jax  # noqa: F401  (float64 on)
from hierbench.datasets import movielens_synth as synth
from hierbench.datasets.base import HierModel, ParamError, check_positive_int
from hierbench.harness.backends.jax_backend import JaxBackend
from hierbench.harness.budget import plan_run
from hierbench.harness.loop import fit
from hierbench.methods import amortized, branch, dense
from hierbench.methods._ops import namespace
from hierbench.methods.base import Family, Infeasible, Method, TrainConfig, train_config
from hierbench.methods.batches import Pick, Stratum, plan_strata, size_levels
from hierbench.methods.vi import make_vi
from hierbench.records import Record, append_record, env_info, finish, new_record, read_records
from hierbench.scoring import log_q_check, summarize

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
    "budget_s": None,
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
    """A :class:`~hierbench.datasets.movielens_synth.RatingStore`'s arrays (on the device once a step
    reads them)."""

    offsets: Any  # (N + 1,) int64
    num_train: Any  # (N,) int32
    movie: Any  # (R,) int32
    y: Any  # (R,) uint8
    table: Any  # (M, d) float: the movie × feature table


def store_arrays(store: synth.RatingStore, dtype: Any) -> DeviceStore:
    """The store's arrays as numpy; the feature table in ``dtype``."""
    return DeviceStore(store.offsets, store.num_train, store.movie, store.y, np.asarray(store.genres, dtype))


def to_device(store: synth.RatingStore, dtype: Any) -> DeviceStore:
    """The store's arrays on JAX's default device; the feature table in ``dtype``."""
    return DeviceStore(*(jnp.asarray(a) for a in store_arrays(store, dtype)))


def gather(store: DeviceStore, users: Any, width: int, part: str = "train") -> dict[str, Any]:
    """The contract's padded rows of ``users`` ``(B,)``: ``x (B, width, d)``, ``y``, ``mask``, in the
    table's dtype, gathered from the CSR arrays (padding is zero, like the registered datasets')."""
    xp = namespace(store.table)
    dtype = store.table.dtype
    start = xp.take(store.offsets, users, axis=0)
    n_train = xp.astype(xp.take(store.num_train, users, axis=0), start.dtype)
    if part == "train":
        first, size = start, n_train
    else:
        first, size = start + n_train, xp.take(store.offsets, users + 1, axis=0) - start - n_train
    pos = xp.arange(width, dtype=start.dtype)
    valid = pos[None, :] < size[:, None]
    rows = xp.where(valid, first[:, None] + pos[None, :], xp.zeros_like(first[:, None]))
    movie = xp.take(store.movie, xp.reshape(rows, (-1,)), axis=0)
    x = (
        xp.reshape(xp.take(store.table, movie, axis=0), (*rows.shape, -1))
        * xp.astype(valid, dtype)[..., None]
    )
    y_raw = xp.reshape(xp.take(store.y, xp.reshape(rows, (-1,)), axis=0), rows.shape)
    y = xp.astype(xp.where(valid, y_raw, xp.zeros_like(y_raw)), dtype)
    return {"x": x, "y": y, "mask": xp.astype(valid, dtype)}


class RatingStoreBatches:
    """A batch source over the compressed rating store (:mod:`hierbench.methods.batches`): users
    stratified by size as :class:`~hierbench.methods.batches.Stratified` does on padded data, but each
    step's rows gathered from the CSR arrays, so nothing is ever padded beyond one stratum's batch."""

    def __init__(self, store: synth.RatingStore, batch_users: int, max_strata: int):
        self.store, self.batch_users, self.max_strata = store, batch_users, max_strata
        self.plan = plan_strata(store.train_sizes, batch_users, max_strata)
        self.strata = tuple(Stratum(len(p.groups), p.alloc, p.scale) for p in self.plan)
        self.groups_per_pick = tuple(p.alloc for p in self.plan)

    def arrays(self, dtype: str) -> dict[str, Any]:
        return {"store": store_arrays(self.store, dtype), "strata": [p.groups for p in self.plan]}

    def picks(self, data: Any, positions: list[Any]) -> list[Pick]:
        out = []
        for p, users_s, pos in zip(self.plan, data["strata"], positions, strict=True):
            users = namespace(users_s).take(users_s, pos, axis=0)
            out.append(Pick(users, gather(data["store"], users, p.width), p.scale))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "batch_groups": self.batch_users,
            "row_layout": True,
            "strata": len(self.plan),
            "groups_per_step": sum(self.groups_per_pick),
            "strata_widths": [p.width for p in self.plan],
            "strata_users": [len(p.groups) for p in self.plan],
            "rows_per_step": sum(p.alloc * p.width for p in self.plan),
            "max_strata": self.max_strata,
        }


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
        family = branch.build_family(model.num_groups, model.dim_global, model.dim_local, init_sd)
        return family, train_config(train), {"init_sd": init_sd}
    if name == "dense":
        dense.make(model, **train)  # raises Infeasible far below this size
        raise ParamError("dense is feasible at this size: use `hierbench run --method dense`")
    raise ParamError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")


# --------------------------------------------------------------------------- training


def build_vi(name: str, model: HierModel, store: synth.RatingStore, cfg: ScaleConfig, steps: int) -> Method:
    """``name``'s :class:`~hierbench.methods.base.Method` on the store: its family, trained by
    :func:`~hierbench.methods.vi.make_vi` on :class:`RatingStoreBatches` for ``steps`` steps."""
    family, train, config = build_method(name, model, store, cfg.method_params)
    train = dataclasses.replace(train, steps=steps)
    batches = RatingStoreBatches(store, cfg.batch_users, cfg.max_strata)
    return make_vi(model, family, train, batches, **config, chunk_steps=cfg.chunk_steps)


def step_setup(
    name: str, store: synth.RatingStore, model: HierModel, batch_users: int, max_strata: int
) -> tuple[Callable, Any, dict[str, Any], list]:
    """``(step, initial state, data, strata plan)`` of ``name``'s training step with its default
    settings (float64), as a run builds it: what the perf suite and ``benchmarks/perf/strata_step.py``
    time."""
    cfg = ScaleConfig(
        num_users=store.num_users, methods=(name,), batch_users=batch_users, max_strata=max_strata
    )
    method = build_vi(name, model, store, cfg, 10_000)
    data = jax.tree.map(jnp.asarray, method.batches.arrays(method.config["dtype"]))
    return method.step, method.init(jax.random.key(0)), data, method.batches.plan


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
        method: Method,
        model: HierModel,
        store: synth.RatingStore,
        num_draws: int,
        iw_k: int = 10,
        max_floats: int = EVAL_FLOATS,
        max_segments: int | None = None,
    ):
        if method.sample_global is None or method.sample_local is None:
            raise ParamError("chunked scoring needs a method with sample_global and sample_local")
        self.method, self.model, self.num_draws = method, model, num_draws
        device_store = to_device(store, jnp.float64)
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
        self._theta = jax.jit(method.sample_global, static_argnums=2)
        self.compile_s: float | None = None

    def _score_chunk(self, width, twidth, params, theta, key, users, valid, store):
        method, model, S = self.method, self.model, theta.shape[0]
        data = gather(store, users, width, "train")
        test = gather(store, users, twidth, "test")
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(users.shape[0]))

        def one(k, u, d, t):  # one user: per-draw terms (S,), so dummy users can be dropped
            d1, t1, u1 = jax.tree.map(lambda a: a[None], d), jax.tree.map(lambda a: a[None], t), u[None]
            z, lq_global, lq_local = method.sample_local(k, params, theta, u1, d1)
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
        theta = self._theta(k_theta, params, self.num_draws)
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
        self.last = {"log_w": log_w, "theta": np.asarray(theta), "z": None}
        if self.compile_s is None:  # the first call compiles every bucket's program
            self.compile_s = time.perf_counter() - t0
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


def scale_record(
    name: str, cfg: ScaleConfig, dataset: str, data_params: dict[str, Any], run_id: str
) -> Record:
    """The record of ``name``'s run (:func:`~hierbench.records.new_record`), before the run."""
    return new_record(
        name.split("-", 1)[0],
        dataset,
        data_params,
        dict(cfg.method_params),
        cfg.seed,
        "jax",
        run_id=run_id,
        runner="hierbench.scale",
        accuracy=None,
        reference="no reference store",
        budget_s=cfg.budget_s,
    )


def run_method(name: str, cfg: ScaleConfig, run_id: str = "", progress: bool | None = None) -> Record:
    """Fit one method of :data:`METHODS` to the run's store and return its record (never raises)."""
    record: Record | None = None
    try:
        store, dataset, data_params = load_store(cfg)
        record = scale_record(name, cfg, dataset, data_params, run_id)
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
        _fit(record, name, cfg, store, model, progress)
    except Infeasible as err:
        finish(record, "infeasible", str(err), memory_bytes=err.memory_bytes)
        if name == "dense" and "dim" in record:  # the D × D factor alone, in float64
            record["covariance_bytes"] = 8 * record["dim"] ** 2
    except Exception as err:  # one method's failure is its record, not the run's end
        record = record or scale_record(name, cfg, "", {}, run_id)
        finish(record, "error", f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record |= memory_info()
    record.setdefault("env", env_info(record.get("method_params", {}).get("dtype")))
    return record


def _fit(
    record: Record, name: str, cfg: ScaleConfig, store: synth.RatingStore, model: HierModel, progress
) -> None:
    """Plan (the budget rule), then the one timed loop with the chunked scorer; fills ``record``."""
    family, train, _ = build_method(name, model, store, cfg.method_params)
    params = jax.tree.map(lambda a: jnp.asarray(a, train.dtype), family.init_params(jax.random.key(0)))
    params_bytes = tree_bytes(params)
    del params
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
    backend = JaxBackend()
    plan, probe = plan_run(
        backend,
        model,
        lambda n: build_vi(name, model, store, cfg, n),
        cfg.seed,
        steps=cfg.steps,
        checkpoints=cfg.checkpoints,
        budget_s=cfg.budget_s,
        chunk=cfg.chunk_steps,
    )
    _beat()
    if probe is not None:
        record |= {"probe": probe, "planned_steps": plan.steps}
    method = build_vi(name, model, store, cfg, plan.steps)
    record |= {"method_params": method.config, "env": env_info(train.dtype)}
    scorer = ChunkedScorer(method, model, store, cfg.eval_draws, max_segments=cfg.eval_segments)
    fit(record, model, method, backend, scorer, plan, cfg.seed, progress, beat=_beat)
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
    return finish(scale_record(name, cfg, dataset, {}, run_id), "error", failure, env=env_info(None))


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
