"""Native numpyro models of every dataset: the model a numpyro user writes.

Each model reads the observed data as flat rows (:func:`~hierbench.datasets.base.flatten_groups`: one
row an observation, its covariates, its response and its ``group``), samples the globals with numpyro
distributions, the locals under ``numpyro.plate("groups", N)``, and observes every row under a plate
over rows.  Priors and transforms are the dataset's (its module docstring): a σ with a half-normal
prior is ``dist.HalfNormal`` (numpyro's unconstrained coordinate is log σ, our θ's), τ of eight schools
``dist.HalfCauchy``.  ``tests/test_native_models.py`` checks, for every dataset, that numpyro's log
density at an unconstrained point (``potential_energy``, log-Jacobians included) equals
:func:`~hierbench.datasets.base.log_joint` at the same (θ, z).

A model comes in two parts, as numpyro's ``AutoSemiDAIS`` wants them: ``global_model(rows)`` samples
the globals and returns ``(globals, rows)``; ``local_model((globals, rows), num_groups=N,
batch_groups=B)`` opens the plate over groups, samples each group's locals and observes the rows.
With ``batch_groups=B`` the plate subsamples B groups a step (``subsample_size=B``, numpyro scales
their terms by N/B) and the rows it observes are those groups' rows, gathered through
``members (N, n_max)`` (each group's row ids, padded to the widest group, with ``member_mask``): a
subsampled step needs a fixed shape, so the B groups' rows are padded to the widest group, as a numpyro
user subsampling ragged groups writes it.  Without it every row is observed once, in one plate over
the rows (cost ∝ observations, never N·n_max).

:func:`bind` binds a model to a :class:`~hierbench.datasets.base.HierModel`: the rows, the whole model
``model(rows)``, and the :class:`Layout` that maps numpyro's latent sites (unconstrained values) to
our (θ, z) and back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

import hierbench._jax  # noqa: F401  (float64 on)
from hierbench.datasets.base import HierModel, flatten_groups, group_members

Array = Any
Rows = dict[str, Array]
GROUPS = "groups"  # the plate over groups (AutoSemiDAIS's subsample plate)
INDEX_KEYS = ("members", "member_mask")  # rows' keys that are not per-row arrays


class NativeModel(NamedTuple):
    """A dataset's numpyro model in two parts, and its latent sites in the order of our θ and z."""

    global_model: Callable[[Rows], tuple[dict[str, Array], Rows]]
    local_model: Callable[..., None]  # local_model((globals, rows), *, num_groups, batch_groups)
    global_sites: tuple[str, ...]  # θ = concatenation of these sites' unconstrained values, in order
    local_sites: tuple[str, ...]  # z_i = concatenation of these sites' values at group i


def observe(groups: Any, rows: Rows, likelihood: Callable[[Rows, Array], Any], name: str = "y") -> None:
    """Observe ``rows["y"]`` under ``likelihood(r, g)``: ``r`` the rows, ``g`` each row's position in the
    locals sampled under ``groups`` (the plate object, re-entered so that its subsample is the same).

    Full data: one plate over every row, ``g = rows["group"]``.  Subsampled (``rows`` has ``members``):
    inside ``groups``, the B groups' rows as ``(n_max, B)`` arrays under a plate over members,
    padding masked out.
    """
    if "members" not in rows:
        with numpyro.plate("rows", rows["y"].shape[0]):
            numpyro.sample(name, likelihood(rows, rows["group"]), obs=rows["y"])
        return
    with groups as idx:
        members = rows["members"][idx]  # (B, n_max) row ids
        picked = {k: jnp.swapaxes(v[members], 0, 1) for k, v in rows.items() if k not in INDEX_KEYS}
        g = jnp.broadcast_to(jnp.arange(members.shape[0]), members.shape[::-1])  # (n_max, B)
        keep = jnp.swapaxes(rows["member_mask"][idx], 0, 1) > 0
        with numpyro.plate("members", members.shape[1], dim=-2), handlers.mask(mask=keep):
            numpyro.sample(name, likelihood(picked, g), obs=picked["y"])


def _plate(num_groups: int, batch_groups: int | None) -> Any:
    return numpyro.plate(GROUPS, num_groups, subsample_size=batch_groups)


# --- hier-linear, hier-logistic ------------------------------------------------------------------


def regression_globals(rows: Rows) -> tuple[dict[str, Array], Rows]:
    """θ ~ N(0, I_d)."""
    d = rows["x"].shape[-1]
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    return {"theta": theta}, rows


def _regression_locals(
    carry: tuple, likelihood: Callable[[Array], Any], num_groups: int, batch_groups: int | None
) -> None:
    g, rows = carry
    groups = _plate(num_groups, batch_groups)
    with groups:
        z = numpyro.sample("z", dist.Normal(g["theta"], 1.0).to_event(1))
    observe(groups, rows, lambda r, i: likelihood(jnp.einsum("...d,...d->...", r["x"], z[i])))


def hier_linear_locals(carry: tuple, *, num_groups: int, batch_groups: int | None = None) -> None:
    """z_i | θ ~ N(θ, I_d);  y_ij ~ N(x_ijᵀ z_i, 1)."""
    _regression_locals(carry, lambda eta: dist.Normal(eta, 1.0), num_groups, batch_groups)


