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

    @property
    def num_obs(self) -> int:
        """Number of (unpadded) observations."""
        mask = self.data.get("mask")
        return int(mask.sum()) if mask is not None else self.num_groups


def log_joint(model: HierModel, theta: Array, z: Array, data: dict[str, Array], scale: float = 1.0) -> Array:
    """log p(θ) + scale · Σ_i log_local(θ, z_i, data_i).

    θ ``(..., G)``, z ``(..., B, L)`` and ``data`` arrays with leading axis B (the groups in z).
    ``scale`` = N/B for a minibatch of B groups (1 for full data).  Returns ``(...)``.
    """
    xp = array_namespace(theta, z)
    local = model.log_local(theta[..., None, :], z, data)
    return model.log_prior_global(theta) + scale * xp.sum(local, axis=-1)


def normal_logpdf(x: Array, mean: Array, sd: float | Array = 1.0) -> Array:
    """Elementwise log N(x | mean, sd²), array-API."""
    xp = array_namespace(x, mean)
    r = (x - mean) / sd
    log_sd = math.log(sd) if isinstance(sd, (int, float)) else xp.log(sd)
    return -0.5 * r * r - log_sd - 0.5 * LOG_2PI


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
    """Padded (x, y, mask) -> flat arrays ``x (num_obs, d)``, ``y (num_obs,)``, ``group (num_obs,)``."""
    keep = data["mask"].astype(bool)
    group = np.broadcast_to(np.arange(keep.shape[0])[:, None], keep.shape)[keep]
    return {"x": data["x"][keep], "y": data["y"][keep], "group": group.astype(np.int64)}
