"""Amortized branch VI (Agrawal & Domke 2021): q(θ) ∏_i N(z_i | μ_i + A_i θ, Σ_i) with
(μ_i, A_i, Σ_i) = net_u(x_i, y_i), a permutation-invariant net over a group's observations.

Two heads over the same per-observation MLP φ on a row's features f_ij (standardized (x_ij, y_ij)):

``head="moments"`` (the paper's net: pool, then an MLP ρ)
    The group's pooled moments: the mean of φ(f_ij), the second-moment matrix of the augmented row
    f̄_ij = (f_ij, 1), S_i = Σ_j f̄_ij f̄_ijᵀ (``second_moments``), and log n_i.  An MLP ρ maps
    [mean_j φ(f_ij), vech(S_i)/n_i, log n_i] to q(z_i | θ)'s parameters.  With ``output="precision"``
    (default) they are natural parameters, and the pooled S_i is also read out (bi)linearly::

        Λ_i = L_i L_iᵀ + W S_i Wᵀ,   η_i = η_ρ + (u_kᵀ S_i v_k)_k,   G_i = I + G_ρ,
        q(z_i | θ) = N(Λ_i⁻¹ (η_i + G_i θ), Λ_i⁻¹),   (η_ρ, G_ρ, L_i) = ρ(pooled_i).

    With ``output="covariance"`` (the paper's parameterization) ρ outputs (μ_i, A_i, L_i) directly,
    Σ_i = L_i L_iᵀ, the conditional centred at q(θ)'s mean.  ``rho_lr`` scales the learning rate of
    ρ's weights (by a fixed scale on the parameters, so every backend's Adam sees it).

    Why (measured in ``results/moments/README.md``, hier-linear d = 10, 10,000 steps): on the
    conjugate hierarchy the exact conditional is N(P_i⁻¹(θ + X_iᵀy_i), P_i⁻¹) with P_i = I + X_iᵀX_i,
    a 10×10 inverse of group statistics that an MLP on pooled means of φ does not learn: the paper's
    parameterization (``output="covariance", second_moments=False, rho_lr=1.0``) stays at KL/N 6–40
    at N ∈ {10³, 10⁴}, n ∈ {20, 100}, its local means off by 0.9–2.3 posterior sd (mean over
    groups).  In the natural parameterization the exact conditional is (bi)linear in S_i:
    W = [diag(sd_x), 0, mean_x], u_k, v_k picking x_k and y, L_i = I, G_ρ = 0 (tested in
    tests/test_methods.py); with it the default reaches KL/N 0.0004–0.0012 on the same cells,
    within 3× of the potential head's (better than it at n = 100).
``head="potential"`` (a structured-VAE-style recognition potential)
    each row emits a Gaussian potential on z_i — a rank-k precision factor r_ij (linear in the row
    plus φ) and a shift h_ij (φ plus a bilinear term) — summed over rows and combined in closed form
    with a learned Gaussian prior term N(z_i | W θ + c, Λ₀⁻¹)::

        Λ_i = Σ_j r_ij r_ijᵀ + Λ₀,   μ_i + A_i θ = Λ_i⁻¹ (Σ_j h_ij + Λ₀ (W θ + c)),   Σ_i = Λ_i⁻¹.

    On the conjugate hierarchy r_ij = x_ij, h_ij = x_ij y_ij, Λ₀ = I, W = I is the exact posterior,
    so this head can reach KL 0 for any N; sums make it exactly permutation-invariant and size-aware.

The heads differ in where the nonlinearity sits: the potential head sums per-row potentials (linear
pooling into natural parameters), the moments head pools moments and maps them through ρ.

Both train q(θ) and the net on minibatches of ``batch_groups`` groups scaled by N/B.

**q(θ)'s factor** is branch's row scale × unit lower-triangular (``factor="scaled"``, the default;
:mod:`hierbench.methods.branch` has why), not the softplus-diagonal Cholesky (``factor="cholesky"``,
kept to reproduce this).  Measured at full MovieLens-25M scale (``make scale``: 162,541 users, the
moments head, lr 1e-2, seed 0): with the Cholesky, q(θ)'s diagonal shrank to 0.007-0.03 as it should
with that many users, while Adam's lr-sized steps walked its off-diagonal entries up to 0.66, up to 74×
their rows' diagonal: a condition number of 3·10¹⁸ at step 1,674, where log q(θ) on q's own draws was
−10⁸ to −10⁹ and the training −ELBO went to −3.5·10⁸ (recorded ``diverged``: q's density broken down).
The scaled factor moves an off-diagonal entry by lr relative to its row's scale.

``condition_on_theta=False`` drops the dependence of q(z_i | θ) on θ (A_i = 0, so q(θ, z) =
q(θ) ∏_i q(z_i)): the moments head outputs no gain, and the potential head's prior term keeps
W fixed at zero (not a trainable parameter).  Comparing the two as N grows shows how much the
conditioning on θ is worth once q(θ) concentrates.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import numpy as np

from hierbench.datasets.base import Array, HierModel, ParamError, check_positive_int
from hierbench.methods import _gaussian as g
from hierbench.methods._ops import cho_solve, device, einsum, namespace
from hierbench.methods.base import Family, Method, TrainConfig, check_choice, train_config
from hierbench.methods.vi import make_vi


def group_rows(data: dict[str, Array]) -> tuple[Array, Array]:
    """A group's observation rows ``(B, n_max, F)`` (every data field but the mask, concatenated)
    and the row mask ``(B, n_max)``; a field without a row axis counts as one row."""
    mask = data.get("mask")
    cols = []
    for key in sorted(k for k in data if k != "mask"):
        a = data[key]
        if mask is None:
            a = a[:, None]  # one row per group
        cols.append(a[..., None] if a.ndim == 2 else a)
    xp = namespace(*cols)
    rows = xp.concat(cols, axis=-1)
    if mask is None:
        mask = xp.ones(rows.shape[:2], dtype=rows.dtype, device=device(rows))
    return rows, mask


def _dense_init(key, n_in: int, n_out: int, scale: float = 1.0):
    w = jax.random.normal(key, (n_in, n_out)) * scale * math.sqrt(2.0 / (n_in + n_out))
    return {"w": w, "b": np.zeros(n_out)}


def _mlp_init(key, sizes: list[int], last_scale: float = 1.0):
    keys = jax.random.split(key, len(sizes) - 1)
    n = len(sizes) - 1
    return [
        _dense_init(k, a, b, last_scale if i == n - 1 else 1.0)
        for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
    ]


def _mlp(layers, h, final_activation: bool = False, scale: float = 1.0):
    """The MLP of ``layers`` on ``h`` (tanh between layers); its weights and biases used times
    ``scale`` (stored divided by it, which scales their Adam learning rate by ``scale``)."""
    xp = namespace(h)
    for i, layer in enumerate(layers):
        h = h @ (layer["w"] * scale) + layer["b"] * scale if scale != 1.0 else h @ layer["w"] + layer["b"]
        if i < len(layers) - 1 or final_activation:
            h = xp.tanh(h)
    return h


DEFAULT_BATCH_GROUPS = 32  # the paper's minibatch of groups


AMORTIZED_STEPS = 30_000
"""The amortized method's default step count, both heads (the other families': 10,000).  Measured on
hier-linear (n = 20, d = 10, 32 groups a step), neither head lands at 10,000 on small data: the potential
head at N = 100 ends at KL/N 0.066-0.12 over seeds 0-4, the moments head at N = 10 at 0.31 on seed 0;
at 30,000 the potential head reaches 2.4e-5 and 1.4e-4 (N = 100, seeds 0 and 2) and the moments head
≤ 4.9e-5 (N = 10, seeds 0-4) and ≤ 3.0e-4 (N = 100, seeds 0 and 2) (``results/defaults/README.md``)."""

MOMENTS_DEFAULTS = {"output": "precision", "second_moments": True, "rho_lr": 0.03}
"""The moments head's defaults; ``output="covariance", second_moments=False, rho_lr=1.0`` is the
paper's net as it was before (see ``results/moments/README.md`` for both, measured)."""


