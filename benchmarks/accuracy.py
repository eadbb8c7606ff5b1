"""Posterior-accuracy scores of draws from q against a reference, per block (global θ, local z).

For each coordinate k of a block, with reference mean m_k, sd s_k and q's draw mean m̂_k, sd ŝ_k:

* standardized mean error  |m̂_k − m_k| / s_k                (reported: mean and max over k)
* sd ratio error           |ŝ_k / s_k − 1|                   (mean and max)
* marginal 1-Wasserstein   W1(q_k, p_k) / s_k, in units of the reference sd (mean over k), from
  the quantile functions on the reference's grid of Q levels u_j = (j − ½)/Q:
  W1 = ∫₀¹ |F_q⁻¹(u) − F_p⁻¹(u)| du ≈ (1/Q) Σ_j |F_q⁻¹(u_j) − F_p⁻¹(u_j)|  (tails beyond ½/Q dropped).

and, over the joint, PSIS k̂ (ArviZ ``psislw``) of the log weights log p(θ, z, y) − log q(θ, z):
k̂ < 0.5 means importance sampling from q is reliable, > 0.7 that q misses posterior mass.
The local block is scored on the groups whose z draws the scorer kept (all, or the first
``max_local_groups``); the record says how many.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from hierbench.reference import QUANTILE_LEVELS, Reference

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def block_scores(draws: np.ndarray, ref_mean: np.ndarray, ref_sd: np.ndarray, ref_q: np.ndarray) -> dict:
    """Scores of ``draws (S, P)`` against per-coordinate reference mean/sd ``(P,)`` and quantiles
    ``(Q, P)`` on :data:`QUANTILE_LEVELS`."""
    draws = np.asarray(draws, np.float64)
    mean, sd = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    z_err = np.abs(mean - ref_mean) / ref_sd
    sd_err = np.abs(sd / ref_sd - 1.0)
    q = np.quantile(draws, QUANTILE_LEVELS, axis=0)
    w1 = np.mean(np.abs(q - ref_q), axis=0) / ref_sd
    return {
        "std_mean_err_mean": float(np.mean(z_err)),
        "std_mean_err_max": float(np.max(z_err)),
        "sd_ratio_err_mean": float(np.mean(sd_err)),
        "sd_ratio_err_max": float(np.max(sd_err)),
        "w1_mean": float(np.mean(w1)),
        "coords": int(draws.shape[1]),
    }


def psis_khat(log_w: np.ndarray) -> float | None:
    """Pareto k̂ of the importance weights exp(log_w) (ArviZ's PSIS); None if not computable."""
    log_w = np.asarray(log_w, np.float64)
    if log_w.size < 10 or not np.all(np.isfinite(log_w)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns when k̂ is high: the number is the message
        _, khat = az.psislw(log_w - log_w.max())
    return float(khat)


def accuracy_block(
    ref: Reference,
    theta: np.ndarray,
    z: np.ndarray,
    log_w: np.ndarray | None = None,
) -> dict[str, Any]:
    """The record's accuracy block for draws θ ``(S, G)`` and z ``(S, N', L)`` (the first N' groups).

    ``log_w`` (log p − log q per draw) gives PSIS k̂; None for samplers (no q density).
    """
    n_sub = z.shape[1]
    out = {
        "reference": ref.source,
        "draws": int(theta.shape[0]),
        "global": block_scores(theta, ref.global_mean, ref.global_sd, ref.global_q),
        "local": block_scores(
            z.reshape(z.shape[0], -1),
            ref.local_mean[:n_sub].reshape(-1),
            ref.local_sd[:n_sub].reshape(-1),
            ref.local_q[:, :n_sub].reshape(ref.local_q.shape[0], -1),
        ),
        "local_groups_scored": int(n_sub),
        "psis_khat": psis_khat(log_w) if log_w is not None else None,
    }
    if ref.meta.get("key"):
        out["reference_key"] = ref.meta["key"][:16]
    return out
