"""Torch twins of the VI families and of :func:`~hierbench.methods.base.make_vi`'s step, line by line.

Every function here mirrors the JAX function of the same name (in :mod:`hierbench.methods._gaussian`,
the family modules and :mod:`hierbench.methods.base`), and ``tests/test_torch_backend.py`` checks that
the same parameters and the same standard normals give the same draws, log q, ELBO estimate and
gradients on both backends (float64, 1e-6 relative).  Two deliberate differences:

- the standard normals are arguments (``eps``: a list of arrays in the order the JAX family draws them,
  see :attr:`TorchFamily.noise_shapes`), drawn outside the loss by the backend
  (:class:`~hierbench.methods.torch_backend.TorchRuntime`).  This keeps the loss a pure function of
  tensors, which ``torch.compile`` traces without graph breaks, and lets a test feed JAX's draws in;
- the family twins take the JAX method's *resolved* config (``Method.config``), so the JAX factory stays
  the one place that validates parameters and picks defaults (dense's ``stl``, amortized's ``width`` …).

The model densities are not twinned: ``log_prior_global``, ``log_local`` and ``log_joint_rows`` are
array-API code and run unchanged on torch tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import torch

from hierbench.datasets.base import HierModel, ParamError, log_joint_rows, row_layout
from hierbench.methods import _gaussian as g
from hierbench.methods import amortized as amortized_jax
from hierbench.methods.torch_backend import TorchRuntime, Tree, adam, tree_leaves, tree_map

Tensor = torch.Tensor
LOG_2PI = g.LOG_2PI

# --- twins of methods/_gaussian.py ------------------------------------------------------------------


def softplus(x: Tensor) -> Tensor:
    """``jax.nn.softplus`` = logaddexp(x, 0) (torch's ``F.softplus`` returns x above 20 instead)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def chol_from_raw(raw: Tensor) -> Tensor:
    """Lower-triangular factor with a softplus-positive diagonal; batched over leading axes."""
    return torch.tril(raw, -1) + torch.diag_embed(softplus(torch.diagonal(raw, dim1=-2, dim2=-1)))


def affine_draw(mean: Tensor, chol: Tensor, eps: Tensor) -> Tensor:
    """``mean + chol @ eps`` for eps ``(S, ..., D)``, chol ``(..., D, D)``."""
    return mean + torch.matmul(chol, eps[..., None])[..., 0]


def mvn_logpdf_chol(u: Tensor, chol: Tensor) -> Tensor:
    """log N(u | 0, chol cholᵀ) for residuals u ``(S, ..., D)`` and chol ``(..., D, D)`` -> ``(S, ...)``."""
    dim = u.shape[-1]
    rhs = torch.movedim(u, 0, -1)  # (..., D, S): one triangular solve for all draws
    r = torch.linalg.solve_triangular(chol, rhs, upper=False)
    quad = torch.movedim(torch.sum(r * r, dim=-2), -1, 0)
    log_det = torch.sum(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)), dim=-1)
    return -0.5 * quad - log_det - 0.5 * dim * LOG_2PI


def diag_normal_logpdf(u: Tensor, sd: Tensor) -> Tensor:
    """Σ_k log N(u_k | 0, sd_k²) over the last axis."""
    r = u / sd
    return torch.sum(-0.5 * r * r - torch.log(sd) - 0.5 * LOG_2PI, dim=-1)


def split_joint(v: Tensor, dim_global: int, num_groups: int, dim_local: int) -> tuple[Tensor, Tensor]:
    """A joint draw ``(S, G + N·L)`` -> θ ``(S, G)``, z ``(S, N, L)``."""
    return v[:, :dim_global], v[:, dim_global:].reshape(v.shape[0], num_groups, dim_local)


def join(theta: Tensor, z: Tensor) -> Tensor:
    """Inverse of :func:`split_joint`."""
    return torch.cat([theta, z.reshape(z.shape[0], -1)], dim=-1)


