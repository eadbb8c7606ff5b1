"""Seconds budgets (``budget_s``): a speed probe sizes the run, and an overrun stops it."""

from __future__ import annotations

import pytest

from hierbench.harness import budget, run_one
from hierbench.suites.experiment import expand, load_experiment
from hierbench.suites.validate import validate

SMALL = {"N": 6, "n": 5, "d": 2}


def fixed_rate(rate: float):
    def probe(backend, model, method, seed, chunk=budget.PROBE_STEPS):
        return {"steps_per_s": rate, "steps": 10, "wall_s": 10 / rate, "compile_s": 0.0, "chunk": chunk}

    return probe


def test_budget_sets_the_steps_from_the_measured_rate(monkeypatch):
    monkeypatch.setattr(budget, "probe_speed", fixed_rate(300.0))
    rec = run_one(
        "meanfield", "hier-linear", SMALL, steps=10_000, budget_s=2.0, checkpoints=4, references=None
    )
    assert rec["status"] == "ok" and rec["budget_s"] == 2.0
    assert rec["planned_steps"] == 600 == rec["steps"]  # 2 s × 300 steps/s, in 4 chunks of 150
    assert rec["method_params"]["steps"] == 600  # the schedule spans the budget
    assert rec["probe"]["steps_per_s"] == 300.0
    # steps stays an upper bound
    capped = run_one(
        "meanfield", "hier-linear", SMALL, steps=100, budget_s=2.0, checkpoints=4, references=None
    )
    assert capped["planned_steps"] == 100


def test_the_real_probe_measures_a_positive_rate():
    rec = run_one("branch", "hier-linear", SMALL, steps=50, budget_s=30.0, checkpoints=2, references=None)
    probe = rec["probe"]
    assert rec["status"] == "ok" and probe["steps_per_s"] > 0 and probe["wall_s"] >= budget.PROBE_MIN_S
    assert probe["steps"] % budget.PROBE_STEPS == 0 and rec["steps"] == 50
    assert probe["rate_ratio"] > 0  # the run's own rate over the probe's: how far the probe was off


def test_a_run_past_its_budget_stops(monkeypatch):
    # the probe claims 10⁶ steps/s: 20,000 planned steps cannot fit in 0.05 s, so the run stops after
    # the first chunk that ends past 1.25 × 0.05 s
    monkeypatch.setattr(budget, "probe_speed", fixed_rate(1e6))
    rec = run_one(
        "meanfield", "hier-linear", SMALL, steps=20_000, budget_s=0.05, checkpoints=20, references=None
    )
    assert rec["status"] == "ok" and rec["stopped"] == "budget"
    assert rec["steps"] < rec["planned_steps"] == 20_000
    assert rec["wall_s"] > budget.BUDGET_OVERRUN * 0.05
    assert len(rec["trace"]) == rec["steps"] // 1000 + 1


@pytest.mark.parametrize("bad", [0, -1.0, "ten", True])
def test_bad_budgets_are_param_errors(bad):
    rec = run_one("meanfield", "hier-linear", SMALL, steps=10, budget_s=bad, references=None)
    assert rec["status"] == "error" and "budget_s" in rec["error"]


def test_budget_is_a_sweep_key(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(
        '[defaults]\ndataset = "hier-linear"\ndata_params = { N = 6, n = 5, d = 2 }\nsteps = 100\n'
        '[[runs]]\nmethod = "meanfield"\nbudget_s = [1.0, 2.5]\n[[runs]]\nmethod = "branch"\n'
    )
    cells = expand(load_experiment(path))
    assert [c.kwargs.get("budget_s") for c in cells] == [1.0, 2.5, None]
    assert "budget_s" not in cells[2].kwargs  # experiments without budgets keep their cell ids
    validate(cells)
    path.write_text(path.read_text().replace("[1.0, 2.5]", "-3"))
    with pytest.raises(Exception, match="budget_s"):
        validate(expand(load_experiment(path)))
