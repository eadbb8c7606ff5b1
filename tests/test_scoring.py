"""The scorer's by-groups path (q(θ) ∏_i q(z_i | θ) scored a chunk of groups at a time) against the
exact answer and against the all-groups path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierbench.methods import METHODS
from hierbench.methods import _gaussian as g
from hierbench.registry import build_model
from hierbench.scoring import Scorer


def exact_branch_params(model) -> dict[str, jax.Array]:
    """Branch parameters that make q the exact posterior of hier-linear: q(z_i | θ) = N(μ_i + A_i (θ − m),
    L_i L_iᵀ) with m = E[θ], so μ_i = shift_i + A_i m."""
    ex = model.exact
    m = ex.global_mean
    return {
        "g_mean": jnp.asarray(m),
        "g_chol": jnp.asarray(g.raw_from_scaled_chol(np.linalg.cholesky(ex.global_cov))),
        "l_shift": jnp.asarray(ex.local_shift + ex.local_gain @ m),
        "l_gain": jnp.asarray(ex.local_gain),
        "l_chol": jnp.asarray(g.raw_from_scaled_chol(np.linalg.cholesky(ex.local_cov))),
    }


# max_chunk_floats 89,600 with 7 rows per group: chunks of at most 89,600 // (7 · NET_FLOATS_PER_ROW) = 50
# groups, equalized: N = 130 in chunks of 44, 44 and a remainder of 42; the first 100 kept groups
# span three chunks
@pytest.mark.parametrize("ragged", [False, True])
def test_by_groups_gives_the_exact_log_evidence_at_the_exact_posterior(ragged):
    """At q = p(θ, z | y) every draw's log weight is log p(y): both paths, to rounding."""
    model = build_model("hier-linear", {"N": 130, "n": 7, "d": 2, "ragged": ragged, "seed": 1})
    algo = METHODS["branch"](model, steps=10)
    params = exact_branch_params(model)
    whole = Scorer(model, algo, num_draws=200, max_local_groups=100)
    chunked = Scorer(
        model, algo, num_draws=200, max_local_groups=100, max_chunk_floats=89_600, by_groups=True
    )
    assert not whole.by_groups and chunked.by_groups
    sizes = [(size, len(starts)) for _, _, size, starts in chunked.segments]
    if not ragged:
        assert sizes == [(44, 3)]
    else:
        assert len(sizes) > 1  # one segment per size bucket
    log_z = model.exact.log_evidence
    for scorer in (whole, chunked):
        score = scorer(jax.random.key(3), params)
        np.testing.assert_allclose(scorer.last["log_w"], log_z, rtol=1e-12)
        assert score["log_q_ok"] and score["eval_draws"] == 200
        assert scorer.last["z"].shape == (200, 100, 2)
    # the kept z draws are draws of the first 100 groups' exact marginals (not zeros, not others)
    mean, cov = model.exact.local_marginals()
    z = chunked.last["z"]
    err = np.abs(z.mean(axis=0) - mean[:100]) / np.sqrt(np.diagonal(cov[:100], axis1=-2, axis2=-1) / 200)
    assert err.max() < 5.0, err.max()


@pytest.mark.parametrize(
    ("dataset", "data_params", "method", "params"),
    [
        ("hier-linear", {"N": 40, "n": 6, "d": 2}, "amortized", {"head": "potential", "batch_groups": 8}),
        ("hier-logistic", {"N": 40, "n": 6, "d": 2, "ragged": True}, "branch", {}),
        ("movielens-small", {"num_users": 12}, "amortized", {"head": "moments", "batch_groups": 4}),
    ],
)
def test_by_groups_agrees_with_all_groups(dataset, data_params, method, params):
    """Away from the posterior the log weights vary; the two paths' ELBOs (independent draws) agree
    within 4 combined standard errors, and so do held-out predictive densities."""
    model = build_model(dataset, data_params)
    algo = METHODS[method](model, steps=10, **params)
    state = algo.init(jax.random.key(0))
    step_data = jax.tree.map(jnp.asarray, algo.batches.arrays("float64"))
    run = jax.jit(lambda s, k: algo.step(k, s, step_data)[0])
    for k in jax.random.split(jax.random.key(1), 5):  # move away from the symmetric init
        state = run(state, k)
    whole = Scorer(model, algo, num_draws=1000)
    chunked = Scorer(model, algo, num_draws=1000, max_chunk_floats=50_000, by_groups=True)
    assert chunked.by_groups and sum(len(st) for *_, st in chunked.segments) > 1
    a, b = whole(jax.random.key(5), state.params), chunked(jax.random.key(6), state.params)
    se = np.hypot(a["elbo_se"], b["elbo_se"])
    assert se < 0.05 * abs(a["elbo"])  # the comparison has power
    assert abs(a["elbo"] - b["elbo"]) < 4 * se, (a["elbo"], b["elbo"], se)
    if "heldout_lpd" in a:
        assert b["heldout_obs"] == a["heldout_obs"]
        assert b["heldout_lpd"] == pytest.approx(a["heldout_lpd"], rel=0.02)


def test_by_groups_is_chosen_when_the_full_data_does_not_fit():
    model = build_model("hier-linear", {"N": 40, "n": 6, "d": 2})
    algo = METHODS["branch"](model, steps=10)
    assert not Scorer(model, algo, num_draws=100).by_groups
    assert Scorer(model, algo, num_draws=100, max_chunk_floats=2000).by_groups  # 10 × 40 × 6 > 2000


def test_joint_families_cannot_go_by_groups():
    """mean-field over the joint vector has no per-group conditional: a too-small budget is an error."""
    model = build_model("hier-linear", {"N": 40, "n": 6, "d": 2})
    algo = METHODS["meanfield"](model, steps=10)
    assert algo.sample_local is None
    with pytest.raises(ValueError, match="sample_local"):
        Scorer(model, algo, num_draws=100, max_chunk_floats=1000)
    with pytest.raises(ValueError, match="sample_local"):
        Scorer(model, algo, num_draws=100, by_groups=True)