def global_draw(params: Tree, eps: Tensor) -> Tensor:
    """θ ``(S, G)`` from the dense q(θ), given standard normals ``(S, G)``."""
    return affine_draw(params["g_mean"], chol_from_raw(params["g_chol"]), eps)


def global_log_q(params: Tree, theta: Tensor) -> Tensor:
    """log q(θ) ``(S,)``."""
    return mvn_logpdf_chol(theta - params["g_mean"], chol_from_raw(params["g_chol"]))


def _conditional_mean(theta: Tensor, shift: Tensor, gain: Tensor) -> Tensor:
    return shift + torch.einsum("blg,sg->sbl", gain, theta)


def conditional_draw(eps: Tensor, theta: Tensor, shift: Tensor, gain: Tensor, chol: Tensor) -> Tensor:
    """z_i = shift_i + gain_i θ + chol_i ε for ε ``(S, B, L)``."""
    return affine_draw(_conditional_mean(theta, shift, gain), chol, eps)


def conditional_log_q(theta: Tensor, z: Tensor, shift: Tensor, gain: Tensor, chol: Tensor) -> Tensor:
    """Σ_i log N(z_i | shift_i + gain_i θ, chol_i chol_iᵀ) ``(S,)``."""
    return torch.sum(mvn_logpdf_chol(z - _conditional_mean(theta, shift, gain), chol), dim=-1)


def conditional_draw_prec(
    eps: Tensor, theta: Tensor, shift: Tensor, gain: Tensor, prec_chol: Tensor
) -> Tensor:
    """As :func:`conditional_draw` with a precision factor P (Λ_i = P Pᵀ, so z = mean + P⁻ᵀ ε)."""
    mean = _conditional_mean(theta, shift, gain)
    noise = torch.linalg.solve_triangular(prec_chol.mT, torch.movedim(eps, 0, -1), upper=True)  # (B, L, S)
    return mean + torch.movedim(noise, -1, 0)


def conditional_log_q_prec(
    theta: Tensor, z: Tensor, shift: Tensor, gain: Tensor, prec_chol: Tensor
) -> Tensor:
    """Σ_i log N(z_i | shift_i + gain_i θ, (P_i P_iᵀ)⁻¹) ``(S,)``."""
    r = torch.einsum("bji,sbj->sbi", prec_chol, z - _conditional_mean(theta, shift, gain))  # Pᵀ (z − mean)
    log_det = torch.sum(torch.log(torch.diagonal(prec_chol, dim1=-2, dim2=-1)), dim=-1)
    dim = z.shape[-1]
    return torch.sum(-0.5 * torch.sum(r * r, dim=-1) + log_det - 0.5 * dim * LOG_2PI, dim=-1)


# --- families ---------------------------------------------------------------------------------------


class TorchFamily(NamedTuple):
    """A variational family on torch: the twin of :class:`~hierbench.methods.base.Family`.

    ``noise_shapes(S, B)`` lists the shapes of the standard normals ``draw`` consumes for S draws over
    B groups, in the order the JAX family draws them.  ``draw(params, eps, idx, data_b) -> (θ, z)`` and
    ``log_q(params, θ, z, idx, data_b) -> (log q(θ), Σ_{i∈B} log q(z_i | θ))`` as in ``Family``.
    """

    noise_shapes: Callable[[int, int], list[tuple[int, ...]]]
    draw: Callable[..., tuple[Tensor, Tensor]]
    log_q: Callable[..., tuple[Tensor, Tensor]]
    factorizes_over_groups: bool


Builder = Callable[[HierModel, dict[str, Any], TorchRuntime], TorchFamily]


def _joint_family(model: HierModel, noise_shapes, draw_vec, log_q_vec) -> TorchFamily:
    """Twin of ``_gaussian.joint_family``: a Gaussian over the joint vector (θ, z_1..z_N)."""
    shape = (model.dim_global, model.num_groups, model.dim_local)

    def draw(params, eps, idx, data_b):
        return split_joint(draw_vec(params, eps), *shape)

    def log_q(params, theta, z, idx, data_b):
        return log_q_vec(params, join(theta, z)), torch.zeros((), dtype=theta.dtype, device=theta.device)

    return TorchFamily(noise_shapes, draw, log_q, factorizes_over_groups=False)


