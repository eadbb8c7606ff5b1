"""Off-the-clock float64 scoring of q on a model whose ratings are kept in a store, over user chunks.

:class:`hierbench.scoring.Scorer` reads the padded ``model.data``; a model that keeps its ratings
compressed (``model.store``, :mod:`hierbench.datasets.base`) has none, so :func:`hierbench.harness.run_one`
scores it with :class:`ChunkedScorer` instead.  Every θ draw is made once; then each chunk of users
draws its z given those θ draws, with its rows gathered from the store
(:func:`hierbench.methods.store_batches.gather`), so each draw's log weight summed over chunks is
exactly the full-data log p(θ, z, y) − log q(θ, z).  The ELBO (± se), IW-ELBO and the Var[log q] =
D/2 check are :func:`hierbench.scoring.summarize`'s and :func:`~hierbench.scoring.log_q_check`'s;
the held-out log predictive density is :func:`~hierbench.scoring.heldout_scores`'
Σ_i log (1/S) Σ_s p(y_test_i | θ_s, z_is), summed over user chunks.  Users are scored one by one
under ``vmap`` (per-user keys), so a chunk padded with dummy users simply drops them.  It needs a
method whose q factorizes over groups (``sample_global`` and ``sample_local``: branch, amortized).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

import hierbench._jax  # noqa: F401  (float64 on: scoring is always float64)
from hierbench.datasets.base import HierModel, ParamError
from hierbench.harness.loop import beat
from hierbench.methods.base import Method
from hierbench.methods.batches import size_levels
from hierbench.methods.store_batches import DeviceStore, gather, store_arrays
from hierbench.scoring import MAX_CHUNK_FLOATS, NET_FLOATS_PER_ROW, as_float64, log_q_check, summarize


class ChunkedScorer:
    """Float64 ELBO and held-out log predictive density of a group-factorized q, over user chunks.

    Users are grouped by log₂ size bucket (each pads to its own widest user, < 2× its ratings), and
    each bucket cut into chunks of a fixed number of users (padded with weight-0 dummy users), so one
    program is compiled per bucket (module docstring).

    Parameters
    ----------
    model : HierModel
        A model whose ratings are in ``model.store``.
    method : Method
        With ``sample_global`` and ``sample_local``.
    num_draws : int
        θ draws per score (shared by every chunk of users).
    iw_k : int
        Importance samples per IW-ELBO term (at most ``num_draws // 2``: at least two terms).
    max_floats : int
        float64 numbers of one chunk's largest intermediates.
    max_segments : int, optional
        Merge consecutive size buckets into this many groups (fewer programs to compile, more
        padding: for small runs); None: every bucket its own.
    """

    def __init__(
        self,
        model: HierModel,
        method: Method,
        num_draws: int = 1000,
        iw_k: int = 10,
        max_floats: int = MAX_CHUNK_FLOATS,
        max_segments: int | None = None,
    ):
        store = model.store
        if store is None:
            raise ParamError("the chunked scorer reads a model whose ratings are kept in a store")
        if method.sample_global is None or method.sample_local is None:
            raise ParamError("chunked scoring needs a method with sample_global and sample_local")
        self.method, self.model, self.num_draws = method, model, num_draws
        self.iw_k = max(1, min(iw_k, num_draws // 2))  # at least two IW-ELBO terms
        self.store = DeviceStore(*(jnp.asarray(a) for a in store_arrays(store, jnp.float64)))
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
                beat()  # a full-size score takes minutes: progress for a watching sweep
                local, lq_local = local + out[0], lq_local + out[1]
                lpd += float(out[2])
                lq_global = out[3] if lq_global is None else lq_global
        log_w = np.asarray(self.model.log_prior_global(theta) - lq_global + local)
        summary = summarize(log_w, np.asarray(theta), self.iw_k)
        if self.method.config.get("gaussian_q"):
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
