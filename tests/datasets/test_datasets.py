"""Tests of the datasets: the contract for every registered dataset (fields, backends agree, natural
parameters, Stan program names), and for the simulated regressions the exact posterior vs brute force,
params and the ragged data layout.  The real datasets' data and densities are in test_real_datasets.py."""

from __future__ import annotations

import re
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
import torch
from conftest import SMALL_DATA_PARAMS

from hierbench.datasets import DATASETS, hier_linear, hier_logistic, small_params
from hierbench.datasets.base import (
    ParamError,
    flat_names,
    flatten_groups,
    group_sizes,
    log_joint,
    natural_draws,
    normal_logpdf,
)
from hierbench.registry import describe, parse_params

SIMULATED = ["hier-linear", "hier-logistic"]  # simulated regressions with params N, n, d, ragged, seed

SMALL = [  # (N, n, d, ragged, seed): N·n small enough for dense (Σn_i)² linear algebra
    (1, 5, 3, False, 0),
    (7, 4, 5, True, 1),
    (20, 10, 4, True, 2),
    (20, 6, 10, False, 3),
    (12, 1, 2, True, 4),  # Poisson(1) sizes: many groups of a single observation
]


@pytest.fixture(autouse=True, scope="module")
def _jax_x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _groups(model):
    """Unpadded (X_i, y_i) per group."""
    keep = model.data["mask"].astype(bool)
    return [(model.data["x"][i][keep[i]], model.data["y"][i][keep[i]]) for i in range(model.num_groups)]


def _brute_force(model):
    """Dense Gaussian conditioning on the joint of w = (θ, z_1..z_N) and y: independent of the
    precision-based formulas in hier_linear.  Returns log p(y), posterior mean and cov of w."""
    N, d = model.num_groups, model.dim_global
    groups = _groups(model)
    X = scipy.linalg.block_diag(*[x for x, _ in groups])  # (Σn_i, N·d)
    y = np.concatenate([yi for _, yi in groups])
    # Prior: z = 1⊗θ + η, so Cov(θ) = I, Cov(θ, z) = 1ᵀ⊗I, Cov(z) = J⊗I + I.
    ones = np.ones((1, N))
    cov_w = np.block(
        [
            [np.eye(d), np.kron(ones, np.eye(d))],
            [np.kron(ones.T, np.eye(d)), np.kron(ones.T @ ones, np.eye(d)) + np.eye(N * d)],
        ]
    )
    A = np.hstack([np.zeros((len(y), d)), X])  # y = A w + ε
    cov_y = A @ cov_w @ A.T + np.eye(len(y))
    log_evidence = scipy.stats.multivariate_normal(np.zeros(len(y)), cov_y).logpdf(y)
    gain = np.linalg.solve(cov_y, A @ cov_w).T  # Cov(w, y) Σ_y⁻¹
    return log_evidence, gain @ y, cov_w - gain @ A @ cov_w


def _q_exact_logpdf(exact, theta, z):
    """log q(θ, z) of the exact posterior, θ (G,), z (N, L)."""
    out = scipy.stats.multivariate_normal(exact.global_mean, exact.global_cov).logpdf(theta)
    for i in range(z.shape[0]):
        mean_i = exact.local_shift[i] + exact.local_gain[i] @ theta
        out += scipy.stats.multivariate_normal(mean_i, exact.local_cov[i]).logpdf(z[i])
    return out


# --------------------------------------------------------------------------- exact posterior