def make(
    model: HierModel,
    *,
    batch_groups: int | None = None,
    max_strata: int | None = None,
    head: str = "moments",
    width: int = 64,
    depth: int = 1,
    potential_rank: int = 1,
    init_sd: float = 0.1,
    condition_on_theta: bool = True,
    output: str = MOMENTS_DEFAULTS["output"],
    second_moments: bool = MOMENTS_DEFAULTS["second_moments"],
    rho_lr: float = MOMENTS_DEFAULTS["rho_lr"],
    factor: str = "scaled",
    **train,
) -> Method:
    """Dense q(θ) + a permutation-invariant net per group (head moments|potential); minibatches of groups.

    ``batch_groups``: groups a step (None: :data:`DEFAULT_BATCH_GROUPS`, or all N where there are
    fewer; an explicit B above N is refused).  ``max_strata``: size strata of a minibatch on ragged
    groups or a rating store (None: the batch source's default,
    :func:`~hierbench.methods.batches.default_batches`).  The net's parameters (``head``, ``width``,
    ``depth``, ``potential_rank``, ``init_sd``, ``condition_on_theta``, and the moments head's ``output``,
    ``second_moments`` and ``rho_lr``), q(θ)'s ``factor`` and ``**train`` are documented at :func:`build`."""
    if batch_groups is None:
        batch_groups = min(DEFAULT_BATCH_GROUPS, model.num_groups)
    family, cfg, config = build(
        model,
        head=head,
        width=width,
        depth=depth,
        potential_rank=potential_rank,
        init_sd=init_sd,
        condition_on_theta=condition_on_theta,
        output=output,
        second_moments=second_moments,
        rho_lr=rho_lr,
        factor=factor,
        **train,
    )
    return make_vi(model, family, cfg, batch_groups=batch_groups, max_strata=max_strata, **config)


