"""Off-the-clock scoring of a fitted q: ELBO, IW-ELBO and θ's moments, in float64.

The ELBO is estimated from ``num_draws`` independent draws of q on the *full* data as the mean of
log p(θ, z, y) − log q(θ, z), with its Monte Carlo standard error.  Draws are processed in chunks
sized so that a chunk's draws stay under ``max_chunk_floats`` numbers, and each chunk's likelihood
in blocks of a few draws, so memory stays bounded in the number of draws.

Where a block of draws over *all* groups would not fit (hier-linear at N = 10⁵ groups of 100 rows:
10 draws × 10⁷ rows), and q factorizes as q(θ) ∏_i q(z_i | θ) (branch, amortized:
:attr:`~hierbench.methods.base.Method.sample_local`), the scorer goes **by groups** instead: it draws
every θ once, then for one chunk of groups at a time draws those groups' z given the same θ draws
and adds their terms log p(z_i, y_i | θ) − log q(z_i | θ) to each draw's log weight.  Each draw's
log weight is then exactly the full-data one, so the ELBO, its standard error, the IW-ELBO and k̂
mean the same as on the other path; only the random streams differ.
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
from hierbench.datasets.base import HierModel, full_data_log_joint, row_layout
from hierbench.methods.base import Method

MAX_CHUNK_FLOATS = 2**24  # 128 MiB of float64 per chunk
MAX_LOCAL_GROUPS = 1000  # z draws kept for accuracy scores: the first this many groups
NET_FLOATS_PER_ROW = 256  # per-row intermediates of an amortization net (width 64, a few layers)


def as_float64(tree: Any) -> Any:
    """Cast every floating leaf of a pytree to float64."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a,
        tree,
    )


