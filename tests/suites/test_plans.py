"""Every plan is an experiment file: each expands to exactly the run_one keyword arguments its former
Python plan produced (frozen in tests/data/plans.json before those plans were deleted; the peers plan
has since become one comparison per model and family, tested in tests/test_peers.py).  One edit since:
amortized runs no longer spell ``batch_groups = 32`` (a B above N is refused since the one validation
layer; amortized's default is min(32, N), what those cells ran).  And the bench runs both amortized
heads at the method's default 30,000 steps (the moments head ran 4,000, then 10,000; at 10,000 with q(θ)'s
scaled factor neither head landed on every N: results/bench/README.md)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from hierbench.harness import run_one
from hierbench.suites.experiment import expand, find_experiment, load_experiment
from hierbench.suites.validate import validate

FROZEN = json.loads((Path(__file__).parents[1] / "data" / "plans.json").read_text(encoding="utf-8"))
# what run_one does when a keyword is not given: the two sides may spell a default or leave it out
RUN_ONE_DEFAULTS = {
    k: p.default
    for k, p in inspect.signature(run_one).parameters.items()
    if k in ("seed", "steps", "eval_draws", "checkpoints", "backend", "backend_options", "budget_s")
}
PLAN_FILES = ("bench", "bench-accuracy", "peers", "torch-bench", "regress-quick", "regress-tiny")


def normal(kwargs: dict) -> str:
    """One cell as canonical JSON, with run_one's defaults filled in."""
    return json.dumps(RUN_ONE_DEFAULTS | kwargs, sort_keys=True)


def cells(name: str, quick: bool = False) -> list[dict]:
    return [c.kwargs for c in expand(load_experiment(find_experiment(name)), quick=quick)]


def same_cells(toml: list[dict], old: list[dict]) -> None:
    assert len(toml) == len(old)
    assert sorted(map(normal, toml)) == sorted(map(normal, old))


@pytest.mark.parametrize("name", PLAN_FILES)
def test_every_plan_file_is_valid(name):
    experiment = load_experiment(find_experiment(name))
    validate(expand(experiment), name)


def test_bench_plan_is_the_old_plan():
    from hierbench.bench import select_sizes

    same_cells(cells("bench"), FROZEN["bench"])
    grid = expand(load_experiment(find_experiment("bench")))
    for sizes in ((10,), (100, 1000)):
        old = [kw for kw in FROZEN["bench"] if kw["data_params"]["N"] in sizes]
        same_cells([c.kwargs for c in select_sizes(grid, sizes)], old)


def test_accuracy_plan_is_the_old_plan():
    same_cells(cells("bench-accuracy"), FROZEN["bench-accuracy"])


def test_torch_bench_plan_is_the_old_plan():
    from hierbench.torch_bench import cells as torch_cells
    from hierbench.torch_bench import engine_of

    for device, key in (("cpu", "torch-bench"), ("cuda", "torch-bench-cuda")):
        old = FROZEN[key]
        assert {kw.pop("references") for kw in old} == {None}  # the command passes references=None
        new = torch_cells(device=device)
        labelled = [
            c.kwargs
            | {
                "family": c.label,
                "engine": engine_of(c.kwargs.get("backend"), c.kwargs.get("backend_options")),
            }
            for c in new
        ]
        same_cells(labelled, old)
        # JAX first in each (family, N): its final ELBO sets the target
        firsts = {}
        for c in new:
            firsts.setdefault((c.label, c.kwargs["data_params"]["N"]), c.kwargs.get("backend"))
        assert set(firsts.values()) == {"jax"}


def test_regress_suites_are_the_old_suites():
    from hierbench.suites import definition as rg

    for name in ("quick", "tiny"):
        frozen, suite = FROZEN[f"regress-{name}"], rg.get_suite(name)
        # the same definition and digest: the committed baselines stay current
        assert json.loads(json.dumps(suite.definition())) == frozen["definition"]
        assert suite.digest() == frozen["digest"]
        runs = [suite.cell(e, 1000) | {"name": e.name} for e in suite.entries]
        assert runs == [kw | {"seed": 1000} for kw in frozen["cells"]]  # in the same order