# `hierbench list` prints a factory's note: the one default its params line cannot show
make.note = lambda: f"steps defaults to {AMORTIZED_STEPS:,} (both heads)"


def row_feature_stats(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (+1e-8) of the net's row features over all observed rows.

    The rows are :func:`group_rows` of ``data`` (every field but the mask), weighted by the mask.
    Returns ``(center, spread)``, each ``(F,)``: the constants :func:`build` standardizes rows with.
    """
    rows_np, mask_np = (np.asarray(a) for a in group_rows({k: np.asarray(v) for k, v in data.items()}))
    w = mask_np[..., None]
    center = (rows_np * w).sum((0, 1)) / w.sum()
    spread = np.sqrt(((rows_np - center) ** 2 * w).sum((0, 1)) / w.sum()) + 1e-8
    return center, spread


def build(
    model: HierModel,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    head: str = "moments",
    width: int = 64,
    depth: int = 1,
    potential_rank: int = 1,
    init_sd: float = 0.1,
    condition_on_theta: bool = True,
    output: str = MOMENTS_DEFAULTS["output"],
    second_moments: bool = MOMENTS_DEFAULTS["second_moments"],
    rho_lr: float = MOMENTS_DEFAULTS["rho_lr"],
    factor: str = "scaled",
    **train: Any,
) -> tuple[Family, TrainConfig, dict[str, Any]]:
    """:func:`make`'s family, training configuration and recorded settings, without the VI loop.

    Parameters
    ----------
    model : HierModel
        Gives the dimensions and, unless ``feature_stats`` is given, the rows whose statistics
        standardize the net's input: its padded ``data``, or its rating store where it keeps its
        ratings compressed (``model.store.feature_stats()``, the same statistics without padding).
    feature_stats : (center, spread), optional
        Row-feature mean and sd ``(F,)`` (as :func:`row_feature_stats` computes them).  The scale
        runner (:mod:`hierbench.scale`) passes those of a rating store that is never padded, with a
        small schema ``model``.
    head : {"moments", "potential"}
        The net's head (module docstring).
    width : int
        Hidden units of every layer of φ and ρ (and φ's output features).
    depth : int
        Hidden layers of ρ; φ has ``depth + 1`` layers (the default 1: φ two layers, ρ one hidden).
    potential_rank : int
        Rank of each row's precision factor (potential head).
    init_sd : float
        Initial scale of q(θ) and of the moments head's covariance output.
    condition_on_theta : bool
        Let q(z_i | θ) depend on θ (module docstring).
    output : {"precision", "covariance"}
        Moments head: natural parameters (Λ_i, η_i, G_i) with Λ_i's Cholesky factor from ρ, plus the
        readouts of S_i when ``second_moments``; or the paper's (μ_i, A_i, chol Σ_i) from ρ alone.
    second_moments : bool
        Moments head: pool S_i = Σ_j f̄_ij f̄_ijᵀ as well as the mean of φ.
    rho_lr : float
        Moments head: multiplier of the learning rate of ρ's weights (> 0).  Small values let the
        readouts of S_i carry what they can represent exactly, and ρ the rest, without ρ's noise.
    factor : {"scaled", "cholesky"}
        How q(θ)'s factor is parameterized (:data:`~hierbench.methods._gaussian.FACTORS`; module
        docstring): row scale × unit lower-triangular, or the softplus-diagonal Cholesky.
    **train
        :class:`~hierbench.methods.base.TrainConfig` fields; ``steps`` defaults to
        :data:`AMORTIZED_STEPS`.

    Returns
    -------
    (Family, TrainConfig, dict)
        The family, the shared training hyperparameters and the amortized settings that
        :func:`make` passes to :func:`~hierbench.methods.base.make_vi` to be recorded.
    """
    check_choice("head", head, ("moments", "potential"))
    cfg = train_config(train, steps=AMORTIZED_STEPS)
    if not isinstance(condition_on_theta, bool):
        raise ParamError(f"condition_on_theta must be true or false, got {condition_on_theta!r}")
    width = check_positive_int("width", width)
    depth = check_positive_int("depth", depth)
    k = check_positive_int("potential_rank", potential_rank)
    check_choice("output", output, ("precision", "covariance"))
    check_choice("factor", factor, tuple(g.FACTORS))
    global_draw = functools.partial(g.global_draw, to_chol=g.FACTORS[factor])
    global_log_q = functools.partial(g.global_log_q, to_chol=g.FACTORS[factor])
    if not isinstance(second_moments, bool):
        raise ParamError(f"second_moments must be true or false, got {second_moments!r}")
    if isinstance(rho_lr, bool) or not isinstance(rho_lr, (int, float)) or not 0 < rho_lr < math.inf:
        raise ParamError(f"rho_lr must be a positive number, got {rho_lr!r}")
    rho_lr = float(rho_lr)
    dg, dl = model.dim_global, model.dim_local
    num_gain = dl * dg if condition_on_theta else 0  # A_i's entries in the moments head's output

    # Standardize row features with full-data statistics (constants, not parameters).
    if feature_stats is None and model.store is not None:
        feature_stats = model.store.feature_stats()
    elif feature_stats is None:
        feature_stats = row_feature_stats(model.data)
    center, spread = (np.asarray(a, np.float64) for a in feature_stats)
    num_feat = center.shape[-1]
    raw_init = g.raw_chol_init((dl, dl), init_sd)
    prec_raw_init = g.raw_chol_init((dl, dl), 1.0)
    # The moments head's pooled second moments: the upper triangle of S_i / n_i, less the constant 1.
    num_aug = num_feat + 1
    vech = np.array([a * num_aug + c for a in range(num_aug) for c in range(a, num_aug) if a < num_feat])
    num_moments = len(vech) if second_moments else 0
    readout = head == "moments" and output == "precision" and second_moments

    def constant(a: np.ndarray, like: Array) -> Array:
        return namespace(like).asarray(a, dtype=like.dtype, device=device(like))

    def features(data_b):
        rows, mask = group_rows(data_b)
        return (rows - constant(center, rows)) / constant(spread, rows), mask

    def init_params(key):
        k1, k2, k3 = jax.random.split(key, 3)
        params = g.global_init(dg, init_sd) | {"phi": _mlp_init(k1, [num_feat] + [width] * (depth + 1))}
        if head == "moments":
            out = dl + num_gain + dl * dl
            rho = _mlp_init(k2, [width + num_moments + 1] + [width] * depth + [out], last_scale=0.01)
            params["rho"] = jax.tree.map(lambda a: a / rho_lr, rho)
            if readout:  # Λ's W, η's u and v: random, as a zero start is a stationary point of W S Wᵀ
                keys = jax.random.split(k3, 3)
                scale = (0.1 / math.sqrt(num_aug), 0.01, 0.01)
                params["read"] = {
                    name: jax.random.normal(key, (dl, num_aug)) * sd
                    for name, key, sd in zip(("prec", "u", "v"), keys, scale, strict=True)
                }
        else:
            params["pot"] = {
                "r": _dense_init(k2, width + num_feat, dl * k, 0.01),
                "h": _dense_init(k3, width + num_feat, dl, 0.01),
                "u": _dense_init(jax.random.fold_in(k3, 1), num_feat, dl, 0.01),
                "v": _dense_init(jax.random.fold_in(k3, 2), num_feat, dl, 0.01),
                "prior_chol": g.raw_chol_init((dl, dl), 1.0),
                "prior_gain": np.eye(dl, dg),
                "prior_shift": np.zeros(dl),
            }
            if not condition_on_theta:
                del params["pot"]["prior_gain"]  # W = 0, fixed
        return params

    def moments(params, data_b):
        feats, mask = features(data_b)
        xp = namespace(feats)
        hidden = _mlp(params["phi"], feats, final_activation=True)  # (B, n, H)
        count = xp.sum(mask, axis=-1, keepdims=True)
        per_row = xp.maximum(count, xp.ones_like(count))
        pooled = [xp.sum(hidden * mask[..., None], axis=-2) / per_row]
        if second_moments:
            aug = xp.concat([feats, xp.ones_like(feats[..., :1])], axis=-1) * mask[..., None]  # f̄ (B, n, F+1)
            second = einsum("bna,bnc->bac", aug, aug)  # S_i (B, F+1, F+1)
            flat = xp.reshape(second, (second.shape[0], num_aug * num_aug))
            pooled.append(xp.take(flat, xp.asarray(vech, device=device(flat)), axis=-1) / per_row)
        out = _mlp(params["rho"], xp.concat([*pooled, xp.log(count)], axis=-1), scale=rho_lr)
        shift = out[..., :dl]
        if condition_on_theta:
            gain = xp.reshape(out[..., dl : dl + num_gain], (-1, dl, dg))
        else:
            gain = xp.zeros((*shift.shape[:-1], dl, dg), dtype=shift.dtype, device=device(shift))
        raw = xp.reshape(out[..., dl + num_gain :], (-1, dl, dl))
        if output == "covariance":
            return shift, gain, g.chol_from_raw(raw + constant(raw_init, out))
        # Natural parameters: Λ_i = L Lᵀ (+ W S_i Wᵀ), mean Λ_i⁻¹(η_i + G_i θ) for θ itself (not
        # centred), so that the exact conditional does not move with q(θ)'s mean.
        prec_chol = g.chol_from_raw(raw + constant(prec_raw_init, out))
        eta = shift
        if readout:
            read = params["read"]
            prec = einsum("bki,bli->bkl", prec_chol, prec_chol)
            prec = prec + einsum("ka,bac,lc->bkl", read["prec"], second, read["prec"])
            prec_chol = xp.linalg.cholesky(prec)
            eta = eta + einsum("ka,bac,kc->bk", read["u"], second, read["v"])
        if not condition_on_theta:
            return cho_solve(prec_chol, eta[..., None])[..., 0], gain, prec_chol
        gain = gain + constant(np.eye(dl, dg), out)
        rhs = xp.concat([(eta + einsum("blg,g->bl", gain, params["g_mean"]))[..., None], gain], axis=-1)
        sol = cho_solve(prec_chol, rhs)  # (B, L, 1 + G): Λ⁻¹(η + G m), Λ⁻¹G
        return sol[..., 0], sol[..., 1:], prec_chol

    def potential(params, data_b):
        pot = params["pot"]
        feats, mask = features(data_b)
        xp = namespace(feats)
        hidden = xp.concat([_mlp(params["phi"], feats, final_activation=True), feats], axis=-1)
        r = xp.reshape(hidden @ pot["r"]["w"] + pot["r"]["b"], (*mask.shape, dl, k)) * mask[..., None, None]
        h = hidden @ pot["h"]["w"] + pot["h"]["b"]
        h = h + (feats @ pot["u"]["w"] + pot["u"]["b"]) * (feats @ pot["v"]["w"] + pot["v"]["b"])
        prior_chol = g.chol_from_raw(pot["prior_chol"])
        prior_prec = prior_chol @ prior_chol.T
        prec = einsum("bnik,bnjk->bij", r, r) + prior_prec  # (B, L, L)
        prec_chol = xp.linalg.cholesky(prec)
        rhs_shift = xp.sum(h * mask[..., None], axis=-2) + prior_prec @ pot["prior_shift"]  # (B, L)
        if not condition_on_theta:  # A_i = Λ_i⁻¹ Λ₀ W = 0
            sol = cho_solve(prec_chol, rhs_shift[..., None])
            return (
                sol[..., 0],
                xp.zeros((prec.shape[0], dl, dg), dtype=sol.dtype, device=device(sol)),
                prec_chol,
            )
        rhs_gain = xp.broadcast_to(prior_prec @ pot["prior_gain"], (prec.shape[0], dl, dg))
        rhs = xp.concat([rhs_shift[..., None], rhs_gain], axis=-1)  # (B, L, 1 + G)
        sol = cho_solve(prec_chol, rhs)
        return sol[..., 0], sol[..., 1:], prec_chol

    if head == "moments" and output == "covariance":
        local, cond_draw, cond_log_q = moments, g.conditional_draw, g.conditional_log_q
    elif head == "moments":
        local, cond_draw, cond_log_q = moments, g.conditional_draw_prec, g.conditional_log_q_prec
    else:
        local, cond_draw, cond_log_q = potential, g.conditional_draw_prec, g.conditional_log_q_prec

    # Centred at q(θ)'s mean, as in `branch` (same family, better conditioned).
    def draw_local(params, eps, theta, idx, data_b):
        return cond_draw(eps, theta - params["g_mean"], *local(params, data_b))

    def draw(params, eps, idx, data_b):
        theta = global_draw(params, eps[0])
        return theta, draw_local(params, eps[1], theta, idx, data_b)

    def log_q(params, theta, z, idx, data_b):
        lq_local = cond_log_q(theta - params["g_mean"], z, *local(params, data_b))
        return global_log_q(params, theta), lq_local

    family = Family(
        init_params,
        g.branch_noise_shapes(dg, dl),
        draw,
        log_q,
        factorizes_over_groups=True,
        draw_global=global_draw,
        draw_local=draw_local,
    )
    config = {
        "head": head,
        "width": width,
        "depth": depth,
        "potential_rank": potential_rank,
        "init_sd": init_sd,
        "condition_on_theta": condition_on_theta,
        "factor": factor,
    }
    if head == "moments":
        config |= {"output": output, "second_moments": second_moments, "rho_lr": rho_lr}
    return family, cfg, config
