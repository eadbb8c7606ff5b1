"""Off-the-clock scoring of a fitted q: ELBO, IW-ELBO and θ's moments, in float64.

The ELBO is estimated from ``num_draws`` independent draws of q on the *full* data as the mean of
log p(θ, z, y) − log q(θ, z), with its Monte Carlo standard error.  Draws are processed in chunks
sized so that a chunk's draws stay under ``max_chunk_floats`` numbers, and each chunk's likelihood
in blocks of a few draws, so memory stays bounded for any N.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from hierbench.datasets.base import HierModel, full_data_log_joint
from hierbench.methods.base import Method

jax.config.update("jax_enable_x64", True)

MAX_CHUNK_FLOATS = 2**24  # 128 MiB of float64 per chunk
MAX_LOCAL_GROUPS = 1000  # z draws kept for accuracy scores: the first this many groups


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
    """

    def __init__(
        self,
        model: HierModel,
        method: Method,
        num_draws: int = 1000,
        iw_k: int = 10,
        max_chunk_floats: int = MAX_CHUNK_FLOATS,
        max_local_groups: int = MAX_LOCAL_GROUPS,
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
        if block * model.num_groups * n_max > max_chunk_floats:
            raise ValueError("a block of draws does not fit max_chunk_floats; raise it")

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

    def __call__(self, key: jax.Array, params: Any) -> dict[str, Any]:
        """Score ``params``: returns elbo, elbo_se, iw_elbo, iw_elbo_se, eval_draws, θ mean and sd."""
        params = as_float64(params)
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
        self.last = {"log_w": log_w, "theta": theta, "z": z}  # for accuracy scores at the end of a run
        summary = summarize(log_w, theta, self.iw_k)
        if self.method.config.get("gaussian_q"):
            summary |= log_q_check(log_q, self.dim)
        if test_ll.shape[1]:
            summary |= heldout_scores(test_ll, self.model)
        return summary


def heldout_scores(test_ll: np.ndarray, model: HierModel) -> dict[str, Any]:
    """Held-out log predictive density from per-draw, per-group test log-likelihoods ``(S, N)``:
    Σ_i log (1/S) Σ_s p(y_test_i | θ_s, z_is), in total and per held-out observation."""
    lpd = float(np.sum(np.asarray(logsumexp(test_ll, axis=0)) - math.log(test_ll.shape[0])))
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
