"""The hierarchical-model contract every dataset satisfies.

A *branch* model has global parameters θ ∈ R^G, one local block z_i ∈ R^L per group
i = 1..N, and per-group observations::

    p(θ, z, y | x) = p(θ) ∏_i p(z_i | θ) ∏_j p(y_ij | θ, z_i, x_ij)

Everything is in unconstrained space (log-Jacobians of transforms are included in the
densities).  Densities are written once against the array API (``array_api_compat``), so
numpy, JAX and torch evaluate the same function.  They broadcast over leading axes:

* ``log_prior_global(θ)``: θ of shape ``(..., G)`` -> ``(...)``.
* ``log_local(θ, z, data)``: θ ``(..., G)``, z ``(..., L)``, and ``data`` a dict of arrays whose
  leading axes broadcast against ``(...)`` (one group's rows: e.g. ``x`` ``(..., n_max, d)``,
  ``y`` ``(..., n_max)``, ``mask`` ``(..., n_max)``) -> ``(...)``, i.e.
  ``log p(z_i | θ) + Σ_j mask_ij · log p(y_ij | θ, z_i, x_ij)``.

Ragged groups are stored padded to ``n_max`` with a 0/1 ``mask``; padding is O(total
observations) for the Poisson-sized groups we generate.  The joint is
``log_prior_global(θ) + Σ_i log_local(θ, z_i, data_i)``; a minibatch B of groups is scaled by
N/|B| (see :func:`log_joint`).

Where padding would not fit (MovieLens-25M: 162,541 users padded to 14,638 ratings is 0.42 TB), a
model may keep its rows **compressed** instead: ``store`` holds them (a
:class:`~hierbench.datasets.movielens_synth.RatingStore`: CSR offsets, per-row movie index and label,
the movie × feature table), never padded, and ``data`` (and ``test_data``) are empty.  Only a batch
source that gathers rows from the store (:mod:`hierbench.methods.store_batches`) and a scorer that
reads it (:mod:`hierbench.scoring_store`) serve such a model; a full-data family, or a sampler, is
recorded ``infeasible`` with the padded memory it would need.  The densities are the same: a gathered
minibatch is laid out like ``data`` (``x``, ``y``, ``mask`` padded to the batch's widest group).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

Array = Any  # an array-API array: numpy, jax or torch

LOG_2PI = math.log(2.0 * math.pi)


class ParamError(ValueError):
    """A dataset or method parameter the user can fix (bad name or value)."""


class ExactGaussianPosterior(NamedTuple):
    """Exact posterior of a conjugate Gaussian hierarchy, in O(N·L²) memory.

    θ | y ~ N(global_mean, global_cov);  z_i | θ, y ~ N(local_shift_i + local_gain_i θ, local_cov_i).
    """

    global_mean: np.ndarray  # (G,)
    global_cov: np.ndarray  # (G, G)
    local_shift: np.ndarray  # (N, L)
    local_gain: np.ndarray  # (N, L, G)
    local_cov: np.ndarray  # (N, L, L)
    log_evidence: float

    def local_marginals(self) -> tuple[np.ndarray, np.ndarray]:
        """Marginal mean (N, L) and covariance (N, L, L) of each z_i."""
        mean = self.local_shift + self.local_gain @ self.global_mean
        cov = self.local_cov + self.local_gain @ self.global_cov @ np.swapaxes(self.local_gain, -1, -2)
        return mean, cov


@dataclass(frozen=True)
class HierModel:
    """A hierarchical branch model with its data (see module docstring for the contract)."""

    name: str
    num_groups: int
    dim_global: int
    dim_local: int
    data: dict[str, np.ndarray]  # per-group arrays, leading axis = num_groups
    log_prior_global: Callable[[Array], Array]
    log_local: Callable[[Array, Array, dict[str, Array]], Array]
    params: dict[str, Any] = field(default_factory=dict)  # the data params that built it
    exact: ExactGaussianPosterior | None = None
    global_names: tuple[str, ...] = ()
    test_data: dict[str, np.ndarray] | None = None  # held-out rows, same layout, if defined
    # Observation log-likelihood only, Σ_j mask_ij log p(y_ij | θ, z_i, x_ij), same broadcasting as
    # log_local; used for held-out predictive scores on ``test_data``.
    log_lik: Callable[[Array, Array, dict[str, Array]], Array] | None = None
    # numpy θ (S, G), z (S, N, L) -> {name: (S, *shape)} in the model's natural (constrained)
    # parameterization, Stan/posteriordb names (``mu``, ``tau``, ``theta`` …); None = θ by
    # ``global_names`` and z as ``z``.  ``datasets/stan/<name>.stan`` outputs the same names.
    natural: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]] | None = None
    stan_data: dict[str, Any] | None = None  # data block for datasets/stan/<name>.stan, if shipped
    # The rows kept compressed, never padded (module docstring): a RatingStore, with ``data`` and
    # ``test_data`` empty.  None: the rows are in ``data``.
    store: Any | None = None
    # The global parameters the data were simulated from, where they are fixed (synthetic data drawn
    # at known true values rather than from the prior): records compare q(θ)'s mean with them.
    theta_true: np.ndarray | None = None

    @property
    def num_obs(self) -> int:
        """Number of (unpadded) observations (training rows of the store, for a compressed model)."""
        if self.store is not None:
            return int(self.store.train_sizes.sum())
        mask = self.data.get("mask")
        return int(mask.sum()) if mask is not None else self.num_groups


def natural_draws(model: HierModel, theta: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """Draws of θ ``(S, G)`` and z ``(S, N, L)`` in the model's natural parameterization.

    Returns ``{name: (S, *shape)}``; see :attr:`HierModel.natural`.  Without a ``natural`` map the
    names are ``global_names`` (or ``theta``) for θ and ``z`` for the local block.
    """
    theta, z = np.asarray(theta), np.asarray(z)
    if model.natural is not None:
        return {k: np.asarray(v) for k, v in model.natural(theta, z).items()}
    if model.global_names and len(model.global_names) == model.dim_global:
        out = {name: theta[:, k] for k, name in enumerate(model.global_names)}
    else:
        out = {"theta": theta}
    out["z"] = z
    return out


def flat_names(draws: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """``{name: (S, *shape)}`` -> Stan-style scalar names (``theta[1]``, ``z[3,2]``; 1-based,
    row-major like posteriordb) and the matching ``(S, P)`` matrix."""
    names, cols = [], []
    for name, value in draws.items():
        value = np.asarray(value)
        shape = value.shape[1:]
        if not shape:
            names.append(name)
        else:
            names.extend(f"{name}[{','.join(str(i + 1) for i in idx)}]" for idx in np.ndindex(*shape))
        cols.append(value.reshape(value.shape[0], -1))
    return names, np.concatenate(cols, axis=1)


def log_joint(model: HierModel, theta: Array, z: Array, data: dict[str, Array], scale: float = 1.0) -> Array:
    """log p(θ) + scale · Σ_i log_local(θ, z_i, data_i).

    θ ``(..., G)``, z ``(..., B, L)`` and ``data`` arrays with leading axis B (the groups in z).
    ``scale`` = N/B for a minibatch of B groups (1 for full data).  Returns ``(...)``.
    """
    xp = array_namespace(theta, z)
    local = model.log_local(theta[..., None, :], z, data)
    return model.log_prior_global(theta) + scale * xp.sum(local, axis=-1)


ROW_LAYOUT_MIN_WASTE = 1.25  # re-bucket groups when padding inflates the data by more than this


def row_layout(model: HierModel) -> list[dict[str, Any]] | None:
    """The groups re-padded in buckets of similar size, for full-data evaluation of the joint.

    Real groups are heavy-tailed (MovieLens users: median 64, max 2152 training ratings; Chem97
    schools: median 11, max 188), so one ``(N, n_max)`` padding can be 8-15× the data.  Groups are
    bucketed by ⌊log₂ n_i⌋ and each bucket padded to its own largest group, so the padded size is
    < 2× the data; each bucket stays a dense batched computation (no per-row gather/scatter, which
    XLA on CPU runs slowly).  Returns None when the data has no mask or padding wastes little, else a
    list of ``{"index": (N_b,) group ids, "data": that bucket's arrays}``; see :func:`log_joint_rows`.
    """
    mask = model.data.get("mask")
    if mask is None or mask.size <= ROW_LAYOUT_MIN_WASTE * max(1, model.num_obs):
        return None
    sizes = mask.sum(axis=1).astype(np.int64)
    level = np.floor(np.log2(np.maximum(sizes, 1))).astype(np.int64)
    buckets = []
    for lev in np.unique(level):
        index = np.flatnonzero(level == lev)
        width = max(1, int(sizes[index].max()))
        data = {}
        for key, value in model.data.items():
            value = np.asarray(value)
            per_obs = value.shape[:2] == mask.shape
            data[key] = value[index, :width] if per_obs else value[index]
        buckets.append({"index": index, "data": data})
    return buckets


def log_joint_rows(model: HierModel, theta: Array, z: Array, layout: list[dict[str, Any]]) -> Array:
    """log p(θ, z, y) on the full data from :func:`row_layout`'s buckets: equal to :func:`log_joint`
    (scale 1) at a cost < 2× the number of observations.  θ ``(..., G)``, z ``(..., N, L)``."""
    xp = array_namespace(theta, z)
    total = model.log_prior_global(theta)
    for bucket in layout:
        index = xp.asarray(bucket["index"], device=array_device(z))
        local = model.log_local(theta[..., None, :], xp.take(z, index, axis=-2), bucket["data"])
        total = total + xp.sum(local, axis=-1)
    return total


def full_data_log_joint(model: HierModel) -> tuple[Callable[[Array, Array, Any], Array], Any]:
    """The cheapest exact full-data joint: ``(f, data)`` with ``f(θ, z, data) = log p(θ, z, y)``,
    using size buckets (:func:`row_layout`) where one padding is wasteful, else the padded groups."""
    layout = row_layout(model)
    if layout is None:
        return (lambda theta, z, data: log_joint(model, theta, z, data)), model.data
    return (lambda theta, z, data: log_joint_rows(model, theta, z, data)), layout


def normal_logpdf(x: Array, mean: Array, sd: float | Array = 1.0) -> Array:
    """Elementwise log N(x | mean, sd²), array-API."""
    xp = array_namespace(x, mean)
    r = (x - mean) / sd
    log_sd = math.log(sd) if isinstance(sd, (int, float)) else xp.log(sd)
    return -0.5 * r * r - log_sd - 0.5 * LOG_2PI


def log_half_normal_of_log(log_sigma: Array, scale: float) -> Array:
    """log half-Normal(σ | 0, scale²) + log σ at σ = exp(log_sigma): the density of log σ."""
    xp = array_namespace(log_sigma)
    sigma = xp.exp(log_sigma)
    return math.log(2.0) + normal_logpdf(sigma, xp.zeros_like(sigma), scale) + log_sigma


def gaussian_loglik(y: Array, mean: Array, log_sigma: Array, mask: Array) -> Array:
    """Σ_j mask_j log N(y_j | mean_j, exp(log_sigma)²) over the last axis; log_sigma ``(...)``."""
    xp = array_namespace(y, mean, log_sigma)
    r = (y - mean) / xp.exp(log_sigma)[..., None]
    return xp.sum(mask * (-0.5 * r * r - log_sigma[..., None] - 0.5 * LOG_2PI), axis=-1)


def coerce_data(data: dict[str, Array], like: Array) -> dict[str, Array]:
    """Floating ``data`` arrays moved to the namespace, dtype and device of ``like``.

    Lets a density take the model's numpy ``data`` next to jax or torch parameters: mixed
    namespaces make ``array_namespace`` fail and torch's matmul refuses mixed dtypes.  Arrays
    that already match pass through without a copy; non-floating arrays keep their dtype.
    """
    xp, dev = array_namespace(like), array_device(like)
    out = {}
    for key, value in data.items():
        floating = array_namespace(value).isdtype(value.dtype, "real floating")
        out[key] = xp.asarray(value, dtype=like.dtype if floating else None, device=dev)
    return out


DATA_MEMORY_SHARE = 0.5  # simulated data may take at most this share of the machine's memory


def machine_memory_bytes() -> int:
    """Physical memory of this machine (bytes)."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_data_size(estimate_bytes: float, what: str) -> None:
    """Refuse, before anything is generated, data whose estimated memory exceeds
    :data:`DATA_MEMORY_SHARE` of the machine's: a :class:`ParamError` (the CLI's exit 2) naming the
    estimate and the limit, instead of an out-of-memory failure half-way through generating it."""
    limit = DATA_MEMORY_SHARE * machine_memory_bytes()
    if estimate_bytes > limit:
        raise ParamError(
            f"{what} would take about {estimate_bytes / 2**30:,.1f} GiB to generate, more than the "
            f"{limit / 2**30:,.1f} GiB limit ({DATA_MEMORY_SHARE:.0%} of this machine's memory): "
            "use fewer groups or rows"
        )


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Validate an integer data/method parameter, raising :class:`ParamError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParamError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def group_sizes(rng: np.random.Generator, num_groups: int, n: int, ragged: bool) -> np.ndarray:
    """Observations per group: all ``n``, or ``max(1, Poisson(n))`` when ragged."""
    if not ragged:
        return np.full(num_groups, n, dtype=np.int64)
    return np.maximum(1, rng.poisson(n, size=num_groups)).astype(np.int64)


def pad_groups(sizes: np.ndarray, *arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Pad flat per-observation arrays (ordered by group) into (N, n_max, ...) plus a mask."""
    num_groups, n_max = len(sizes), int(sizes.max())
    mask = (np.arange(n_max)[None, :] < sizes[:, None]).astype(np.float64)
    out = []
    for a in arrays:
        padded = np.zeros((num_groups, n_max) + a.shape[1:], dtype=a.dtype)
        padded[mask.astype(bool)] = a
        out.append(padded)
    return out, mask


def flatten_groups(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Padded per-group arrays -> flat rows of the observed data only, plus ``group (num_obs,)``.

    Every array laid out per observation, ``(N, n_max, ...)`` beside a ``mask (N, n_max)``, becomes
    ``(num_obs, ...)`` (the masked-in rows, group by group); without a mask every group is one row
    (eight schools: ``y``, ``sigma`` of shape ``(N,)``).  E.g. hier-linear's padded x, y, mask give
    ``x (num_obs, d)``, ``y (num_obs,)``, ``group (num_obs,)``.
    """
    mask = data.get("mask")
    if mask is None:
        num_groups = len(next(iter(data.values())))
        return {k: np.asarray(v) for k, v in data.items()} | {"group": np.arange(num_groups, dtype=np.int64)}
    keep = np.asarray(mask).astype(bool)
    group = np.broadcast_to(np.arange(keep.shape[0])[:, None], keep.shape)[keep]
    out = {}
    for key, value in data.items():
        value = np.asarray(value)
        if key != "mask" and value.shape[:2] == keep.shape:
            out[key] = value[keep]
    return out | {"group": group.astype(np.int64)}


def group_members(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Where each group's rows lie in :func:`flatten_groups`'s rows: ``members (N, n_max)`` (row ids,
    0 where padded) and ``member_mask (N, n_max)`` (1.0 for a real row); one row a group without a mask."""
    mask = data.get("mask")
    if mask is None:
        num_groups = len(next(iter(data.values())))
        return np.arange(num_groups, dtype=np.int64)[:, None], np.ones((num_groups, 1))
    keep = np.asarray(mask).astype(bool)
    members = np.zeros(keep.shape, dtype=np.int64)
    members[keep] = np.arange(int(keep.sum()))
    return members, keep.astype(np.float64)