@pytest.mark.parametrize("N,n,d,ragged,seed", SMALL)
def test_exact_posterior_matches_dense_gaussian(N, n, d, ragged, seed):
    model = hier_linear.make(N=N, n=n, d=d, ragged=ragged, seed=seed)
    exact = model.exact
    log_evidence, mean, cov = _brute_force(model)
    assert exact.log_evidence == pytest.approx(log_evidence, rel=1e-8)

    np.testing.assert_allclose(exact.global_mean, mean[:d], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(exact.global_cov, cov[:d, :d], rtol=1e-10, atol=1e-10)
    local_mean, local_cov = exact.local_marginals()
    blocks = [cov[d + i * d : d + (i + 1) * d, d + i * d : d + (i + 1) * d] for i in range(N)]
    np.testing.assert_allclose(local_mean, mean[d:].reshape(N, d), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(local_cov, np.stack(blocks), rtol=1e-10, atol=1e-10)
    # The conditional z_i | θ: Cov(z_i, θ) = local_gain_i · global_cov.
    cross = np.stack([cov[d + i * d : d + (i + 1) * d, :d] for i in range(N)])
    np.testing.assert_allclose(exact.local_gain @ exact.global_cov, cross, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ragged", [False, True])
def test_exact_posterior_is_joint_over_evidence(ragged):
    """log p(θ, z, y) − log q_exact(θ, z) = log p(y) at any (θ, z): densities and posterior agree."""
    model = hier_linear.make(N=15, n=8, d=3, ragged=ragged, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = 2.0 * rng.standard_normal(model.dim_global)
        z = theta + 2.0 * rng.standard_normal((model.num_groups, model.dim_local))
        diff = float(log_joint(model, theta, z, model.data)) - _q_exact_logpdf(model.exact, theta, z)
        assert diff == pytest.approx(model.exact.log_evidence, rel=1e-10)


def test_exact_posterior_shapes_and_cost():
    model = hier_linear.make(N=3000, n=5, d=6, seed=0)  # O(N·d²): a dense (N·d)² would be 2.6 GB
    exact = model.exact
    assert exact.global_mean.shape == (6,) and exact.global_cov.shape == (6, 6)
    assert exact.local_shift.shape == (3000, 6)
    assert exact.local_gain.shape == exact.local_cov.shape == (3000, 6, 6)
    np.testing.assert_allclose(exact.global_cov, exact.global_cov.T)
    assert np.all(np.linalg.eigvalsh(exact.local_cov) > 0) and np.isfinite(exact.log_evidence)


# --------------------------------------------------------------------------- densities


def _reference_log_local(name, theta, z, x, y):
    """Per-group log-local by scipy on one group's unpadded rows."""
    eta = x @ z
    if name == "hier-linear":
        loglik = scipy.stats.norm.logpdf(y, eta, 1.0)
    else:
        loglik = y * scipy.special.log_expit(eta) + (1 - y) * scipy.special.log_expit(-eta)
    return scipy.stats.norm.logpdf(z, theta, 1.0).sum() + loglik.sum()


@pytest.mark.parametrize("name", SIMULATED)
def test_log_local_matches_scipy(name):
    model = DATASETS[name](N=6, n=5, d=3, ragged=True, seed=3)
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(3)
    z = 3.0 * rng.standard_normal((6, 3))  # large predictors exercise the stable log-sigmoid
    got = model.log_local(theta, z, model.data)
    want = [_reference_log_local(name, theta, z[i], x, y) for i, (x, y) in enumerate(_groups(model))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(model.log_prior_global(theta)) == pytest.approx(scipy.stats.norm.logpdf(theta).sum())


def _random_draws(model, num_draws=4, seed=0):
    """θ ~ N(0, I) and z_i ~ N(θ, I) (z_i and θ have the same size in the simulated models)."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((num_draws, model.dim_global))
    z = theta[:, None, :] + rng.standard_normal((num_draws, model.num_groups, model.dim_local))
    return theta, z


def _evaluate(model, theta, z, data):
    """(log_prior_global, log_local, log_joint) on a leading batch of draws."""
    return (
        model.log_prior_global(theta),
        model.log_local(theta[..., None, :], z, data),
        log_joint(model, theta, z, data),
    )


def _assert_backends_agree(model, theta, z, want) -> None:
    """The log joint's terms on JAX and torch (data as each backend's arrays or as numpy) equal numpy's."""
    jax_data = {k: jnp.asarray(v) for k, v in model.data.items()}
    torch_data = {k: torch.asarray(v, dtype=torch.float64) for k, v in model.data.items()}
    runs = {
        "jax": _evaluate(model, jnp.asarray(theta), jnp.asarray(z), jax_data),
        "jax+numpy data": _evaluate(model, jnp.asarray(theta), jnp.asarray(z), model.data),
        "torch": _evaluate(model, torch.asarray(theta), torch.asarray(z), torch_data),
        "torch+numpy data": _evaluate(model, torch.asarray(theta), torch.asarray(z), model.data),
    }
    for backend, got in runs.items():
        for g, w in zip(got, want, strict=True):
            assert np.asarray(g).dtype == np.float64, backend
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, err_msg=backend)


@pytest.mark.parametrize("name", SIMULATED)
@pytest.mark.parametrize("ragged", [False, True])
def test_backends_agree(name, ragged):
    model = DATASETS[name](N=9, n=6, d=4, ragged=ragged, seed=2)
    theta, z = _random_draws(model)
    want = _evaluate(model, theta, z, model.data)
    assert [w.shape for w in want] == [(4,), (4, 9), (4,)]

    _assert_backends_agree(model, theta, z, want)

    # One draw, no batch axis.
    single = log_joint(model, theta[0], z[0], model.data)
    assert np.ndim(single) == 0 and float(single) == pytest.approx(want[2][0], rel=1e-12)


@pytest.mark.parametrize("name", SIMULATED)
def test_jax_transforms(name):
    model = DATASETS[name](N=5, n=7, d=3, ragged=True, seed=4)
    theta, z = _random_draws(model, num_draws=3)
    want = log_joint(model, theta, z, model.data)
    data = {k: jnp.asarray(v) for k, v in model.data.items()}

    def joint(t, zz, dd):
        return log_joint(model, t, zz, dd)

    np.testing.assert_allclose(jax.jit(joint)(theta, z, data), want, rtol=1e-10)
    np.testing.assert_allclose(jax.vmap(joint, in_axes=(0, 0, None))(theta, z, data), want, rtol=1e-10)
    # Minibatch of groups: data sliced along the group axis, under jit.
    idx = jnp.array([0, 3])
    mini = jax.jit(lambda t, zz: joint(t, zz[:, idx], {k: v[idx] for k, v in data.items()}))(theta, z)
    assert mini.shape == (3,) and np.all(np.isfinite(mini))

    grad_theta, grad_z = jax.grad(lambda t, zz: jnp.sum(joint(t, zz, data)), argnums=(0, 1))(theta, z)
    assert grad_theta.shape == theta.shape and grad_z.shape == z.shape
    assert np.all(np.isfinite(grad_theta)) and np.all(np.isfinite(grad_z))

    # Same gradient from torch autograd.
    t_theta, t_z = torch.asarray(theta).requires_grad_(), torch.asarray(z).requires_grad_()
    log_joint(model, t_theta, t_z, model.data).sum().backward()
    np.testing.assert_allclose(t_theta.grad.numpy(), grad_theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t_z.grad.numpy(), grad_z, rtol=1e-10, atol=1e-12)


def test_torch_float32_params_coerce_data():
    model = hier_logistic.make(N=4, n=3, d=2, seed=0)
    theta, z = _random_draws(model, num_draws=2)
    got = log_joint(
        model, torch.asarray(theta, dtype=torch.float32), torch.asarray(z, dtype=torch.float32), model.data
    )
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), log_joint(model, theta, z, model.data), rtol=1e-5)


# --------------------------------------------------------------------------- params and data


@pytest.mark.parametrize("name", SIMULATED)
@pytest.mark.parametrize(
    "bad",
    [
        {"N": 0},
        {"N": -3},
        {"N": 2.5},
        {"N": "10"},
        {"N": True},
        {"n": 0},
        {"d": 0},
        {"d": None},
        {"ragged": "yes"},
        {"ragged": 1},
        {"seed": -1},
        {"seed": 1.0},
    ],
)
def test_bad_params_raise(name, bad):
    with pytest.raises(ParamError, match=next(iter(bad))):
        DATASETS[name](**bad)


@pytest.mark.parametrize("name", SIMULATED)
def test_model_fields_and_seeds(name):
    model = DATASETS[name](N=8, n=5, d=3, seed=7)
    assert model.name == name and model.num_groups == 8 and model.dim_global == model.dim_local == 3
    assert model.global_names == ("theta[1]", "theta[2]", "theta[3]")
    assert model.params == {"N": 8, "n": 5, "d": 3, "ragged": False, "seed": 7}
    assert model.data["x"].shape == (8, 5, 3) and model.data["y"].shape == model.data["mask"].shape == (8, 5)
    assert all(v.dtype == np.float64 for v in model.data.values())
    assert (model.exact is not None) == (name == "hier-linear")
    assert describe(DATASETS[name]) and "\n" not in describe(DATASETS[name])

    same = DATASETS[name](N=8, n=5, d=3, seed=7)
    other = DATASETS[name](N=8, n=5, d=3, seed=8)
    for key in model.data:
        np.testing.assert_array_equal(model.data[key], same.data[key])
    assert not np.array_equal(model.data["x"], other.data["x"])
    assert not np.array_equal(model.data["y"], other.data["y"])
    if model.exact is not None:
        assert model.exact.log_evidence == same.exact.log_evidence != other.exact.log_evidence


@pytest.mark.parametrize("name", SIMULATED)
def test_ragged_layout(name):
    N, n, seed = 40, 6, 11
    model = DATASETS[name](N=N, n=n, d=2, ragged=True, seed=seed)
    mask = model.data["mask"]
    sizes = mask.sum(1).astype(int)
    # The sizes are the generator's first draw (documented order).
    np.testing.assert_array_equal(sizes, group_sizes(np.random.default_rng(seed), N, n, True))
    assert len(np.unique(sizes)) > 1 and sizes.min() >= 1 and mask.shape[1] == sizes.max()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(mask, np.arange(mask.shape[1])[None, :] < sizes[:, None])  # prefix
    assert np.all(model.data["x"][mask == 0] == 0) and np.all(model.data["y"][mask == 0] == 0)

    flat = flatten_groups(model.data)
    assert len(flat["y"]) == flat["x"].shape[0] == model.num_obs == sizes.sum()
    np.testing.assert_array_equal(np.bincount(flat["group"], minlength=N), sizes)

    fixed = DATASETS[name](N=N, n=n, d=2, ragged=False, seed=seed)
    assert np.all(fixed.data["mask"] == 1) and fixed.num_obs == N * n


def test_simulate_matches_make():
    sim = hier_linear.simulate(N=5, n=4, d=2, ragged=True, seed=9)
    model = hier_linear.make(N=5, n=4, d=2, ragged=True, seed=9)
    for key in model.data:
        np.testing.assert_array_equal(sim.data[key], model.data[key])
    assert sim.theta.shape == (2,) and sim.z.shape == (5, 2)


def test_logistic_data_and_signal():
    sim = hier_logistic.simulate(N=50, n=40, d=3, seed=0)
    model = hier_logistic.make(N=50, n=40, d=3, seed=0)
    y = model.data["y"]
    assert set(np.unique(y)) <= {0.0, 1.0} and 0.2 < y.mean() < 0.8
    np.testing.assert_array_equal(sim.data["y"], y)
    # Same hierarchy and covariates as hier-linear with the same params: only y differs.
    linear = hier_linear.simulate(N=50, n=40, d=3, seed=0)
    np.testing.assert_array_equal(linear.data["x"], model.data["x"])
    np.testing.assert_array_equal(linear.z, sim.z)

    def mean_loglik(z):
        local = model.log_local(sim.theta, z, model.data)
        return (local - normal_logpdf(z, sim.theta).sum(-1)).sum() / model.num_obs

    assert mean_loglik(sim.z) > mean_loglik(np.zeros_like(sim.z)) + 0.1
    assert mean_loglik(np.zeros_like(sim.z)) == pytest.approx(-np.log(2.0))


# --------------------------------------------------------------------------- every dataset's contract


@pytest.fixture(scope="module")
def small_models():
    """One small instance per registered dataset (built once: movielens reads a 100k-row pickle)."""
    return {name: DATASETS[name](**SMALL_DATA_PARAMS[name]) for name in sorted(DATASETS)}


def _contract_draws(model, num_draws=3, seed=0):
    """θ ~ N(0, 0.5² I) and z ~ N(0, I): moderate values of any model's unconstrained parameters."""
    rng = np.random.default_rng(seed)
    theta = 0.5 * rng.standard_normal((num_draws, model.dim_global))
    return theta, rng.standard_normal((num_draws, model.num_groups, model.dim_local))


def _stan_program(name):
    path = resources.files("hierbench.datasets") / "stan" / (name.replace("-", "_") + ".stan")
    return path.read_text() if path.is_file() else None


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_small_params_are_valid(name):
    """Each dataset declares its small test instance (``TEST_PARAMS``) with parameters it accepts."""
    assert SMALL_DATA_PARAMS[name] == small_params(name)
    assert parse_params("dataset", name, small_params(name)) == small_params(name)


def test_a_dataset_without_test_params_says_where_to_add_them(monkeypatch):
    monkeypatch.delattr(hier_logistic, "TEST_PARAMS")
    with pytest.raises(AttributeError, match="hier_logistic declares no TEST_PARAMS"):
        small_params("hier-logistic")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_fields(name, small_models):
    model = small_models[name]
    N, L, G = model.num_groups, model.dim_local, model.dim_global
    assert model.name == name and N >= 1 and L >= 1 and G >= 1
    assert len(model.global_names) == G and len(set(model.global_names)) == G
    line = describe(DATASETS[name])
    assert line and "\n" not in line and DATASETS[name].__module__.startswith("hierbench.datasets.")
    assert isinstance(model.params, dict)
    for data in [model.data] + ([model.test_data] if model.test_data is not None else []):
        assert set(data) == set(model.data)
        for key, value in data.items():
            assert isinstance(value, np.ndarray) and value.dtype == np.float64, key
            assert value.shape[0] == N, key
        if "mask" in data:
            mask = data["mask"]
            assert mask.ndim == 2 and set(np.unique(mask)) <= {0.0, 1.0}
            sizes = mask.sum(1)
            np.testing.assert_array_equal(mask, np.arange(mask.shape[1])[None, :] < sizes[:, None])
            for key, value in data.items():
                assert value.shape[:2] == mask.shape, key
                assert np.all(value[mask == 0] == 0), key  # padding is zero
        else:  # one observation per group: no row axis
            assert all(value.ndim == 1 for value in data.values())
    assert model.num_obs == (int(model.data["mask"].sum()) if "mask" in model.data else N)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_backends_agree(name, small_models):
    model = small_models[name]
    theta, z = _contract_draws(model)
    N = model.num_groups
    want = _evaluate(model, theta, z, model.data)
    assert [w.shape for w in want] == [(3,), (3, N), (3,)]
    assert all(np.all(np.isfinite(w)) for w in want)
    _assert_backends_agree(model, theta, z, want)
    if model.log_lik is not None:
        want_lik = model.log_lik(theta[:, None, :], z, model.data)
        got_lik = model.log_lik(torch.asarray(theta)[:, None, :], torch.asarray(z), model.data)
        np.testing.assert_allclose(got_lik.numpy(), want_lik, rtol=1e-10)
    single = log_joint(model, theta[0], z[0], model.data)
    assert np.ndim(single) == 0 and float(single) == pytest.approx(want[2][0], rel=1e-12)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_jax_grad(name, small_models):
    model = small_models[name]
    theta, z = _contract_draws(model, seed=1)
    data = {k: jnp.asarray(v) for k, v in model.data.items()}

    def joint(t, zz):
        return jnp.sum(log_joint(model, t, zz, data))

    value = jax.jit(joint)(theta, z)
    assert value == pytest.approx(np.sum(log_joint(model, theta, z, model.data)), rel=1e-10)
    grad_theta, grad_z = jax.jit(jax.grad(joint, argnums=(0, 1)))(theta, z)
    assert grad_theta.shape == theta.shape and grad_z.shape == z.shape
    assert np.all(np.isfinite(grad_theta)) and np.all(np.isfinite(grad_z))
    # Minibatch of groups under jit: data sliced along the group axis.
    idx = jnp.array([0, model.num_groups - 1])
    mini = jax.jit(lambda t, zz: log_joint(model, t, zz[:, idx], {k: v[idx] for k, v in data.items()}))(
        theta, z
    )
    assert mini.shape == (3,) and np.all(np.isfinite(mini))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_log_lik(name, small_models):
    """log_local = log p(z | θ) + log_lik: the difference does not depend on the observations."""
    model = small_models[name]
    if model.log_lik is None:
        pytest.skip(f"{name} has no log_lik")
    theta, z = _contract_draws(model, seed=2)
    theta = theta[:, None, :]
    lik = model.log_lik(theta, z, model.data)
    assert lik.shape == (3, model.num_groups) and np.all(np.isfinite(lik))
    prior_z = model.log_local(theta, z, model.data) - lik
    other = dict(model.data, y=1.0 - model.data["y"] if name == "movielens-small" else model.data["y"] + 1.0)
    if "mask" in other:
        other["y"] = other["y"] * other["mask"]
    other_lik = model.log_lik(theta, z, other)
    assert not np.allclose(other_lik, lik)
    np.testing.assert_allclose(model.log_local(theta, z, other) - other_lik, prior_z, rtol=1e-10, atol=1e-9)
    if "mask" in model.data:  # no observed rows: log_lik is 0 and log_local is log p(z | θ)
        empty = dict(model.data, mask=np.zeros_like(model.data["mask"]))
        np.testing.assert_allclose(model.log_lik(theta, z, empty), 0.0, atol=0)
        np.testing.assert_allclose(model.log_local(theta, z, empty), prior_z, rtol=1e-10, atol=1e-9)
    if model.test_data is not None:
        held_out = model.log_lik(theta, z, model.test_data)
        assert held_out.shape == (3, model.num_groups) and np.all(np.isfinite(held_out))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_natural_draws(name, small_models):
    model = small_models[name]
    theta, z = _contract_draws(model, num_draws=4, seed=3)
    draws = natural_draws(model, theta, z)
    assert draws and all(v.shape[0] == 4 and np.all(np.isfinite(v)) for v in draws.values())
    names, matrix = flat_names(draws)
    assert matrix.shape == (4, len(names)) and len(set(names)) == len(names)
    assert len(names) == sum(int(np.prod(v.shape[1:])) for v in draws.values())
    for name_k, value in draws.items():
        first = f"{name_k}[{','.join(['1'] * (value.ndim - 1))}]" if value.ndim > 1 else name_k
        assert first in names
        np.testing.assert_array_equal(matrix[:, names.index(first)], value.reshape(4, -1)[:, 0])
    if model.natural is None:
        assert set(draws) == set(model.global_names) | {"z"}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_contract_stan_program(name, small_models):
    """A shipped Stan program (optional) has its data and declares every natural name (a parameter or
    transformed quantity)."""
    model = small_models[name]
    program = _stan_program(name)
    if program is None:
        pytest.skip(f"{name} ships no Stan program (optional: stan-nuts records it unavailable)")
    assert model.stan_data is not None, (
        f"{name} ships datasets/stan/{name.replace('-', '_')}.stan but no stan_data"
    )
    data_block = program[program.index("data {") : program.index("parameters {")]
    for key, value in model.stan_data.items():
        assert re.search(rf"\b{key}\s*;", data_block), f"stan_data[{key!r}] not declared"
        assert isinstance(value, (int, list, np.ndarray)) and not isinstance(value, bool), key
    declared = program[program.index("parameters {") :]
    theta, z = _contract_draws(model, num_draws=1)
    for key in natural_draws(model, theta, z):
        assert re.search(rf"^\s*[^/\n]*\b{key}\s*(=|;)", declared, re.M), f"{key} not declared"


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_row_layout_gives_the_same_joint(name, monkeypatch):
    """The size-bucketed layout (NUTS, scoring and full-data VI steps use it where groups are ragged)
    equals the padded joint in numpy, JAX and torch, and pads less."""
    from hierbench.datasets import base

    monkeypatch.setattr(base, "ROW_LAYOUT_MIN_WASTE", 0.0)  # use it even where padding is cheap
    model = DATASETS[name](**SMALL_DATA_PARAMS[name])
    layout = base.row_layout(model)
    if "mask" not in model.data:
        assert layout is None
        return
    assert sorted(np.concatenate([b["index"] for b in layout])) == list(range(model.num_groups))
    assert sum(b["data"]["mask"].size for b in layout) <= 2 * model.num_obs
    rng = np.random.default_rng(5)
    theta = 0.5 * rng.normal(size=(3, model.dim_global))
    z = rng.normal(size=(3, model.num_groups, model.dim_local))
    want = log_joint(model, theta, z, model.data)
    np.testing.assert_allclose(base.log_joint_rows(model, theta, z, layout), want, rtol=1e-12)
    as_jax = jax.tree.map(jnp.asarray, layout)
    got = base.log_joint_rows(model, jnp.asarray(theta), jnp.asarray(z), as_jax)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    as_torch = jax.tree.map(torch.as_tensor, layout)
    got = base.log_joint_rows(model, torch.as_tensor(theta), torch.as_tensor(z), as_torch)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    f, packed = base.full_data_log_joint(model)
    np.testing.assert_allclose(f(theta, z, packed), want, rtol=1e-12)


@pytest.mark.parametrize("name", ["hier-linear", "hier-logistic"])
def test_simulated_data_too_big_for_the_machine_is_refused_before_generating(name):
    """N = 10⁹ groups would take terabytes: a ParamError (exit 2) with the estimate and the limit, at
    once (validate_params, which sweeps call before anything runs), not a MemoryError half-way."""
    import time

    from hierbench.registry import build_model

    t0 = time.perf_counter()
    with pytest.raises(ParamError, match=r"GiB to generate, more than the .* GiB limit"):
        build_model(name, {"N": 10**9})
    assert time.perf_counter() - t0 < 5.0
