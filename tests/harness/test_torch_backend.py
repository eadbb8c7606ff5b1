"""The PyTorch backend against JAX: the same draws give the same numbers, the same init the same fit.

The families and the −ELBO estimate are one array-API code path on both backends; these tests check
that the two libraries evaluate it alike.  One real step of each backend runs — JAX's ``make_vi``
step (jitted: eager JAX compiles every primitive), returning what ``jax.random.normal`` and the
minibatch sampler drew, and the torch runner's step fed those same draws — and the loss (the
minibatch ELBO estimate), the gradients (JAX's from Adam's first moment, m₁ = (1 − b1)·g), the
updated parameters, and q's draws and log density are compared in float64.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from hierbench.cli import main
from hierbench.datasets.base import row_layout
from hierbench.harness import run_one
from hierbench.harness.backends.torch_backend import (
    ADAM_B1,
    ADAM_B2,
    ADAM_EPS,
    TorchBackend,
    TorchRunner,
    adam,
    cosine_factor,
    to_numpy,
    tree_map,
)
from hierbench.methods import METHODS, vi
from hierbench.methods.base import TrainConfig
from hierbench.records import read_records
from hierbench.registry import build_model
from hierbench.scoring import Scorer


def run_torch(method, dataset, data_params=None, method_params=None, **kwargs):
    return run_one(method, dataset, data_params, method_params, backend="torch", **kwargs)


SMALL = {"N": 6, "n": 5, "d": 3, "seed": 0}
RAGGED = {"N": 12, "n": 4, "d": 2, "ragged": True, "seed": 3}  # padding > 1.25× the data: size buckets
NET = {"width": 8, "batch_groups": 4}

# (method, method params): every family, both amortized heads, with and without conditioning on θ,
# STL on and off, full data and minibatches.
CASES = {
    "meanfield": ("meanfield", {}),
    "dense": ("dense", {}),
    "dense-no-stl": ("dense", {"stl": False}),
    "lowrank": ("lowrank", {"rank": 2}),
    "branch": ("branch", {}),
    "branch-minibatch": ("branch", {"batch_groups": 4}),
    "amortized-moments": ("amortized", NET | {"head": "moments"}),
    "amortized-potential": ("amortized", NET | {"head": "potential", "potential_rank": 2}),
    "amortized-moments-unconditioned": ("amortized", NET | {"head": "moments", "condition_on_theta": False}),
    "amortized-potential-unconditioned": (
        "amortized",
        NET | {"head": "potential", "condition_on_theta": False},
    ),
}


FAST_TRAIN = {"N": 8, "n": 10, "d": 2, "seed": 0}
TRAIN_CASES = {  # (method, params, steps at FAST_TRAIN)
    "meanfield": ("meanfield", {}, 1000),
    "dense": ("dense", {}, 1000),
    "lowrank": ("lowrank", {"rank": 2}, 1000),
    "branch": ("branch", {}, 600),
    "amortized-moments": ("amortized", {"head": "moments", "width": 16, "batch_groups": 4}, 1000),
    "amortized-potential": ("amortized", {"head": "potential", "width": 16, "batch_groups": 4}, 1000),
}


N100 = {"N": 100, "n": 20, "d": 10, "seed": 0}
N100_PARAMS = {"amortized": {"width": 64, "batch_groups": 32}, "lowrank": {"rank": 5}}  # the defaults
# steps at N100 (the budgets of `make bench`; dense's D=1010 runs ~30 steps/s)
N100_STEPS = {
    "meanfield": 3000,
    "dense": 1500,
    "lowrank": 3000,
    "branch": 4000,
    "amortized-moments": 4000,
    "amortized-potential": 4000,
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These problems are tiny: one intra-op thread is fastest, and spinning OpenMP workers on a busy
    2-core machine slow torch down several-fold (measured: 7x at load 9)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One case per family runs by default; the other variants (and data sets) are slow tests.
FAST_CASES = ["meanfield", "dense", "lowrank", "branch-minibatch", "amortized-moments", "amortized-potential"]


def cases(names: list[str], fast: list[str]) -> list:
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


def close(torch_value, jax_value, rtol: float = 1e-6) -> None:
    """Elementwise within ``rtol`` of the larger magnitude of the array (gradients can cross zero)."""
    a, b = np.asarray(torch_value), np.asarray(jax_value)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1e-300, float(np.max(np.abs(b)))))


def trees_close(torch_tree, jax_tree, rtol: float = 1e-6) -> None:
    jax.tree.map(lambda a, b: close(a, b, rtol), to_numpy(torch_tree), jax.tree.map(np.asarray, jax_tree))


class Recorder:
    """Records what ``jax.random.normal`` and the minibatch sampler
    (:func:`~hierbench.methods.vi.choice_without_replacement`) return, in call order.

    :meth:`jit` jits a function to return its output and the recorded draws (the draws never depend on
    the differentiated parameters, so they are plain values of the jit trace); the compiled function
    is reusable, step after step.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.normals: list = []
        self.choices: list = []
        real_normal, real_choice = jax.random.normal, vi.choice_without_replacement

        def normal(*args, **kwargs):
            out = real_normal(*args, **kwargs)
            self.normals.append(out)
            return out

        def choice(*args, **kwargs):
            out = real_choice(*args, **kwargs)
            self.choices.append(out)
            return out

        monkeypatch.setattr(jax.random, "normal", normal)
        monkeypatch.setattr(vi, "choice_without_replacement", choice)

    def jit(self, fn):
        def recorded(*args):
            self.normals, self.choices = [], []
            return fn(*args), self.normals, self.choices

        return jax.jit(recorded)


