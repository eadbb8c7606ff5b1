"""Native models (numpyro for every dataset, Pyro for the regressions): their log joint is ours."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALL_DATA_PARAMS
from numpyro import handlers
from numpyro.infer.util import potential_energy

from hierbench.datasets import DATASETS
from hierbench.datasets.base import flatten_groups, group_members, log_joint
from hierbench.methods.peers.numpyro_models import GROUPS, NATIVE_MODELS, bind


def _points(model, num=3, seed=0):
    """θ ~ N(0, 0.5² I), z ~ N(0, I): moderate unconstrained values of any model."""
    rng = np.random.default_rng(seed)
    theta = 0.5 * rng.standard_normal((num, model.dim_global))
    return theta, rng.standard_normal((num, model.num_groups, model.dim_local))


def test_every_dataset_has_a_native_model():
    assert set(NATIVE_MODELS) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_native_numpyro_log_joint_is_ours(name):
    """numpyro's log density at an unconstrained point (log-Jacobians included: potential_energy) equals
    log_joint at the same (θ, z), on full data (flat rows) and on a subsample of groups (the plate's
    indices substituted; their terms scaled by N/B)."""
    model = DATASETS[name](**SMALL_DATA_PARAMS[name])
    theta, z = _points(model)
    full = bind(model)
    rows = jax.tree.map(jnp.asarray, full.rows)
    assert full.rows["y"].shape == (model.num_obs,)  # the observed rows only, never the padding
    idx = np.array([model.num_groups - 1, 0, 2])
    sub = bind(model, batch_groups=len(idx))
    sub_rows = jax.tree.map(jnp.asarray, sub.rows)

    @jax.jit
    def theirs(theta, z):
        def one(t, zz):
            values = full.layout.from_ours(t, zz)
            whole = -potential_energy(full.model, (rows,), {}, values)
            picked = {k: v[idx] if k in sub.layout.local_sites else v for k, v in values.items()}
            with handlers.substitute(data={GROUPS: jnp.asarray(idx)}):
                part = -potential_energy(sub.model, (sub_rows,), {}, picked)
            return whole, part

        return jax.vmap(one)(theta, z)

    whole, part = theirs(jnp.asarray(theta), jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(whole), log_joint(model, theta, z, model.data), rtol=1e-12)
    data_b = {k: v[idx] for k, v in model.data.items()}
    want = log_joint(model, theta, z[:, idx], data_b, scale=model.num_groups / len(idx))
    np.testing.assert_allclose(np.asarray(part), want, rtol=1e-12)


@pytest.mark.parametrize("name", ["hier-linear", "radon"])
def test_layout_round_trip(name):
    model = DATASETS[name](**SMALL_DATA_PARAMS[name])
    layout = bind(model).layout
    theta, z = _points(model, num=2)
    back = layout.to_ours(layout.from_ours(jnp.asarray(theta), jnp.asarray(z)))
    np.testing.assert_array_equal(np.asarray(back[0]), theta)
    np.testing.assert_array_equal(np.asarray(back[1]), z)


def test_group_members_index_the_flat_rows():
    model = DATASETS["hier-linear"](N=7, n=3, d=2, ragged=True, seed=1)
    flat = flatten_groups(model.data)
    members, member_mask = group_members(model.data)
    keep = member_mask > 0
    np.testing.assert_array_equal(flat["x"][members[keep]], model.data["x"][keep])
    np.testing.assert_array_equal(flat["group"][members[keep]], np.nonzero(keep)[0])


@pytest.mark.parametrize("name", ["hier-linear", "hier-logistic"])
def test_pyro_log_joint_is_ours(name):
    """The Pyro model's log density (its trace's log_prob_sum at our (θ, z)) equals log_joint."""
    import pyro
    import torch
    from pyro import poutine

    from hierbench.methods.peers.pyro_peers import hier_regression

    model = DATASETS[name](N=5, n=4, d=3, ragged=True, seed=2)
    rows = {k: torch.as_tensor(v) for k, v in flatten_groups(model.data).items()}
    theta, z = _points(model)
    for t, zz, want in zip(theta, z, log_joint(model, theta, z, model.data), strict=True):
        values = {"theta": torch.as_tensor(t), "z": torch.as_tensor(zz)}
        conditioned = poutine.condition(hier_regression, data=values)
        trace = poutine.trace(conditioned).get_trace(rows, model.num_groups, name == "hier-logistic")
        assert float(trace.log_prob_sum()) == pytest.approx(want, rel=1e-12)
    assert pyro.__version__
