"""Every family at its registry defaults (no method parameters but the ones named) on small hier-linear
data, seeds 0-4: a user who runs ``hierbench run --method M`` without tuning gets the answer.

Bounds (issue 14): dense and branch contain the posterior, KL ≤ 0.05 nats at N = 10; mean-field
within 5% of its analytic optimum; low-rank no worse than that optimum; amortized (potential head)
KL/N ≤ 0.05 at N = 10 and 100; dense also on torch.  The default step count runs in ``make
test-all`` (``slow``).  ``make test`` runs dense on JAX at N = 10, the case of issue 14, also at its
defaults (4-11 s a seed, by load): fewer steps do not land (measured, seeds 0-4: KL ≈ 34 nats after 2,000
steps, ≈ 9 after 3,000, the schedule's decay scaling with the step count), and every other case
costs 10-100 s a seed.
"""

from __future__ import annotations

import pytest
from conftest import optimal_meanfield_kl

from hierbench.harness import run_one
from hierbench.harness.one import DEFAULT_STEPS
from hierbench.registry import build_model

SEEDS = range(5)
DATA = {"n": 20, "d": 10, "seed": 0}
# (method, method params, groups N, backend)
CASES = [
    ("dense", {}, 10, "jax"),
    ("dense", {}, 10, "torch"),
    ("branch", {}, 10, "jax"),
    ("meanfield", {}, 10, "jax"),
    ("lowrank", {}, 10, "jax"),
    ("amortized", {"head": "potential"}, 10, "jax"),
    ("amortized", {"head": "potential"}, 100, "jax"),
]
FAST = [("dense", {}, 10, "jax")]  # also in `make test` (module docstring)
# Known not to land at its defaults (measured, seeds 0-4: KL/N 0.080, 0.066, 0.12, 0.079, 0.11; at 30,000
# steps it ends at 1.4e-4 and 2.4e-5 on seeds 2 and 0, results/defaults/README.md); strict, so the marker
# has to go when it does
XFAIL = {
    (
        "amortized",
        100,
        "jax",
    ): "issue 14: amortized (potential head) at N = 100 leaves KL/N 0.07-0.12 at its 10,000 default steps"
}


def marks(case):
    key = (case[0], case[2], case[3])
    found = [pytest.mark.xfail(strict=True, reason=XFAIL[key])] if key in XFAIL else []
    return found + ([] if case in FAST else [pytest.mark.slow])


def check(method: str, method_params: dict, groups: int, backend: str, seed: int) -> None:
    data = DATA | {"N": groups}
    rec = run_one(
        method,
        "hier-linear",
        data,
        method_params,
        seed=seed,
        steps=DEFAULT_STEPS,
        checkpoints=1,
        backend=backend,
    )
    assert rec["status"] == "ok", rec.get("error")
    kl = rec["kl"]
    print(f"{method} {method_params} N={groups} {backend} seed={seed}: KL {kl:.4g} ± {rec['elbo_se']:.2g}")
    if method in ("dense", "branch"):
        assert kl <= 0.05
    elif method == "amortized":
        assert kl / groups <= 0.05
    else:
        best = optimal_meanfield_kl(build_model("hier-linear", data))
        if method == "meanfield":
            # KL ≥ best up to Monte Carlo error; at most 5% above the optimum
            assert best - 4 * rec["elbo_se"] <= kl <= 1.05 * best
        else:  # low-rank plus diagonal contains mean-field
            assert kl <= best


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("method", "method_params", "groups", "backend"),
    [pytest.param(*c, marks=marks(c)) for c in CASES],
)
def test_defaults_land(method, method_params, groups, backend, seed):
    check(method, method_params, groups, backend, seed)