def noise_from(runner: TorchRunner, normals: list, choices: list) -> tuple[list, list]:
    """The torch step's positions and normals from what one JAX step drew (checking the torch runner
    asks for the same draws, in the same order, as the JAX step makes)."""
    spec = runner.spec
    positions = [torch.tensor(np.asarray(c)).long() for c in choices]
    assert [len(p) for p in positions] == [s.alloc for s in spec.batches.strata]
    shapes = [spec.family.noise_shapes(spec.train.num_samples, b) for b in spec.batches.groups_per_pick]
    # a training step draws its normals in float32 and casts them (methods/vi.py): the same cast here
    eps = [torch.tensor(np.asarray(a).astype(spec.train.dtype)) for a in normals]
    noise, i = [], 0
    for pick_shapes in shapes:
        noise.append(eps[i : i + len(pick_shapes)])
        i += len(pick_shapes)
    assert i == len(eps) and [[e.shape for e in n] for n in noise] == [
        [torch.Size(x) for x in p] for p in shapes
    ]
    return positions, noise


def setup_both(dataset: str, data_params: dict, method: str, method_params: dict, steps: int = 100):
    """The JAX method, its step data, an initial state, and a torch runner started from that state."""
    model = build_model(dataset, data_params)
    algo = METHODS[method](model, steps=steps, **method_params)
    data = jax.tree.map(jnp.asarray, algo.batches.arrays("float64"))
    state0 = algo.init(jax.random.key(1))
    runner = TorchRunner(algo, 1, 1, TorchBackend())
    runner.init_params = tree_map(np.asarray, state0.params)
    return model, algo, data, state0, runner, runner.new_state()


def one_step_both(monkeypatch, dataset: str, data_params: dict, method: str, method_params: dict):
    """A JAX step and a torch step from the same parameters on the same draws."""
    model, algo, data, state0, runner, tstate = setup_both(dataset, data_params, method, method_params)
    (state1, info), normals, choices = Recorder(monkeypatch).jit(algo.step)(jax.random.key(2), state0, data)
    loss = runner.step_on(tstate, *noise_from(runner, normals, choices))
    return model, algo, data, state0, state1, info, runner, tstate, loss


def adam_mu(opt_state):
    return next(s.mu for s in opt_state if hasattr(s, "mu"))


@pytest.mark.parametrize("case", cases(list(CASES), FAST_CASES))
def test_same_draws_same_elbo_and_gradients(case, monkeypatch):
    method, params = CASES[case]
    _, algo, _, _, state1, info, vi, tstate, loss = one_step_both(
        monkeypatch, "hier-linear", SMALL, method, params
    )
    close(loss, info.neg_elbo)
    grads_jax = jax.tree.map(lambda m: m / (1.0 - ADAM_B1), adam_mu(state1.opt_state))
    trees_close(tree_map(lambda p: p.grad, tstate.params), grads_jax)
    trees_close(tstate.params, state1.params)  # the same Adam update