def meanfield(model: HierModel, config: dict[str, Any], runtime: TorchRuntime) -> TorchFamily:
    """Twin of :mod:`hierbench.methods.meanfield`."""
    dim = g.joint_dim(model)

    def draw_vec(params, eps):
        return params["mean"] + softplus(params["raw_sd"]) * eps[0]

    def log_q_vec(params, v):
        return diag_normal_logpdf(v - params["mean"], softplus(params["raw_sd"]))

    return _joint_family(model, lambda s, b: [(s, dim)], draw_vec, log_q_vec)


def dense(model: HierModel, config: dict[str, Any], runtime: TorchRuntime) -> TorchFamily:
    """Twin of :mod:`hierbench.methods.dense`."""
    dim = g.joint_dim(model)

    def draw_vec(params, eps):
        return affine_draw(params["mean"], chol_from_raw(params["chol"]), eps[0])

    def log_q_vec(params, v):
        return mvn_logpdf_chol(v - params["mean"], chol_from_raw(params["chol"]))

    return _joint_family(model, lambda s, b: [(s, dim)], draw_vec, log_q_vec)


def lowrank(model: HierModel, config: dict[str, Any], runtime: TorchRuntime) -> TorchFamily:
    """Twin of :mod:`hierbench.methods.lowrank` (Woodbury and the determinant lemma, nothing D×D)."""
    dim, rank = g.joint_dim(model), config["rank"]

    def draw_vec(params, eps):
        eps_d, eps_r = eps
        sd = softplus(params["raw_sd"])
        return params["mean"] + sd * eps_d + eps_r @ params["factor"].T

    def log_q_vec(params, v):
        u = v - params["mean"]
        sd = softplus(params["raw_sd"])
        f_scaled = params["factor"] / sd[:, None]  # diag(s⁻¹) F
        u_scaled = u / sd
        cap = torch.eye(rank, dtype=u.dtype, device=u.device) + f_scaled.T @ f_scaled  # I + Fᵀ D⁻¹ F
        cap_chol = torch.linalg.cholesky(cap)
        a = torch.linalg.solve_triangular(cap_chol, (u_scaled @ f_scaled).T, upper=False)
        quad = torch.sum(u_scaled**2, dim=-1) - torch.sum(a**2, dim=0)
        log_det = 2.0 * torch.sum(torch.log(sd)) + 2.0 * torch.sum(torch.log(torch.diagonal(cap_chol)))
        return -0.5 * (quad + log_det + dim * LOG_2PI)

    return _joint_family(model, lambda s, b: [(s, dim), (s, rank)], draw_vec, log_q_vec)


def _branch_noise(model: HierModel) -> Callable[[int, int], list[tuple[int, ...]]]:
    return lambda s, b: [(s, model.dim_global), (s, b, model.dim_local)]  # θ's, then the z_i's


def branch(model: HierModel, config: dict[str, Any], runtime: TorchRuntime) -> TorchFamily:
    """Twin of :mod:`hierbench.methods.branch`: q(z_i | θ) = N(μ_i + A_i (θ − m), L_i L_iᵀ)."""

    def local(params, idx):
        keys = ("l_shift", "l_gain", "l_chol")
        shift, gain, raw = (params[k] if idx is None else params[k][idx] for k in keys)
        return shift, gain, chol_from_raw(raw)

    def draw(params, eps, idx, data_b):
        theta = global_draw(params, eps[0])
        return theta, conditional_draw(eps[1], theta - params["g_mean"], *local(params, idx))

    def log_q(params, theta, z, idx, data_b):
        lq_local = conditional_log_q(theta - params["g_mean"], z, *local(params, idx))
        return global_log_q(params, theta), lq_local

    return TorchFamily(_branch_noise(model), draw, log_q, factorizes_over_groups=True)


