r"""The floor of one VI step: FLOPs and bytes counted analytically, and the machine's peaks measured.

One step of every Gaussian family on ``hier-linear`` (N groups, n rows each, d = G = L, joint
dimension D = d + N·d, S Monte Carlo draws, rank r) is: draw S points of q, evaluate
log p − log q on them, differentiate, and take an Adam step on the P variational parameters.

FLOPs (a multiply-add counts 2)::

    likelihood, every family   F_lik   = S · (4·N·n·d + 4·N·n + 6·D)
        x_ijᵀ z_i forward (2Nnd) and X_iᵀ r_i backward (2Nnd); residual and square, forward and
        backward (4Nn); the Gaussian priors of θ and z_i, forward and backward (6D)
    meanfield                  F_q     = 10·S·D,                  P = 2·D
        draw m + s·ε (2SD); log q (4SD) and its backward (4SD)
    lowrank                    F_q     = S · (8·D·r + 10·D),      P = D·(r + 2)
        draw m + s·ε + F ε_r (2SD + 2SDr); log q by Woodbury (the diagonal part 4SD, uᵀs⁻²F 2SDr),
        its backward to the draw (4SD + 2SDr) and the draw's backward to F (2SDr); the r×r
        capacitance (O(D·r²), once) is below these for S ≥ r
    dense                      F_q     = 4·S·D²,                  P = D·(D + 1)/2
        draw L ε (S·D²), its backward to L (the outer products ḡ εᵀ on the triangle, S·D²), log q's
        triangular solve L⁻¹(v − m) (S·D²) and its backward (S·D²)
    Adam                       F_adam  = 12·P

Bytes (float64, 8 bytes a number): the data read once, 8·N·n·(d + 2) (x, y and the mask), and Adam
reading parameters, gradient and both moments and writing back parameters and moments, 7·8·P.
Intermediates (the S×D draws, the S×N×n predictors) are not counted: a fused step could keep them
in cache.  P is the smallest parameterization of each family (the triangle for dense; our dense
stores the full D×D raw matrix, twice that).

Branch and amortized (``branch_cost``, ``amortized_cost``) are counted per group and per row, with
G global and L local dimensions, U groups in the step (N for full data, the minibatch otherwise), R
rows the step computes (padding included: a padded row costs what a real one does) and F row
features::

    likelihood                 F_lik   = 3 · S · (R · (2·d + 4) + 2·(G + U·L))
        xᵀz and the link per row, the priors; backward twice the forward (the factor 3)
    q(z_i | θ), every group    F_cond  = 3 · S · U · (2·L·G + 4·L²)
        the draw μ_i + A_i(θ − m) + L_i ε (2LG + 2L²) and log q's triangular solve (2L²)
    q(θ)                       F_glob  = 3 · S · 2·G²
    branch                     P = G + G(G+1)/2 + N·(L + L·G + L²)   (Adam updates all N groups)
    amortized, potential head  F_net   = 3 · R · (2·(F·W + W²) + 2·(W + F)·(L·k + L) + 4·F·L + 2·L²·k)
                                         + 3 · U · (L³/3 + 4·L²·(1 + G))
        the row MLP φ: F → W → W, the potential's r (rank k) and h heads on (φ, row), the bilinear
        shift, Σ_j r rᵀ; per group Λ_i's Cholesky and the solves for (μ_i, A_i)
                               P = F·W + W² + 2W + (W + F + 1)·(L·k + L) + 2·(F + 1)·L + L² + L·G + L
                                   + G + G(G+1)/2

Bytes as above: the step's rows read once, 8·R·(d + 2), and Adam's 7·8·P.

The floor is the roofline bound ``max(F / peak GFLOP/s, B / bandwidth)`` with both peaks measured
in the same run (:func:`measure_machine`): the best float64 matmul rate of numpy and XLA
(2·k³ FLOPs for k×k, k = 1024) and the best streaming add c = a + b over arrays far beyond the
caches (3·8·m bytes for m numbers).  It is optimistic on purpose: a batched matrix-vector product
(the likelihood) does not reach matmul peak, so measured/floor ≈ 1 is out of reach and the ratio is
a yardstick for comparing steps, not a target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class StepCost:
    """FLOPs and bytes of one step and its roofline floor on a given machine."""

    flops: float
    bytes: float

    def floor_s(self, gflops: float, gbytes_per_s: float) -> float:
        """Seconds: max(compute time at peak FLOP/s, memory time at peak bandwidth)."""
        return max(self.flops / (gflops * 1e9), self.bytes / (gbytes_per_s * 1e9))


def step_cost(family: str, num_groups: int, n: int, d: int, num_samples: int, rank: int = 5) -> StepCost:
    """Analytic FLOPs and bytes of one ELBO-gradient + Adam step (formulas in the module docstring).

    Parameters
    ----------
    family : {"meanfield", "lowrank", "dense"}
        The Gaussian family (ours or numpyro's autoguide of the same family: same floor).
    num_groups, n, d : int
        hier-linear's N groups, n rows per group and dimension d.
    num_samples : int
        Monte Carlo draws S per step.
    rank : int
        r for ``lowrank``.
    """
    S, N, D = num_samples, num_groups, d + num_groups * d
    f_lik = S * (4 * N * n * d + 4 * N * n + 6 * D)
    if family == "meanfield":
        f_q, params = 10 * S * D, 2 * D
    elif family == "lowrank":
        f_q, params = S * (8 * D * rank + 10 * D), D * (rank + 2)
    elif family == "dense":
        f_q, params = 4 * S * D * D, D * (D + 1) // 2
    else:
        raise ValueError(f"unknown family {family!r}")
    flops = f_lik + f_q + 12 * params
    data_bytes = 8 * N * n * (d + 2)
    return StepCost(float(flops), float(data_bytes + 7 * 8 * params))


def _likelihood_and_q_flops(S: int, U: int, R: int, G: int, L: int, d: int) -> int:
    """F_lik + F_cond + F_glob of the module docstring (branch and amortized alike)."""
    return 3 * S * (R * (2 * d + 4) + 2 * (G + U * L)) + 3 * S * (U * (2 * L * G + 4 * L * L) + 2 * G * G)


def branch_cost(
    num_groups: int, rows: int, groups_in_step: int, dim_global: int, dim_local: int, d: int, num_samples: int
) -> StepCost:
    """FLOPs and bytes of one branch step (formulas in the module docstring).

    ``rows`` and ``groups_in_step`` are those the step computes on (all N groups' rows for full data;
    a minibatch's otherwise); ``num_groups`` sizes the parameters Adam updates.
    """
    S, U, R, G, L = num_samples, groups_in_step, rows, dim_global, dim_local
    flops = _likelihood_and_q_flops(S, U, R, G, L, d)
    params = G + G * (G + 1) // 2 + num_groups * (L + L * G + L * L)
    return StepCost(float(flops + 12 * params), float(8 * R * (d + 2) + 7 * 8 * params))


def amortized_cost(
    rows: int,
    groups_in_step: int,
    dim_global: int,
    dim_local: int,
    d: int,
    num_features: int,
    num_samples: int,
    width: int = 64,
    potential_rank: int = 1,
) -> StepCost:
    """FLOPs and bytes of one amortized step, potential head (formulas in the module docstring)."""
    S, U, R, G, L, F, W, k = (
        num_samples,
        groups_in_step,
        rows,
        dim_global,
        dim_local,
        num_features,
        width,
        potential_rank,
    )
    net_row = 2 * (F * W + W * W) + 2 * (W + F) * (L * k + L) + 4 * F * L + 2 * L * L * k
    net = 3 * R * net_row + 3 * U * (L**3 / 3 + 4 * L * L * (1 + G))
    params = (
        F * W
        + W * W
        + 2 * W
        + (W + F + 1) * (L * k + L)
        + 2 * (F + 1) * L
        + L * L
        + L * G
        + L
        + G
        + G * (G + 1) // 2
    )
    flops = _likelihood_and_q_flops(S, U, R, G, L, d) + net + 12 * params
    return StepCost(float(flops), float(8 * R * (d + 2) + 7 * 8 * params))


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm (compile, page in)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_machine(k: int = 1024, stream_numbers: int = 2**24, repeats: int = 5) -> dict[str, float]:
    """Peak float64 matmul GFLOP/s and streaming bandwidth GB/s of this machine, numpy and XLA.

    Returns ``{"matmul_gflops", "bandwidth_gbs", and each backend's own figures}``; the peaks are
    the better backend's.  About 3 s on 2 cores.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((k, k)), rng.standard_normal((k, k))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    matmul = jax.jit(jnp.matmul)
    flops = 2.0 * k**3
    np_gflops = flops / _best_time(lambda: a @ b, repeats) / 1e9
    jax_gflops = flops / _best_time(lambda: matmul(ja, jb).block_until_ready(), repeats) / 1e9

    x, y = rng.standard_normal(stream_numbers), rng.standard_normal(stream_numbers)
    out = np.empty_like(x)
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    add = jax.jit(jnp.add)
    moved = 3.0 * 8 * stream_numbers  # read a and b, write c
    np_gbs = moved / _best_time(lambda: np.add(x, y, out=out), repeats) / 1e9
    jax_gbs = moved / _best_time(lambda: add(jx, jy).block_until_ready(), repeats) / 1e9
    return {
        "matmul_gflops": max(np_gflops, jax_gflops),
        "bandwidth_gbs": max(np_gbs, jax_gbs),
        "numpy_matmul_gflops": np_gflops,
        "xla_matmul_gflops": jax_gflops,
        "numpy_bandwidth_gbs": np_gbs,
        "xla_bandwidth_gbs": jax_gbs,
        "matmul_k": k,
        "stream_numbers": stream_numbers,
    }