def hier_logistic_locals(carry: tuple, *, num_groups: int, batch_groups: int | None = None) -> None:
    """z_i | θ ~ N(θ, I_d);  y_ij ~ Bernoulli(σ(x_ijᵀ z_i)) (y stored as float 0/1)."""
    _regression_locals(carry, lambda eta: dist.Bernoulli(logits=eta), num_groups, batch_groups)


# --- eight schools (non-centered) ----------------------------------------------------------------


def eight_schools_globals(rows: Rows) -> tuple[dict[str, Array], Rows]:
    """μ ~ N(0, 5²), τ ~ half-Cauchy(0, 5)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    return {"mu": mu, "tau": tau}, rows


def eight_schools_locals(carry: tuple, *, num_groups: int, batch_groups: int | None = None) -> None:
    """θ_trans_j ~ N(0, 1);  y_j ~ N(μ + τ θ_trans_j, σ_j²)."""
    g, rows = carry
    groups = _plate(num_groups, batch_groups)
    with groups:
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
    effect = g["mu"] + g["tau"] * theta_trans
    observe(groups, rows, lambda r, i: dist.Normal(effect[i], r["sigma"]))


# --- radon, chem97: varying intercept and slope, non-centered ------------------------------------


def radon_globals(rows: Rows) -> tuple[dict[str, Array], Rows]:
    """μ_a, μ_b ~ N(0, 10²); σ_a, σ_b, σ_y ~ half-Normal(0, 1)."""
    out = {k: numpyro.sample(k, dist.Normal(0.0, 10.0)) for k in ("mu_a", "mu_b")}
    out |= {k: numpyro.sample(k, dist.HalfNormal(1.0)) for k in ("sigma_a", "sigma_b", "sigma_y")}
    return out, rows


def chem97_globals(rows: Rows) -> tuple[dict[str, Array], Rows]:
    """μ_a, μ_b, γ ~ N(0, 10²); σ_a, σ_b, σ_y ~ half-Normal(0, 5)."""
    out = {k: numpyro.sample(k, dist.Normal(0.0, 10.0)) for k in ("mu_a", "mu_b", "gamma")}
    out |= {k: numpyro.sample(k, dist.HalfNormal(5.0)) for k in ("sigma_a", "sigma_b", "sigma_y")}
    return out, rows


def _varying_slope_locals(
    carry: tuple, mean: Callable[[dict, Rows, Array, Array], Array], num_groups: int, batch_groups: int | None
) -> None:
    g, rows = carry
    groups = _plate(num_groups, batch_groups)
    with groups:
        eta_a = numpyro.sample("eta_a", dist.Normal(0.0, 1.0))
        eta_b = numpyro.sample("eta_b", dist.Normal(0.0, 1.0))
    a = g["mu_a"] + g["sigma_a"] * eta_a
    b = g["mu_b"] + g["sigma_b"] * eta_b
    observe(groups, rows, lambda r, i: dist.Normal(mean(g, r, a[i], b[i]), g["sigma_y"]))


def radon_locals(carry: tuple, *, num_groups: int, batch_groups: int | None = None) -> None:
    """η_a, η_b ~ N(0, 1) per county;  y ~ N(a + b·floor, σ_y²), a = μ_a + σ_a η_a, b = μ_b + σ_b η_b."""
    _varying_slope_locals(carry, lambda g, r, a, b: a + b * r["floor"], num_groups, batch_groups)


def chem97_locals(carry: tuple, *, num_groups: int, batch_groups: int | None = None) -> None:
    """η_a, η_b ~ N(0, 1) per school;  score ~ N(a + b·gcse + γ·female, σ_y²)."""
    _varying_slope_locals(
        carry, lambda g, r, a, b: a + b * r["gcse"] + g["gamma"] * r["female"], num_groups, batch_groups
    )


# --- movielens-small, movielens-synth (non-centered) ---------------------------------------------


def movielens_globals(rows: Rows) -> tuple[dict[str, Array], Rows]:
    """μ_k ~ N(0, 2²), σ_k ~ half-Normal(0, 1), k = 1..d."""
    d = rows["x"].shape[-1]
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([d]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0).expand([d]).to_event(1))
    return {"mu": mu, "sigma": sigma}, rows


def movielens_locals(carry: tuple, *, num_groups: int, batch_groups: int | None = None) -> None:
    """η_i ~ N(0, I_d), z_i = μ + σ ⊙ η_i;  y_ij ~ Bernoulli(σ(x_ijᵀ z_i))."""
    g, rows = carry
    groups = _plate(num_groups, batch_groups)
    with groups:
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0).expand([rows["x"].shape[-1]]).to_event(1))
    coef = g["mu"] + g["sigma"] * eta
    observe(groups, rows, lambda r, i: dist.Bernoulli(logits=jnp.einsum("...d,...d->...", r["x"], coef[i])))


_REGRESSION = ("theta",), ("z",)
_MOVIELENS = NativeModel(movielens_globals, movielens_locals, ("mu", "sigma"), ("eta",))

NATIVE_MODELS: dict[str, NativeModel] = {
    "hier-linear": NativeModel(regression_globals, hier_linear_locals, *_REGRESSION),
    "hier-logistic": NativeModel(regression_globals, hier_logistic_locals, *_REGRESSION),
    "eight-schools": NativeModel(
        eight_schools_globals, eight_schools_locals, ("mu", "tau"), ("theta_trans",)
    ),
    "radon": NativeModel(
        radon_globals, radon_locals, ("mu_a", "mu_b", "sigma_a", "sigma_b", "sigma_y"), ("eta_a", "eta_b")
    ),
    "chem97": NativeModel(
        chem97_globals,
        chem97_locals,
        ("mu_a", "mu_b", "gamma", "sigma_a", "sigma_b", "sigma_y"),
        ("eta_a", "eta_b"),
    ),
    "movielens-small": _MOVIELENS,
    "movielens-synth": _MOVIELENS,
}


# --- binding a model to a dataset, and its (θ, z) layout -----------------------------------------


class Layout(NamedTuple):
    """Where numpyro's latent sites sit in our (θ, z): each site's full-data shape, in θ's and z's order.

    Values are *unconstrained* (numpyro's ``biject_to(support).inv``: log σ for a positive σ), which is
    our coordinate system, so the map is a reshape and a concatenation.
    """

    shapes: dict[str, tuple[int, ...]]
    global_sites: tuple[str, ...]
    local_sites: tuple[str, ...]
    num_groups: int

    def to_ours(self, values: dict[str, Array]) -> tuple[Array, Array]:
        """Unconstrained site values, leading sample axes ``(...)`` -> θ ``(..., G)``, z ``(..., N, L)``."""
        first = self.global_sites[0]
        batch = values[first].shape[: values[first].ndim - len(self.shapes[first])]
        theta = jnp.concatenate([jnp.reshape(values[s], (*batch, -1)) for s in self.global_sites], -1)
        n = self.num_groups
        z = jnp.concatenate([jnp.reshape(values[s], (*batch, n, -1)) for s in self.local_sites], -1)
        return theta, z

    def from_ours(self, theta: Array, z: Array) -> dict[str, Array]:
        """θ ``(..., G)``, z ``(..., N, L)`` -> unconstrained site values (the inverse of :meth:`to_ours`)."""
        out, start = {}, 0
        batch = theta.shape[:-1]
        for s in self.global_sites:
            size = math.prod(self.shapes[s])
            out[s] = jnp.reshape(theta[..., start : start + size], (*batch, *self.shapes[s]))
            start += size
        start = 0
        for s in self.local_sites:
            size = math.prod(self.shapes[s][1:])
            out[s] = jnp.reshape(z[..., start : start + size], (*batch, *self.shapes[s]))
            start += size
        return out


class Bound(NamedTuple):
    """A native model bound to a dataset's data: ``model(rows)``, its two parts, the rows, the layout."""

    model: Callable[[Rows], None]
    global_model: Callable[[Rows], tuple[dict[str, Array], Rows]]
    local_model: Callable[[tuple], None]
    rows: dict[str, np.ndarray]
    layout: Layout
    batch_groups: int | None


def rows_of(model: HierModel, batch_groups: int | None = None) -> dict[str, np.ndarray]:
    """The flat rows a native model reads; with ``batch_groups``, also each group's row ids
    (``members``, ``member_mask``) for the subsampled plate."""
    rows = flatten_groups(model.data)
    if batch_groups is not None:
        members, member_mask = group_members(model.data)
        rows |= {"members": members, "member_mask": member_mask}
    return rows


def bind(model: HierModel, batch_groups: int | None = None, dataset: str | None = None) -> Bound:
    """The native numpyro model of ``model`` (registered under ``dataset``, default ``model.name``) on its
    data; ``batch_groups`` < N subsamples that many groups a step (None or N: full data; above N is
    refused, :func:`~hierbench.methods.batches.check_batch_groups`)."""
    from hierbench.methods.batches import check_batch_groups

    native = NATIVE_MODELS[dataset or model.name]
    n = model.num_groups
    check_batch_groups(batch_groups, n)
    if batch_groups is not None and batch_groups >= n:
        batch_groups = None
    rows = rows_of(model, batch_groups)

    def local_model(carry: tuple) -> None:
        native.local_model(carry, num_groups=n, batch_groups=batch_groups)

    def whole(rows: Rows) -> None:
        local_model(native.global_model(rows))

    def full(rows: Rows) -> None:
        native.local_model(native.global_model(rows), num_groups=n, batch_groups=None)

    def latent_shapes(rows: Rows) -> dict[str, Any]:
        trace = handlers.trace(handlers.seed(full, 0)).get_trace(rows)
        return {k: s["value"] for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}

    full_rows = jax.tree.map(jnp.asarray, rows_of(model))
    shapes = {k: tuple(v.shape) for k, v in jax.eval_shape(latent_shapes, full_rows).items()}
    layout = Layout(shapes, native.global_sites, native.local_sites, n)
    return Bound(whole, native.global_model, local_model, rows, layout, batch_groups)