@pytest.mark.parametrize(
    "case", cases(["meanfield", "lowrank", "branch", "amortized-moments", "amortized-potential"], ["branch"])
)
def test_same_draws_same_q(case, monkeypatch):
    """θ, z and log q(θ, z) of the full-data sampler (what scoring uses) on the same normals."""
    method, params = CASES[case]
    model, algo, _, state0, runner, tstate = setup_both("hier-linear", SMALL, method, params)
    data = {k: jnp.asarray(v) for k, v in model.data.items()}
    sample = Recorder(monkeypatch).jit(lambda key, params, data: algo.sample(key, params, data, 7))
    draws, normals, _ = sample(jax.random.key(6), state0.params, data)
    eps = [torch.tensor(np.asarray(a)) for a in normals]
    tdata = {k: torch.tensor(v) for k, v in model.data.items()}
    family = runner.spec.family
    theta, z = family.draw(tstate.params, eps, None, tdata)
    lq_global, lq_local = family.log_q(tstate.params, theta, z, None, tdata)
    close(theta.detach(), draws.theta, 1e-10)
    close(z.detach(), draws.z, 1e-10)
    close((lq_global + lq_local).detach(), draws.log_q, 1e-10)


@pytest.mark.parametrize(
    "dataset, data_params, case",
    [
        ("hier-linear", RAGGED, "branch"),  # full data on the size buckets (log_joint_rows on torch)
        ("hier-linear", RAGGED, "branch-minibatch"),  # minibatches stratified by group size
        pytest.param("hier-linear", RAGGED, "amortized-potential", marks=pytest.mark.slow),
        pytest.param("hier-logistic", SMALL, "meanfield", marks=pytest.mark.slow),
        ("hier-logistic", SMALL, "amortized-moments"),  # a non-Gaussian likelihood
        pytest.param("eight-schools", {}, "branch", marks=pytest.mark.slow),
        ("eight-schools", {}, "amortized-moments"),  # one row per group, no mask
    ],
)
def test_same_draws_same_gradients_other_data(dataset, data_params, case, monkeypatch):
    method, params = CASES[case]
    model, _, _, _, state1, info, runner, tstate, loss = one_step_both(
        monkeypatch, dataset, data_params, method, params
    )
    if data_params is RAGGED:
        assert row_layout(model) is not None and runner.spec.batches.describe()["row_layout"]
    close(loss, info.neg_elbo)
    grads_jax = jax.tree.map(lambda m: m / (1.0 - ADAM_B1), adam_mu(state1.opt_state))
    trees_close(tree_map(lambda p: p.grad, tstate.params), grads_jax)


def lockstep(monkeypatch, data_params: dict, method: str, params: dict, steps: int) -> None:
    """Train both backends from the same init on the same draws, step by step: the same losses, the
    same final parameters and the same final ELBO (the JAX scorer, one key, on both fits)."""
    model, algo, data, state, runner, tstate = setup_both("hier-linear", data_params, method, params, steps)
    step = Recorder(monkeypatch).jit(algo.step)
    losses_jax, losses_torch = [], []
    for key in jax.random.split(jax.random.key(3), steps):
        (state, info), normals, choices = step(key, state, data)
        losses_jax.append(float(info.neg_elbo))
        losses_torch.append(float(runner.step_on(tstate, *noise_from(runner, normals, choices))))
    close(losses_torch, losses_jax)
    trees_close(tstate.params, state.params)
    scorer = Scorer(model, algo, num_draws=1000)
    score_jax = scorer(jax.random.key(4), state.params)
    score_torch = scorer(jax.random.key(4), to_numpy(tstate.params))
    assert score_torch["elbo"] == pytest.approx(score_jax["elbo"], rel=1e-8)


@pytest.mark.parametrize("case", cases(list(TRAIN_CASES), ["branch", "amortized-potential"]))
def test_lockstep_training_small(case, monkeypatch):
    method, params, _ = TRAIN_CASES[case]
    lockstep(monkeypatch, FAST_TRAIN, method, params, 100)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_lockstep_training_n100(case, monkeypatch):
    """hier-linear N=100 (d=10, n=20), every family, 300 steps on the same draws."""
    method, params, _ = TRAIN_CASES[case]
    lockstep(monkeypatch, N100, method, params | N100_PARAMS.get(method, {}), 300)


