"""stan-nuts: backend choice, draw layouts (no compilation), and slow PyStan runs against exact
posteriors, the model's own log density and numpyro's NUTS."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types

import numpy as np
import pytest

from hierbench.datasets import DATASETS, hier_linear, hier_logistic
from hierbench.datasets.base import ParamError, log_joint
from hierbench.methods import stan_nuts
from hierbench.methods.base import Posterior, Unavailable


@pytest.fixture
def small_linear():
    return hier_linear.make(N=4, n=3, d=2)


def _pystan_available() -> bool:
    return stan_nuts._pystan_problem() is None


needs_pystan = pytest.mark.skipif(not _pystan_available(), reason=f"no PyStan 3: {stan_nuts.INSTALL_HINT}")


# --------------------------------------------------------------------------------------------------
# Programs and data


def test_missing_program_is_unavailable_and_missing_data_a_param_error(small_linear):
    message = "unavailable: no Stan program for no-such-model (datasets/stan/no_such_model.stan)"
    with pytest.raises(Unavailable) as err:
        stan_nuts.make(dataclasses.replace(small_linear, name="no-such-model"))
    assert str(err.value) == message
    with pytest.raises(ParamError, match="ships datasets/stan/hier_linear.stan but no stan_data"):
        stan_nuts.make(dataclasses.replace(small_linear, stan_data=None))


@pytest.mark.parametrize(
    "method", ["stan-nuts", "stan-advi-meanfield", "stan-advi-fullrank", "stan-pathfinder"]
)
def test_a_dataset_without_a_stan_program_is_recorded_unavailable(method, monkeypatch):
    """A Stan program is optional: a dataset without one gets status 'unavailable' from every Stan entry,
    whether or not Stan itself is installed."""
    from hierbench.harness import run_one

    def make_unstanned(N: int = 4):
        """hier-linear under another name, with no datasets/stan/ program."""
        return dataclasses.replace(hier_linear.make(N=N, n=3, d=2), name="no-stan-model")

    monkeypatch.setitem(DATASETS, "no-stan-model", make_unstanned)
    rec = run_one(method, "no-stan-model", {}, steps=10, references=None)
    assert rec["status"] == "unavailable"
    assert rec["error"] == "unavailable: no Stan program for no-stan-model (datasets/stan/no_stan_model.stan)"


@pytest.mark.parametrize("module", [hier_linear, hier_logistic])
def test_stan_data_matches_program_data_block(module):
    model = module.make(N=5, n=4, d=3, ragged=True, seed=1)
    program = stan_nuts.stan_program(model)
    block = re.search(r"\bdata\s*\{(.*?)\n\}", program, re.S).group(1)
    declared = re.findall(r"(\w+)\s*;", re.sub(r"//.*", "", block))
    assert sorted(declared) == sorted(model.stan_data)
    data, mask = model.stan_data, model.data["mask"].astype(bool)
    assert data["M"] == model.num_obs == len(data["y"]) == len(data["group"]) == data["x"].shape[0]
    assert (data["N"], data["d"]) == (5, 3)
    assert data["group"].min() == 1 and data["group"].max() == 5  # 1-based
    np.testing.assert_array_equal(np.bincount(data["group"] - 1), mask.sum(1))
    np.testing.assert_array_equal(data["y"], model.data["y"][mask])
    np.testing.assert_array_equal(data["x"], model.data["x"][mask])


def test_natural_names_are_stan_names(small_linear):
    assert stan_nuts.natural_shapes(small_linear) == {"theta": (2,), "z": (4, 2)}


# --------------------------------------------------------------------------------------------------
# Backend choice


def test_bad_params(small_linear):
    with pytest.raises(ParamError, match="backend"):
        stan_nuts.make(small_linear, backend="rstan")
    with pytest.raises(ParamError, match="target_accept"):
        stan_nuts.make(small_linear, target_accept=1.0)
    with pytest.raises(ParamError, match="chains"):
        stan_nuts.make(small_linear, chains=0)


@pytest.mark.parametrize("backend", ["pystan", "cmdstanpy", "auto"])
def test_missing_backend_is_unavailable_and_names_the_install(monkeypatch, small_linear, backend):
    monkeypatch.setitem(sys.modules, "stan", None)  # `import stan` raises ImportError
    monkeypatch.setitem(sys.modules, "cmdstanpy", None)
    with pytest.raises(Unavailable) as err:
        stan_nuts.make(small_linear, backend=backend)
    message = str(err.value)
    assert "pip install pystan==3.10.0" in message and "cmdstanpy" in message


def test_auto_falls_back_to_pystan_without_cmdstan(monkeypatch):
    fake = types.ModuleType("cmdstanpy")

    def no_cmdstan():
        raise ValueError("No CmdStan installation found")

    fake.cmdstan_path = no_cmdstan
    monkeypatch.setitem(sys.modules, "cmdstanpy", fake)
    monkeypatch.setitem(sys.modules, "stan", types.ModuleType("stan"))
    assert stan_nuts.resolve_backend("auto") == "pystan"
    with pytest.raises(Unavailable, match="no CmdStan installation"):
        stan_nuts.resolve_backend("cmdstanpy")


# --------------------------------------------------------------------------------------------------
# cmdstanpy, mocked


def _code(chain, draw, k):
    """A value that says which chain, draw and coordinate it is."""
    return 1e6 * chain + 1e3 * draw + k


def _fake_cmdstanpy(shapes, calls):
    """A cmdstanpy module whose fits follow its documented layouts: ``stan_variable`` ``(C·S, *shape)``
    chain by chain, ``method_variables`` ``(S, C)``."""

    class FakeFit:
        def __init__(self, chains, draws):
            self.chains, self.draws = chains, draws

        def stan_variable(self, name):
            shape = shapes[name]
            size = int(np.prod(shape, dtype=int))
            axes = np.arange(self.chains), np.arange(self.draws), np.arange(size)
            c, s, k = np.meshgrid(*axes, indexing="ij")
            return _code(c, s, k).reshape(self.chains * self.draws, *shape)

        def method_variables(self):
            s, c = np.meshgrid(np.arange(self.draws), np.arange(self.chains), indexing="ij")
            return {
                "lp__": -_code(c, s, 0),
                "divergent__": ((c == 1) & (s == 2)).astype(float),
                "energy__": _code(c, s, 0),
                "n_leapfrog__": (c + 1.0) * np.ones_like(s),
            }

    class FakeModel:
        def __init__(self, stan_file):
            calls.append(("compile", stan_file))

        def sample(self, **kwargs):
            calls.append(("sample", kwargs))
            return FakeFit(kwargs["chains"], kwargs["iter_sampling"])

    module = types.ModuleType("cmdstanpy")
    module.CmdStanModel = FakeModel
    module.cmdstan_path = lambda: "/opt/cmdstan"
    module.cmdstan_version = lambda: (2, 36)
    module.__version__ = "1.2.5"
    return module


def test_cmdstanpy_backend_with_a_mock(monkeypatch, tmp_path, small_linear):
    monkeypatch.setenv("HIERBENCH_CACHE_DIR", str(tmp_path))
    calls: list = []
    shapes = stan_nuts.natural_shapes(small_linear)
    monkeypatch.setitem(sys.modules, "cmdstanpy", _fake_cmdstanpy(shapes, calls))

    sampler = stan_nuts.make(small_linear, chains=3, warmup=7, draws=5, target_accept=0.8, max_tree_depth=6)
    assert sampler.config["backend"] == "cmdstanpy"  # "auto" prefers CmdStan when it is there
    post = sampler.run(42)

    assert isinstance(post, Posterior) and post.theta is None and post.z is None
    assert {k: v.shape for k, v in post.natural.items()} == {"theta": (3, 5, 2), "z": (3, 5, 4, 2)}
    for c in range(3):
        for s in range(5):
            np.testing.assert_array_equal(post.natural["z"][c, s].ravel(), _code(c, s, np.arange(8)))
    assert post.stats["diverging"].dtype == bool and post.stats["diverging"].sum() == 1
    assert post.stats["diverging"][1, 2]
    np.testing.assert_array_equal(post.stats["num_steps"], np.repeat([[1], [2], [3]], 5, axis=1))
    assert post.stats["energy"][2, 4] == _code(2, 4, 0)

    (_, stan_file), (_, kwargs) = calls
    assert stan_file.startswith(str((tmp_path / "cmdstan").resolve()))
    assert open(stan_file).read() == stan_nuts.stan_program(small_linear)
    assert kwargs["data"] is not None and kwargs["seed"] == 42
    assert (kwargs["chains"], kwargs["iter_warmup"], kwargs["iter_sampling"]) == (3, 7, 5)
    assert (kwargs["adapt_delta"], kwargs["max_treedepth"]) == (0.8, 6)
    assert post.settings["stan_version"] == "2.36" and post.settings["seed"] == 42
    assert post.settings["sampler"] == "stan-nuts" and post.settings["backend"] == "cmdstanpy"

    with pytest.raises(ParamError, match="seed"):
        sampler.run(-1)
    with pytest.raises(ParamError, match="seed"):
        sampler.run(2**32)


def test_stan_nuts_record_has_moments_diagnostics_gate_and_its_backend(monkeypatch, tmp_path):
    """A stan-nuts record carries the natural moments, the same diagnostics and gate as nuts, and
    the backend that ran it (here a mocked CmdStan: its coded draws fail the gate)."""
    from hierbench.harness import run_one

    monkeypatch.setenv("HIERBENCH_CACHE_DIR", str(tmp_path))
    model = hier_linear.make(N=4, n=3, d=2)
    monkeypatch.setitem(sys.modules, "cmdstanpy", _fake_cmdstanpy(stan_nuts.natural_shapes(model), []))
    params = {"chains": 3, "warmup": 7, "draws": 5}
    rec = run_one("stan-nuts", "hier-linear", {"N": 4, "n": 3, "d": 2}, params, references=None)
    assert rec["status"] == "ok" and rec["backend"] == "cmdstanpy"
    assert set(rec["natural_mean"]) == set(rec["natural_sd"]) >= {"theta[1]", "z[4,2]"}
    assert set(rec["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "divergences", "ebfmi_min"}
    assert rec["diagnostics"]["divergences"] == 1 and rec["gate_passed"] is False
    assert any(m.startswith("divergences") for m in rec["failed_checks"])


def test_split_cmdstanpy_scalars():
    values = np.arange(12.0)  # 3 chains x 4 draws, chain by chain
    np.testing.assert_array_equal(stan_nuts.split_cmdstanpy(values, 3, ()), values.reshape(3, 4))
    np.testing.assert_array_equal(stan_nuts.split_cmdstanpy(values[:, None], 3, ()), values.reshape(3, 4))


# --------------------------------------------------------------------------------------------------
# PyStan's draw layout, on a real stan.fit.Fit built from synthetic Stan output (no compilation)


@needs_pystan
def test_split_pystan_keeps_chains_apart():
    from stan.fit import Fit

    chains, draws, N, d = 3, 4, 3, 2
    flat = [f"theta.{k}" for k in (1, 2)] + [f"z.{i}.{k}" for k in (1, 2) for i in (1, 2, 3)]  # column-major
    sampler_params = ["lp__", "accept_stat__", "stepsize__", "treedepth__", "n_leapfrog__", "divergent__"]
    outputs = []
    for c in range(chains):
        lines = []
        for s in range(draws):
            values = dict.fromkeys(sampler_params, 0.0) | {"energy__": _code(c, s, 0)}
            values["divergent__"] = float(c == 2 and s == 1)
            values |= {name: _code(c, s, j) for j, name in enumerate(flat)}
            lines.append(json.dumps({"version": 1, "topic": "sample", "values": values}))
        outputs.append("\n".join(lines).encode())
    dims = ([2], [N, d])  # lists, as httpstan's JSON gives them
    fit = Fit(tuple(outputs), chains, ("theta", "z"), tuple(flat), dims, 0, draws, 1, False)

    z = stan_nuts.split_pystan(fit, "z", (N, d))
    theta = stan_nuts.split_pystan(fit, "theta", (d,))
    assert z.shape == (chains, draws, N, d) and theta.shape == (chains, draws, d)
    for c in range(chains):
        for s in range(draws):
            np.testing.assert_array_equal(theta[c, s], [_code(c, s, 0), _code(c, s, 1)])
            for i in range(N):
                for k in range(d):
                    assert z[c, s, i, k] == _code(c, s, flat.index(f"z.{i + 1}.{k + 1}"))
    energy = stan_nuts.split_pystan(fit, "energy__", ())
    assert energy.shape == (chains, draws) and energy[2, 3] == _code(2, 3, 0)
    diverging = stan_nuts.split_pystan(fit, "divergent__", ())
    assert diverging[2, 1] == 1 and diverging.sum() == 1


@needs_pystan
def test_pystan_build_error_is_raised_and_logged(monkeypatch, caplog, small_linear):
    """A broken program fails in stanc (no C++ compile, about a second); its message is logged."""
    monkeypatch.setattr(stan_nuts, "stan_program", lambda model: "parameters { real x } model { }")
    sampler = stan_nuts.make(small_linear, backend="pystan")
    with caplog.at_level("WARNING", logger="hierbench.methods.stan_nuts"), pytest.raises(ValueError):
        sampler.run(0)
    assert "Syntax error" in caplog.text


# --------------------------------------------------------------------------------------------------
# Slow: real PyStan runs (compiling a model takes about a minute; the build is cached)


def _mcse(draws: dict[str, np.ndarray], method: str = "mean") -> dict[str, np.ndarray]:
    import arviz

    dataset = arviz.convert_to_dataset({k: np.asarray(v, dtype=np.float64) for k, v in draws.items()})
    result = arviz.mcse(dataset, method=method)
    return {k: np.asarray(result[k].values) for k in draws}


def _report(name: str, post: Posterior) -> None:
    print(f"\n[stan-nuts {name}] compile_s={post.compile_s:.1f} sample_s={post.sample_s:.2f}")


@pytest.mark.slow
@needs_pystan
def test_pystan_matches_exact_hier_linear():
    model = hier_linear.make(N=5, n=5, d=2)
    post = stan_nuts.make(model, backend="pystan").run(1)
    _report("hier-linear", post)
    assert post.settings["backend"] == "pystan" and post.stats["diverging"].sum() == 0

    exact = model.exact
    z_mean, z_cov = exact.local_marginals()
    expected_mean = {"theta": exact.global_mean, "z": z_mean}
    expected_sd = {"theta": np.sqrt(np.diag(exact.global_cov)), "z": np.sqrt(np.diagonal(z_cov, 0, -2, -1))}
    mcse_mean, mcse_sd = _mcse(post.natural), _mcse(post.natural, "sd")
    for name, draws in post.natural.items():
        mean_err = np.abs(draws.mean((0, 1)) - expected_mean[name])
        sd_err = np.abs(draws.std((0, 1)) - expected_sd[name])
        assert np.all(mean_err < 4 * mcse_mean[name]), (name, mean_err / mcse_mean[name])
        assert np.all(sd_err < 4 * mcse_sd[name]), (name, sd_err / mcse_sd[name])

    again = stan_nuts.make(model, backend="pystan").run(1)  # cached build; the fit is not cached
    assert again.compile_s < post.compile_s or post.compile_s < 5
    for name in post.natural:
        np.testing.assert_array_equal(again.natural[name], post.natural[name])
    np.testing.assert_array_equal(again.stats["energy"], post.stats["energy"])
    other = stan_nuts.make(model, backend="pystan").run(2)
    assert not np.array_equal(other.natural["z"], post.natural["z"])


@pytest.mark.slow
@needs_pystan
@pytest.mark.parametrize("module", [hier_linear, hier_logistic])
def test_stan_log_density_is_the_models(module):
    """Stan's log density (all constants kept) equals hierbench's log_joint at random points."""
    model = module.make(N=4, n=6, d=3, ragged=True, seed=2)
    stan = stan_nuts._import_pystan()
    stan_nuts._use_project_cache_for_httpstan()
    with stan_nuts._captured_output(stderr_fd=True):
        posterior = stan.build(stan_nuts.stan_program(model), data=model.stan_data, random_seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        theta, z = rng.normal(size=3), rng.normal(size=(4, 3))
        unconstrained = np.concatenate([theta, z.ravel(order="F")])  # Stan's matrix order: column-major
        expected = log_joint(model, theta, z, model.data)
        with stan_nuts._captured_output():
            got = posterior.log_prob(unconstrained.tolist())
        assert got == pytest.approx(float(expected), rel=1e-10, abs=1e-8)


@pytest.mark.slow
@needs_pystan
@pytest.mark.parametrize(
    ("name", "params"), [("eight-schools", {}), ("hier-logistic", {"N": 8, "n": 10, "d": 2})]
)
def test_stan_and_numpyro_agree(name, params):
    from hierbench.methods import nuts

    model = DATASETS[name](**params)
    stan_post = stan_nuts.make(model, chains=4, warmup=1000, draws=1000, backend="pystan").run(11)
    _report(name, stan_post)
    ref = nuts.make(model, chains=4, warmup=1000, draws=1000).run(11)
    print(f"[numpyro-nuts {name}] compile_s={ref.compile_s:.1f} sample_s={ref.sample_s:.2f}")

    assert set(stan_post.natural) == set(ref.natural)
    mcse_stan, mcse_ref = _mcse(stan_post.natural), _mcse(ref.natural)
    for key in stan_post.natural:
        diff = np.abs(stan_post.natural[key].mean((0, 1)) - ref.natural[key].mean((0, 1)))
        tol = 4 * np.hypot(mcse_stan[key], mcse_ref[key])
        assert np.all(diff < tol), (key, diff / tol * 4)