class Scorer:
    """Compiles, once per (model, method), the float64 scoring of a chunk of draws.

    Parameters
    ----------
    model, method
        The model and the method whose ``sample`` draws from q.
    num_draws : int
        Draws per evaluation (rounded up to a whole number of chunks; the record states the count).
    iw_k : int
        Importance samples per IW-ELBO term (the IW-ELBO uses ``num_draws // iw_k`` terms).
    max_chunk_floats : int
        Memory budget of one chunk's largest arrays, in numbers.
    max_local_groups : int
        z draws of this many groups (the first) are kept for accuracy scores.
    by_groups : bool, optional
        Score a chunk of groups at a time (module docstring); default: only when the full data does
        not fit ``max_chunk_floats``.
    """

    def __init__(
        self,
        model: HierModel,
        method: Method,
        num_draws: int = 1000,
        iw_k: int = 10,
        max_chunk_floats: int = MAX_CHUNK_FLOATS,
        max_local_groups: int = MAX_LOCAL_GROUPS,
        by_groups: bool | None = None,
    ):
        self.model = model
        self.data = as_float64({k: jnp.asarray(v) for k, v in model.data.items()})
        # the joint is evaluated on the row layout where groups are ragged (cost ∝ observations)
        joint, packed = full_data_log_joint(model)
        self.packed = as_float64(jax.tree.map(jnp.asarray, packed))
        held_out = model.test_data is not None and model.log_lik is not None
        test = model.test_data if held_out else {}
        self.test_data = as_float64({k: jnp.asarray(v) for k, v in test.items()})
        n_keep = min(model.num_groups, max_local_groups)
        n_max = model.data["mask"].shape[1] if "mask" in model.data else 1
        # A chunk of draws is sampled at once (q's per-group parameters, e.g. the amortization net's
        # outputs, are computed once per chunk), then scored in blocks of `block` draws under
        # lax.map: XLA on CPU runs the batched likelihood matmul ~20x faster per draw at 8-16 draws
        # than at hundreds (measured, N=1000), and a block's (block, N, n_max) intermediates stay small.
        block = iw_k
        per_draw = model.num_groups * model.dim_local + model.dim_global
        most = max(block, max_chunk_floats // (2 * per_draw))
        self.num_chunks = math.ceil(num_draws / most)
        chunk = block * math.ceil(num_draws / self.num_chunks / block)  # even chunks, whole blocks
        self.chunk = chunk
        self.num_draws = chunk * self.num_chunks
        self.iw_k = iw_k

        def score_chunk(key, params, data, test_data, packed):
            draws = method.sample(key, params, data, chunk)
            theta = draws.theta.reshape(chunk // block, block, -1)
            z = draws.z.reshape(chunk // block, block, *draws.z.shape[1:])
            log_p = jax.lax.map(lambda tz: joint(tz[0], tz[1], packed), (theta, z))
            if held_out:  # per draw and group: log p(y_test_i | θ, z_i)
                ll = lambda tz: model.log_lik(tz[0][:, None, :], tz[1], test_data)  # noqa: E731
                test_ll = jax.lax.map(ll, (theta, z))
                test_ll = test_ll.reshape(chunk, -1)
            else:
                test_ll = jnp.zeros((chunk, 0))
            log_w = log_p.reshape(chunk) - draws.log_q
            return log_w, draws.log_q, draws.theta, draws.z[:, :n_keep], test_ll

        self._score_chunk = jax.jit(score_chunk)
        self.method = method
        self.dim = per_draw
        self.compile_s: float | None = None
        self.n_keep = n_keep
        # By groups (module docstring) when a block of draws over every group would not fit, or the
        # per-row intermediates of an amortization net over every group would be large.
        too_big = block * model.num_groups * n_max > max_chunk_floats
        too_big |= model.num_groups * n_max * NET_FLOATS_PER_ROW > 4 * max_chunk_floats
        if by_groups and method.sample_local is None:
            raise ValueError("by_groups needs a method with sample_local (q factorized over groups)")
        self.by_groups = bool(too_big and method.sample_local is not None) if by_groups is None else by_groups
        if self.by_groups:
            self._setup_by_groups(model, method, num_draws, block, max_chunk_floats, held_out)
        elif block * model.num_groups * n_max > max_chunk_floats:
            raise ValueError(
                "a block of draws over every group does not fit max_chunk_floats and this method "
                "cannot be scored a chunk of groups at a time (no sample_local); raise max_chunk_floats"
            )

    def _setup_by_groups(self, model, method, num_draws, block, max_chunk_floats, held_out) -> None:
        """Plan the by-groups path: segments (size buckets of ragged groups, else all groups), each cut
        into chunks of ``G_c`` groups (plus a remainder), with one compiled function per chunk shape."""
        self.num_draws = block * math.ceil(num_draws / block)
        self.num_chunks = 1
        S, L = self.num_draws, model.dim_local
        layout = row_layout(model)
        segments = (
            [(jnp.arange(model.num_groups), self.data)]
            if layout is None
            else [(jnp.asarray(b["index"]), as_float64(jax.tree.map(jnp.asarray, b["data"]))) for b in layout]
        )
        self.segments = []
        for index, data in segments:
            width = data["mask"].shape[1] if "mask" in data else 1
            size = min(
                len(index),
                max_chunk_floats // (2 * S * L),  # z draws of a chunk
                max_chunk_floats // (block * width),  # a block's likelihood intermediates
                max_chunk_floats // (width * NET_FLOATS_PER_ROW),  # an amortization net's rows
            )
            pieces = math.ceil(len(index) / max(1, size))
            size = math.ceil(len(index) / pieces)  # equal chunks: often no remainder (one program)
            starts = list(range(0, len(index), size))
            self.segments.append((index, data, size, starts))

        def chunk_fn(size, key, params, theta, data, index, test_data, start):
            data_c = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), data)
            idx = jax.lax.dynamic_slice_in_dim(index, start, size)
            z, lq_global, lq_local = method.sample_local(key, params, theta, idx, data_c)
            zb = z.reshape(S // block, block, *z.shape[1:])
            tb = theta.reshape(S // block, block, -1)
            local = jax.lax.map(
                lambda tz: jnp.sum(model.log_local(tz[0][:, None, :], tz[1], data_c), axis=-1), (tb, zb)
            ).reshape(S)
            out = {"local": local - lq_local, "lq_global": lq_global, "lq_local": lq_local}
            if held_out:  # Σ_{i in chunk} log (1/S) Σ_s p(y_test_i | θ_s, z_is)
                test_c = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), test_data)
                ll = jax.lax.map(lambda tz: model.log_lik(tz[0][:, None, :], tz[1], test_c), (tb, zb))
                out["lpd"] = jnp.sum(logsumexp(ll.reshape(S, -1), axis=0) - math.log(S))
            out["z"], out["idx"] = z, idx  # kept where the chunk holds some of the first n_keep groups
            return out

        self._chunk_fn = jax.jit(chunk_fn, static_argnums=0)  # one program per chunk size
        self._draw_theta = jax.jit(method.sample_global, static_argnums=2)

    def _score_by_groups(self, key: jax.Array, params: Any) -> tuple[np.ndarray, ...]:
        """Log weights, log q, θ and the kept groups' z on the by-groups path."""
        S, L = self.num_draws, self.model.dim_local
        k_theta, k_local = jax.random.split(key)
        theta = self._draw_theta(k_theta, params, S)
        log_w = jnp.zeros(S)
        lq_local = jnp.zeros(S)
        lq_global = None
        z_keep = np.zeros((S, self.n_keep, L))
        lpd = 0.0
        c = 0
        for index, data, size, starts in self.segments:
            for start in starts:
                n = min(size, len(index) - start)
                keep = bool(np.any(np.asarray(index[start : start + n]) < self.n_keep))
                out = self._chunk_fn(
                    n, jax.random.fold_in(k_local, c), params, theta, data, index, self.test_data, start
                )
                c += 1
                log_w = log_w + out["local"]
                lq_local = lq_local + out["lq_local"]
                lq_global = out["lq_global"] if lq_global is None else lq_global
                if "lpd" in out:
                    lpd += float(out["lpd"])
                if keep:
                    idx = np.asarray(out["idx"])
                    sel = idx < self.n_keep
                    z_keep[:, idx[sel]] = np.asarray(out["z"])[:, sel]
        log_prior = self.model.log_prior_global(theta)
        log_w = np.asarray(log_w + log_prior - lq_global)
        self._lpd = lpd
        return log_w, np.asarray(lq_global + lq_local), np.asarray(theta), z_keep

    def __call__(self, key: jax.Array, params: Any) -> dict[str, Any]:
        """Score ``params``: returns elbo, elbo_se, iw_elbo, iw_elbo_se, eval_draws, θ mean and sd."""
        params = as_float64(params)
        if self.by_groups:
            if self.compile_s is None:
                t0 = time.perf_counter()
                self._score_by_groups(key, params)  # compiles every chunk shape once
                self.compile_s = time.perf_counter() - t0
            log_w, log_q, theta, z = self._score_by_groups(key, params)
            return self._summary(log_w, log_q, theta, z, None)
        if self.compile_s is None:
            t0 = time.perf_counter()
            args = (self.data, self.test_data, self.packed)
            self._score_chunk = self._score_chunk.lower(key, params, *args).compile()
            self.compile_s = time.perf_counter() - t0
        args = (self.data, self.test_data, self.packed)
        out = [[], [], [], [], []]
        for i in range(self.num_chunks):
            parts = self._score_chunk(jax.random.fold_in(key, i), params, *args)
            for acc, part in zip(out, parts, strict=True):
                acc.append(np.asarray(part))
        log_w, log_q, theta, z, test_ll = (np.concatenate(a) for a in out)
        return self._summary(log_w, log_q, theta, z, test_ll)

    def _summary(self, log_w, log_q, theta, z, test_ll) -> dict[str, Any]:
        self.last = {"log_w": log_w, "theta": theta, "z": z}  # for accuracy scores at the end of a run
        summary = summarize(log_w, theta, self.iw_k)
        if self.method.config.get("gaussian_q"):
            summary |= log_q_check(log_q, self.dim)
        if test_ll is not None and test_ll.shape[1]:
            summary |= heldout_scores(test_ll, self.model)
        elif test_ll is None and self.test_data:
            summary |= heldout_from_lpd(self._lpd, self.model)
        summary["scored_by_groups"] = self.by_groups
        return summary


def heldout_scores(test_ll: np.ndarray, model: HierModel) -> dict[str, Any]:
    """Held-out log predictive density from per-draw, per-group test log-likelihoods ``(S, N)``:
    Σ_i log (1/S) Σ_s p(y_test_i | θ_s, z_is), in total and per held-out observation."""
    lpd = float(np.sum(np.asarray(logsumexp(test_ll, axis=0)) - math.log(test_ll.shape[0])))
    return heldout_from_lpd(lpd, model)


def heldout_from_lpd(lpd: float, model: HierModel) -> dict[str, Any]:
    """:func:`heldout_scores`'s fields from the total held-out log predictive density."""
    mask = model.test_data.get("mask")
    n_test = int(mask.sum()) if mask is not None else model.num_groups
    return {"heldout_lpd": lpd, "heldout_lpd_per_obs": lpd / n_test, "heldout_obs": n_test}


LOG_Q_VAR_TOLERANCE = 0.5  # |Var[log q] / (D/2) - 1| beyond this (or 6 sd): q's density is broken


def log_q_check(log_q: np.ndarray, dim: int) -> dict[str, Any]:
    """Numerical integrity of a Gaussian q from its own draws.

    For any D-dimensional Gaussian, log q(x) at x ~ q is a constant minus ½χ²_D, so Var[log q] = D/2
    exactly, whatever the mean and covariance.  A near-singular factor breaks the computed density
    first (the solve inside log q returns garbage, e.g. an ELBO of +4e35 where no exact log evidence
    exists to bound it).  With S draws the ratio's standard deviation is about √((2 + 12/D)/S)
    (≤ 0.12 at S = 1000); the tolerance is the larger of :data:`LOG_Q_VAR_TOLERANCE` and 6 of those
    sds, so a true Gaussian passes while a broken one is off by orders of magnitude.
    Returns ``log_q_var_ratio`` and ``log_q_ok``.
    """
    tolerance = max(LOG_Q_VAR_TOLERANCE, 6.0 * math.sqrt((2.0 + 12.0 / dim) / len(log_q)))
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = float(np.var(log_q, ddof=1) / (dim / 2.0))
    ok = bool(np.isfinite(ratio) and abs(ratio - 1.0) <= tolerance)
    return {"log_q_var_ratio": ratio if np.isfinite(ratio) else None, "log_q_ok": ok}


def summarize(log_w: np.ndarray, theta: np.ndarray, iw_k: int) -> dict[str, Any]:
    """ELBO and IW-ELBO (with standard errors) from log weights, plus θ's mean and sd under q."""
    m = len(log_w)
    # Log weights of astronomically large magnitude (a numerically broken q) overflow the variance;
    # such an estimate is not an ELBO, so report it as non-finite rather than with an infinite se.
    with np.errstate(over="ignore"):
        finite = bool(np.all(np.isfinite(log_w)) and np.isfinite(np.var(log_w)))
    iw_terms = np.asarray(logsumexp(log_w[: m - m % iw_k].reshape(-1, iw_k), axis=1)) - math.log(iw_k)
    return {
        "elbo": float(np.mean(log_w)) if finite else None,
        "elbo_se": float(np.std(log_w, ddof=1) / math.sqrt(m)) if finite else None,
        "iw_elbo": float(np.mean(iw_terms)) if finite else None,
        "iw_elbo_se": float(np.std(iw_terms, ddof=1) / math.sqrt(len(iw_terms))) if finite else None,
        "iw_k": iw_k,
        "eval_draws": m,
        "global_mean": theta.mean(axis=0).tolist(),
        "global_sd": theta.std(axis=0, ddof=1).tolist(),
    }