def test_every_make_vi_method_runs_on_torch_and_others_are_refused():
    """Every method built by make_vi carries the spec the torch backend trains; samplers and other
    libraries' VI (numpyro's SVI) are refused with a message."""
    model = build_model("hier-linear", SMALL)
    for name in ("meanfield", "dense", "lowrank", "branch", "amortized"):
        assert METHODS[name](model, steps=10).vi is not None
    rec = run_one("nuts", "eight-schools", backend="torch", references=None)
    assert rec["status"] == "error" and "VI methods only" in rec["error"]
    rec = run_one("numpyro-autonormal", "hier-linear", SMALL, steps=10, backend="torch", references=None)
    assert rec["status"] == "error" and "no torch step" in rec["error"]


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_adam_and_schedule_match_optax(schedule):
    defaults = inspect.signature(optax.adam).parameters
    assert defaults["b1"].default == ADAM_B1 and defaults["b2"].default == ADAM_B2
    assert defaults["eps"].default == ADAM_EPS and defaults["eps_root"].default == 0.0
    assert not defaults["nesterov"].default
    train = TrainConfig(steps=40, lr=0.05, schedule=schedule)
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=6)
    # gradients from ~eps to 10 in scale; 60 updates run past the schedule's end (it clamps at `steps`)
    grads = rng.normal(size=(60, 6)) * np.logspace(-8, 1, 6)
    opt = train.optimizer()
    params = jnp.asarray(x0)
    opt_state = opt.init(params)
    p = torch.tensor(x0, requires_grad=True)
    t_opt, t_sched = adam([p], train.lr, train.steps, train.schedule)
    for g in grads:
        updates, opt_state = opt.update(jnp.asarray(g), opt_state, params)
        params = optax.apply_updates(params, updates)
        p.grad = torch.from_numpy(g)
        t_opt.step()
        t_sched.step()
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(params), rtol=1e-12, atol=1e-15)
    if schedule == "cosine":
        sched = optax.cosine_decay_schedule(train.lr, train.steps, alpha=1e-3)
        for count in (0, 1, 17, 39, 40, 55):
            assert train.lr * cosine_factor(count, train.steps) == pytest.approx(
                float(sched(count)), rel=1e-12
            )


def _agree(recs_jax: list[dict], recs_torch: list[dict]) -> None:
    """The mean final ELBO of R trained runs per backend agrees within 3 standard errors.

    A trained run's final ELBO varies from seed to seed by more than its evaluation SE: the
    optimizer's draws move the end point (for minibatch families about 5× the evaluation SE at
    FAST_TRAIN; measured 0.055 against 0.011 nats for amortized-moments).  So each backend trains
    with R seeds (its own random streams), and the SE of the difference of the two means is
    ``s·√(2/R)``, with ``s²`` the variance over seeds pooled over both backends, and never below the
    evaluation SE (so that a chance-small spread cannot make the test stricter than the scorer).
    """
    for rec in recs_jax + recs_torch:
        assert rec["status"] == "ok", rec.get("error")
    e_jax = np.array([r["elbo"] for r in recs_jax])
    e_torch = np.array([r["elbo"] for r in recs_torch])
    r = len(e_jax)
    assert r == len(e_torch) >= 2
    eval_var = np.mean([r_["elbo_se"] ** 2 for r_ in recs_jax + recs_torch])
    var = max((e_jax.var(ddof=1) + e_torch.var(ddof=1)) / 2, eval_var)
    se = math.sqrt(var * 2 / r)
    gap = abs(e_jax.mean() - e_torch.mean())
    means = f"jax {e_jax.mean():.4f} (sd {e_jax.std(ddof=1):.4f}), torch {e_torch.mean():.4f}"
    means += f" (sd {e_torch.std(ddof=1):.4f})"
    print(
        f"ELBO over {r} seeds: {means}, eval se {math.sqrt(eval_var):.4f}; gap {gap:.3g} = {gap / se:.2f} SE;"
        f" KL jax {np.mean([r_['kl'] for r_ in recs_jax]):.4g}"
    )
    assert gap <= 3 * se, f"mean ELBO {means}: {gap:.3g} > 3·{se:.3g}"


def _trained_pair(method: str, data: dict, params: dict, seeds: range, **kwargs) -> tuple[list, list]:
    recs_jax = [run_one(method, "hier-linear", data, params, seed=s, **kwargs) for s in seeds]
    recs_torch = [run_torch(method, "hier-linear", data, params, seed=s, **kwargs) for s in seeds]
    _check_torch_record(recs_jax[0], recs_torch[0])
    return recs_jax, recs_torch