def group_rows(data: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Twin of ``amortized.group_rows``: rows ``(B, n_max, F)`` (fields but the mask, sorted) and mask."""
    mask = data.get("mask")
    cols = []
    for key in sorted(k for k in data if k != "mask"):
        a = data[key]
        if mask is None:
            a = a[:, None]  # one row per group
        cols.append(a[..., None] if a.ndim == 2 else a)
    rows = torch.cat(cols, dim=-1)
    if mask is None:
        mask = torch.ones(rows.shape[:2], dtype=rows.dtype, device=rows.device)
    return rows, mask


def _mlp(layers: list[dict[str, Tensor]], h: Tensor, final_activation: bool = False) -> Tensor:
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1 or final_activation:
            h = torch.tanh(h)
    return h


def amortized(model: HierModel, config: dict[str, Any], runtime: TorchRuntime) -> TorchFamily:
    """Twin of :mod:`hierbench.methods.amortized`, both heads (``moments``, ``potential``)."""
    head, init_sd, k = config["head"], config["init_sd"], config["potential_rank"]
    condition_on_theta = config.get("condition_on_theta", True)
    dg, dl = model.dim_global, model.dim_local
    num_gain = dl * dg if condition_on_theta else 0

    # The feature standardization constants, computed by the JAX module's own code path.
    rows_np, mask_np = (
        np.asarray(a) for a in amortized_jax.group_rows({k_: jnp.asarray(v) for k_, v in model.data.items()})
    )
    w = mask_np[..., None]
    center_np = (rows_np * w).sum((0, 1)) / w.sum()
    spread_np = np.sqrt(((rows_np - center_np) ** 2 * w).sum((0, 1)) / w.sum()) + 1e-8
    center, spread = runtime.tensor(center_np), runtime.tensor(spread_np)
    raw_init = runtime.tensor(np.asarray(g.raw_chol_init((dl, dl), init_sd)))
    del rows_np, mask_np, w

    def features(data_b):
        rows, mask = group_rows(data_b)
        return (rows - center.to(rows.dtype)) / spread.to(rows.dtype), mask

    def moments(params, data_b):
        feats, mask = features(data_b)
        hidden = _mlp(params["phi"], feats, final_activation=True)  # (B, n, H)
        count = torch.sum(mask, dim=-1, keepdim=True)
        pooled = torch.sum(hidden * mask[..., None], dim=-2) / torch.clamp_min(count, 1.0)
        out = _mlp(params["rho"], torch.cat([pooled, torch.log(count)], dim=-1))
        shift = out[..., :dl]
        if condition_on_theta:
            gain = out[..., dl : dl + num_gain].reshape(-1, dl, dg)
        else:
            gain = torch.zeros((*shift.shape[:-1], dl, dg), dtype=shift.dtype, device=shift.device)
        raw = out[..., dl + num_gain :].reshape(-1, dl, dl) + raw_init.to(out.dtype)
        return shift, gain, chol_from_raw(raw)

    def potential(params, data_b):
        pot = params["pot"]
        feats, mask = features(data_b)
        hidden = torch.cat([_mlp(params["phi"], feats, final_activation=True), feats], dim=-1)
        r = (hidden @ pot["r"]["w"] + pot["r"]["b"]).reshape(*mask.shape, dl, k) * mask[..., None, None]
        h = hidden @ pot["h"]["w"] + pot["h"]["b"]
        h = h + (feats @ pot["u"]["w"] + pot["u"]["b"]) * (feats @ pot["v"]["w"] + pot["v"]["b"])
        prior_chol = chol_from_raw(pot["prior_chol"])
        prior_prec = prior_chol @ prior_chol.T
        prec = torch.einsum("bnik,bnjk->bij", r, r) + prior_prec  # (B, L, L)
        prec_chol = torch.linalg.cholesky(prec)
        rhs_shift = torch.sum(h * mask[..., None], dim=-2) + prior_prec @ pot["prior_shift"]  # (B, L)
        if not condition_on_theta:  # A_i = Λ_i⁻¹ Λ₀ W = 0
            sol = torch.cholesky_solve(rhs_shift[..., None], prec_chol, upper=False)
            gain = torch.zeros((prec.shape[0], dl, dg), dtype=sol.dtype, device=sol.device)
            return sol[..., 0], gain, prec_chol
        rhs_gain = (prior_prec @ pot["prior_gain"]).expand(prec.shape[0], dl, dg)
        rhs = torch.cat([rhs_shift[..., None], rhs_gain], dim=-1)  # (B, L, 1 + G)
        sol = torch.cholesky_solve(rhs, prec_chol, upper=False)
        return sol[..., 0], sol[..., 1:], prec_chol

    if head == "moments":
        local, cond_draw, cond_log_q = moments, conditional_draw, conditional_log_q
    else:
        local, cond_draw, cond_log_q = potential, conditional_draw_prec, conditional_log_q_prec

    def draw(params, eps, idx, data_b):
        theta = global_draw(params, eps[0])
        return theta, cond_draw(eps[1], theta - params["g_mean"], *local(params, data_b))

    def log_q(params, theta, z, idx, data_b):
        lq_local = cond_log_q(theta - params["g_mean"], z, *local(params, data_b))
        return global_log_q(params, theta), lq_local

    return TorchFamily(_branch_noise(model), draw, log_q, factorizes_over_groups=True)


TORCH_FAMILIES: dict[str, Builder] = {
    "meanfield": meanfield,
    "dense": dense,
    "lowrank": lowrank,
    "branch": branch,
    "amortized": amortized,
}


# --- the training step: twin of make_vi -------------------------------------------------------------


class Noise(NamedTuple):
    """One step's randomness.  Per stratum (a single one unless minibatches are stratified by group
    size): the groups drawn (``None`` = all; for strata, positions within the size bucket) and the
    standard normals of :attr:`TorchFamily.noise_shapes`."""

    idx: list[Tensor | None]
    eps: list[list[Tensor]]


@dataclasses.dataclass
class TorchState:
    """Parameters (a tree of leaf tensors), their Adam optimizer and schedule, and the step count."""

    params: Tree
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    step: int = 0


class TorchVI:
    """The twin of :func:`~hierbench.methods.base.make_vi` for one model and family.

    Parameters
    ----------
    model : HierModel
        The model; its data is moved to the runtime's device and dtype once.
    family : TorchFamily
        The variational family.
    config : dict
        The JAX method's resolved config (``Method.config``): steps, lr, schedule, num_samples, stl,
        batch_groups (already clipped to N), row_layout.
    runtime : TorchRuntime
        Device, dtype, threads, compilation.
    """

    def __init__(self, model: HierModel, family: TorchFamily, config: dict[str, Any], runtime: TorchRuntime):
        self.model, self.family, self.runtime, self.config = model, family, runtime, config
        self.num_samples, self.stl = config["num_samples"], config["stl"]
        num_groups = model.num_groups
        batch_groups = config.get("batch_groups")
        self.subsample = batch_groups is not None and batch_groups < num_groups
        self.batch_groups = batch_groups if self.subsample else num_groups
        self.scale = num_groups / batch_groups if self.subsample else 1.0
        # As the harness does for JAX: every data field in the training dtype; the size buckets' floats too.
        self.data = {k: runtime.tensor(v, floating=True) for k, v in model.data.items()}
        layout = row_layout(model)
        self.use_rows = layout is not None
        self.rows = None
        if self.use_rows:
            self.rows = [
                {
                    "index": runtime.tensor(b["index"]),
                    "data": {k: runtime.tensor(v) for k, v in b["data"].items()},
                }
                for b in layout
            ]
        self.stratified = self.subsample and self.use_rows
        if self.stratified:
            sizes = [len(b["index"]) for b in layout]
            self.alloc = [min(n, max(1, round(batch_groups * n / num_groups))) for n in sizes]
            self.strata_scale = [n / a for n, a in zip(sizes, self.alloc, strict=True)]
        self.loss_fn = runtime.maybe_compile(self.neg_elbo)

    def init(self, params: Tree) -> TorchState:
        """A fresh state from initial parameters (numpy or JAX arrays, e.g. the JAX method's init)."""
        leaves = self.runtime.parameters(params)
        opt, sched = adam(
            tree_leaves(leaves), self.config["lr"], self.config["steps"], self.config["schedule"]
        )
        return TorchState(leaves, opt, sched)

    def draw_noise(self, gen: torch.Generator) -> Noise:
        """One step's minibatch and standard normals from ``gen``."""
        rt, shapes = self.runtime, self.family.noise_shapes
        if self.stratified:
            idx = [rt.choice(gen, len(b["index"]), a) for b, a in zip(self.rows, self.alloc, strict=True)]
            eps = [[rt.normal(gen, s) for s in shapes(self.num_samples, a)] for a in self.alloc]
            return Noise(idx, eps)
        batch = rt.choice(gen, self.model.num_groups, self.batch_groups) if self.subsample else None
        return Noise([batch], [[rt.normal(gen, s) for s in shapes(self.num_samples, self.batch_groups)]])

    def neg_elbo(self, params: Tree, noise: Noise) -> Tensor:
        """The minibatch Monte Carlo estimate of −ELBO that a step differentiates (make_vi's loss)."""
        model, family = self.model, self.family
        q_params = tree_map(torch.Tensor.detach, params) if self.stl else params
        if self.stratified:
            # As in make_vi: every stratum draws its own θ; the global term uses the first stratum's.
            elbo = 0.0
            for s, bucket in enumerate(self.rows):
                pick = noise.idx[s]
                idx, data_b = bucket["index"][pick], {k: v[pick] for k, v in bucket["data"].items()}
                theta, z = family.draw(params, noise.eps[s], idx, data_b)
                lq_global, lq_local = family.log_q(q_params, theta, z, idx, data_b)
                local = torch.sum(model.log_local(theta[:, None, :], z, data_b), dim=-1)
                elbo = elbo + self.strata_scale[s] * (local - lq_local)
                if s == 0:
                    elbo = elbo + model.log_prior_global(theta) - lq_global
            return -torch.mean(elbo)
        idx = noise.idx[0]
        data_b = self.data if idx is None else {k: v[idx] for k, v in self.data.items()}
        theta, z = family.draw(params, noise.eps[0], idx, data_b)
        lq_global, lq_local = family.log_q(q_params, theta, z, idx, data_b)
        if self.use_rows and idx is None:  # full data on the size buckets
            return -torch.mean(log_joint_rows(model, theta, z, self.rows) - lq_global - lq_local)
        local = torch.sum(model.log_local(theta[:, None, :], z, data_b), dim=-1)
        elbo = model.log_prior_global(theta) - lq_global + self.scale * (local - lq_local)
        return -torch.mean(elbo)

    def step(self, state: TorchState, noise: Noise) -> Tensor:
        """One Adam step on ``noise``'s −ELBO estimate; updates ``state`` in place, returns the loss."""
        state.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(state.params, noise)
        loss.backward()
        state.opt.step()
        state.sched.step()
        state.step += 1
        return loss.detach()


def make_torch_vi(method: str, model: HierModel, config: dict[str, Any], runtime: TorchRuntime) -> TorchVI:
    """The torch twin of the VI method ``method`` built with the resolved ``config`` of its JAX factory.

    Raises
    ------
    ParamError
        If ``method`` has no torch twin (e.g. the MCMC samplers).
    """
    if method not in TORCH_FAMILIES:
        raise ParamError(f"backend torch runs the VI methods {', '.join(TORCH_FAMILIES)}; not {method!r}")
    return TorchVI(model, TORCH_FAMILIES[method](model, config, runtime), config, runtime)
