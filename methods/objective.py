"""The −ELBO estimate every VI step differentiates, written once for every backend (array API).

Given the step's picks (:class:`~hierbench.methods.batches.Pick`: which groups, their rows, their
scale) and the standard normals the backend drew for each, the estimate is::

    −mean_s [ log p(θ_s) − log q(θ_s)
              + Σ_picks scale · Σ_{i∈pick} (log p(z_si, y_i | θ_s) − log q(z_si | θ_s)) ]

Each pick draws its own θ (independent normals), and the global term uses the first pick's θ: each
stratum's local terms are an expectation over q(θ) q(z_i | θ) of their own, so the estimate stays
unbiased.  With the sticking-the-landing estimator (``stl``) log q is evaluated at stopped parameters
(Roeder, Wu & Duvenaud 2017); without it a family's ``draw_log_q`` may give the draw and its density
together.
"""

from __future__ import annotations

from typing import Any

from hierbench.datasets.base import HierModel, log_joint_rows
from hierbench.methods._ops import namespace, stop_gradient
from hierbench.methods.base import Family, Params
from hierbench.methods.batches import Pick


def draw_with_log_q(family: Family, stl: bool, params: Params, eps: list[Any], pick: Pick):
    """A training draw (θ, z) and (log q(θ), Σ log q(z_i | θ)) at it, as the gradient estimator wants:
    at stopped parameters under STL; else from ``family.draw_log_q`` where the family has one."""
    if family.draw_log_q is not None and not stl:
        return family.draw_log_q(params, eps, pick.idx, pick.data)
    theta, z = family.draw(params, eps, pick.idx, pick.data)
    q_params = stop_gradient(params) if stl else params
    return theta, z, *family.log_q(q_params, theta, z, pick.idx, pick.data)


def neg_elbo(
    model: HierModel, family: Family, stl: bool, params: Params, picks: list[Pick], noise: list
) -> Any:
    """The minibatch Monte Carlo estimate of −ELBO (module docstring); ``noise[k]`` are the normals of
    ``picks[k]`` (``family.noise_shapes(S, groups in the pick)``)."""
    elbo = None
    for pick, eps in zip(picks, noise, strict=True):
        theta, z, lq_global, lq_local = draw_with_log_q(family, stl, params, eps, pick)
        xp = namespace(theta)
        if pick.rows is not None:  # full data on the size buckets: the whole joint at once
            elbo = log_joint_rows(model, theta, z, pick.rows) - lq_global - lq_local
            continue
        local = xp.sum(model.log_local(theta[:, None, :], z, pick.data), axis=-1)
        if elbo is None:
            elbo = model.log_prior_global(theta) - lq_global + pick.scale * (local - lq_local)
        else:
            elbo = elbo + pick.scale * (local - lq_local)
    return -xp.mean(elbo)