def _check_torch_record(rec_jax: dict, rec: dict) -> None:
    assert set(rec_jax) <= set(rec)  # the same record shape, plus torch fields
    assert rec["backend"] == "torch" and rec_jax["backend"] == "jax"
    assert rec["torch_version"] == torch.__version__ and rec["torch_threads"] == torch.get_num_threads()
    assert rec["compile_s"] >= 0 and rec["wall_s"] > 0 and rec["steps"] == rec_jax["steps"]
    assert [p["step"] for p in rec["trace"]] == [p["step"] for p in rec_jax["trace"]]
    # same init, same scoring keys: the step-0 scores are identical
    assert rec["trace"][0]["elbo"] == pytest.approx(rec_jax["trace"][0]["elbo"], rel=1e-9)


@pytest.mark.parametrize("case", cases(list(TRAIN_CASES), ["branch"]))
def test_trained_backends_agree_small(case):
    """From the same init, JAX and torch (eager) reach the same final ELBO within 3 standard errors
    (4 training seeds per backend, see :func:`_agree`)."""
    method, params, steps = TRAIN_CASES[case]
    kwargs = {"steps": steps, "eval_draws": 1000, "checkpoints": 1, "references": None}
    _agree(*_trained_pair(method, FAST_TRAIN, params, range(4), **kwargs))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_trained_backends_agree_n100(case):
    """hier-linear N=100 (d=10, n=20): every family, the same final ELBO within 3 standard errors
    (3 training seeds per backend)."""
    method, params, _ = TRAIN_CASES[case]
    params = params | N100_PARAMS.get(method, {})
    kwargs = {"steps": N100_STEPS[case], "eval_draws": 1000, "checkpoints": 4, "references": None}
    _agree(*_trained_pair(method, N100, params, range(3), **kwargs))


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """torch.compile changes the speed, not the numbers (the same draws give the same step)."""
    model = build_model("hier-linear", SMALL)
    algo = METHODS["branch"](model, steps=50)
    losses = []
    for compile_ in (False, True):
        runner = TorchRunner(algo, 0, 5, TorchBackend(compile=compile_))
        state, gen = runner.new_state(), torch.Generator().manual_seed(0)
        losses.append(torch.stack([runner.step(state, gen) for _ in range(5)]).numpy())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-9)


def test_cli_runs_the_torch_backend(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    data = ["--data-param", "N=4", "--data-param", "n=5", "--data-param", "d=2"]
    argv = ["run", "--method", "meanfield", "--dataset", "hier-linear", *data, "--steps", "20"]
    argv += ["--eval-draws", "50", "--checkpoints", "1", "--references", "none", "--out", str(out)]
    threads = torch.get_num_threads()
    assert main([*argv, "--backend", "torch", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # process-wide: the harness gives them back
    (rec,) = read_records([out])
    assert rec["backend"] == "torch" and rec["torch_threads"] == 1 and not rec["torch_compile"]
    assert "[torch]" in capsys.readouterr().out
    assert main([*argv, "--torch-compile"]) == 2  # a torch option without --backend torch
    assert "need --backend torch" in capsys.readouterr().err


def test_torch_bench_plan_and_outputs(tmp_path):
    """The benchmark's plan (JAX first per family and N; torch engines on the asked device) and its
    table and figure from the committed records (the figure has a bar per ok run and metric)."""
    import json
    from pathlib import Path

    import matplotlib.image

    from hierbench.torch_bench import ENGINES, cells, write_outputs

    runs = cells((100,), device="cuda")
    families = set(run.label for run in runs)
    assert len(runs) == len(families) * len(ENGINES) == 18 and runs[0].kwargs["backend"] == "jax"
    for run in runs:
        options = run.kwargs.get("backend_options")
        assert (options or {}).get("device") == ("cuda" if run.kwargs["backend"] == "torch" else None)
    committed = Path(__file__).parents[2] / "results" / "torch" / "records.jsonl"
    records = [json.loads(line) for line in committed.read_text().splitlines()]
    paths = write_outputs(records, tmp_path)
    assert "| meanfield | 100 |" in paths["md"].read_text()
    image = matplotlib.image.imread(paths["figure"])
    # not blank: the bars colour a visible share of the canvas
    assert (image[..., :3].std(axis=-1) > 0.1).mean() > 0.01
