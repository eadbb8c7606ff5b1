"""The tuning protocol (hierbench.harness.tune): a step-size grid, every point trained alike, the best
chosen by an ELBO on draws held apart, the whole grid's cost in the record."""

from __future__ import annotations

import pytest

from hierbench.datasets.base import ParamError
from hierbench.harness import run_one
from hierbench.harness.tune import GRIDS

SMALL = {"N": 6, "n": 5, "d": 2}


def test_the_grid_is_the_protocols():
    assert GRIDS["lr"] == pytest.approx((0.1, 0.025, 0.00625, 0.0015625, 0.000390625))


def test_a_tuned_run_is_the_chosen_points_record_with_the_whole_grid():
    grid = [30.0, 0.05, 0.0005]  # a step size that cannot work, a good one, one too small for 200 steps
    rec = run_one(
        "meanfield",
        "hier-linear",
        SMALL,
        steps=200,
        checkpoints=2,
        eval_draws=300,
        references=None,
        tune="lr",
        tune_grid=grid,
    )
    tuning = rec["tuning"]
    assert rec["status"] == "ok" and tuning["param"] == "lr" and tuning["grid"] == grid
    points = tuning["points"]
    assert [p["lr"] for p in points] == grid
    ok = [p for p in points if p["status"] == "ok"]
    best = max(ok, key=lambda p: p["held_apart_elbo"])
    # the choice is the best held-apart ELBO, and the record is that run's
    assert tuning["chosen"] == best["lr"] == rec["method_params"]["lr"] == 0.05
    assert rec["elbo"] == best["elbo"] and rec["steps"] == best["steps"] == 200
    assert rec["held_apart"]["elbo"] == best["held_apart_elbo"] != rec["elbo"]  # other draws
    # the cost of the whole grid beside the chosen run's own
    assert tuning["total_wall_s"] == pytest.approx(sum(p["wall_s"] for p in points))
    assert tuning["total_steps"] == sum(p["steps"] for p in points) and tuning["total_wall_s"] > rec["wall_s"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tune": "width"}, "tune must be one of lr"),
        ({"tune": "lr", "method_params": {"lr": 0.01}}, "sets lr itself"),
        ({"tune_grid": [0.1, 0.01]}, "tune_grid needs tune"),
        ({"tune": "lr", "tune_grid": [0.1]}, "two or more positive"),
        ({"tune": "lr", "tune_grid": [0.1, -1.0]}, "two or more positive"),
    ],
)
def test_bad_tuning_is_a_param_error(kwargs, match):
    method_params = kwargs.pop("method_params", {})
    with pytest.raises(ParamError, match=match):
        run_one("meanfield", "hier-linear", SMALL, method_params, steps=5, raise_param_errors=True, **kwargs)


def test_a_sampler_is_not_tuned():
    with pytest.raises(ParamError, match="VI methods"):
        run_one("nuts", "eight-schools", tune="lr", raise_param_errors=True, references=None)


def test_the_report_shows_the_choice_and_the_grid_cost(tmp_path):
    from hierbench.records import append_record
    from hierbench.reports.tables import format_markdown, summary_table

    tuned = run_one(
        "meanfield",
        "hier-linear",
        SMALL,
        steps=20,
        checkpoints=1,
        eval_draws=50,
        references=None,
        tune="lr",
        tune_grid=[0.05, 0.01],
    )
    plain = run_one(
        "meanfield", "hier-linear", SMALL, steps=20, checkpoints=1, eval_draws=50, references=None
    )
    df = summary_table([tuned, plain])
    row = df[df["tuned"] != ""].iloc[0]
    assert row["tuned"].startswith("lr=") and row["tuning_wall_s"] == pytest.approx(
        tuned["tuning"]["total_wall_s"]
    )
    assert "tuning_wall_s" in format_markdown(df)
    assert "tuned" not in summary_table([plain]).columns  # no empty columns where nothing was tuned
    append_record(tmp_path / "r.jsonl", tuned)


def test_a_sweep_tunes_once_per_configuration_and_reuses_the_choice(tmp_path):
    """tune_once: one tuning run per configuration (seed 0, its own steps), recorded with role
    'tuning'; every seed then runs once at the chosen step size, its record naming the tuning run;
    a rerun finds everything recorded and runs nothing."""
    from hierbench.records import read_records
    from hierbench.suites.sweep import run_sweep

    toml = _experiment(tmp_path, 'method = "meanfield"\ntune = "lr"\ntune_grid = [0.05, 0.0005]')
    out = tmp_path / "r.jsonl"
    result = run_sweep(toml, out, jobs=0, references=None, progress=False)
    assert not result.failed
    records = read_records([out])
    (tuner,) = [r for r in records if r.get("role") == "tuning"]
    runs = [r for r in records if r.get("role") != "tuning"]
    assert tuner["seed"] == 0 and tuner["steps"] == 40 and len(tuner["tuning"]["points"]) == 2
    chosen = tuner["tuning"]["chosen"]
    assert sorted(r["seed"] for r in runs) == [0, 1]
    for rec in runs:
        assert rec["method_params"]["lr"] == chosen and rec["steps"] == 60
        assert rec["tuning"]["shared"] and rec["tuning"]["tuned_by"] == tuner["record_id"]
        assert rec["tuning"]["tuned_on"]["steps"] == 40 and rec["cell"]["tune_once"] == {"steps": 40}
    again = run_sweep(toml, out, jobs=0, references=None, progress=False)
    assert sum(again.ran.values()) == 0 and len(read_records([out])) == 3


def test_a_budget_alone_keeps_the_runs_steps_as_the_tuning_runs_cap(tmp_path):
    """tune_once = { budget_s = ... }: the tuning run gets that budget but never more steps than the runs
    it tunes, so its schedule (cosine over the run's steps) is the one the chosen step size will run."""
    from hierbench.suites.experiment import expand, load_experiment
    from hierbench.suites.tuning import tuning_cells

    toml = tmp_path / "exp.toml"
    toml.write_text(
        '[defaults]\ndataset = "hier-linear"\ndata_params = { N = 6, n = 5, d = 2 }\nseeds = [0, 1]\n'
        "steps = 60\nbudget_s = 9\ncheckpoints = 1\neval_draws = 100\n"
        '[[runs]]\nmethod = "meanfield"\ntune = "lr"\ntune_once = { budget_s = 2 }\n'
        '[[runs]]\nmethod = "branch"\ntune = "lr"\ntune_once = { budget_s = 2, steps = 30 }\n'
    )
    tuners = {t.kwargs["method"]: t.kwargs for t in tuning_cells(expand(load_experiment(toml))).values()}
    assert (tuners["meanfield"]["steps"], tuners["meanfield"]["budget_s"]) == (60, 2)
    assert (tuners["branch"]["steps"], tuners["branch"]["budget_s"]) == (30, 2)


def test_tune_once_checkpoints_thins_only_the_tuning_runs_trace(tmp_path):
    """tune_once = { checkpoints = 1 }: the tuning run keeps the cells' steps and budget (the schedule the
    chosen step size will run) and evaluates only its final q; the cells keep their own checkpoints."""
    from hierbench.suites.experiment import expand, load_experiment
    from hierbench.suites.tuning import tuning_cells

    toml = tmp_path / "exp.toml"
    toml.write_text(
        '[defaults]\ndataset = "hier-linear"\ndata_params = { N = 6, n = 5, d = 2 }\nseeds = [0, 1]\n'
        "steps = 60\nbudget_s = 9\ncheckpoints = 5\neval_draws = 100\n"
        '[[runs]]\nmethod = "meanfield"\ntune = "lr"\ntune_once = { seed = 0, checkpoints = 1 }\n'
    )
    cells = expand(load_experiment(toml))
    (tuner,) = {t.cell_id: t for t in tuning_cells(cells).values()}.values()
    assert (tuner.kwargs["steps"], tuner.kwargs["budget_s"], tuner.kwargs["checkpoints"]) == (60, 9, 1)
    assert all(c.kwargs["checkpoints"] == 5 for c in cells)


def test_a_configuration_too_big_to_tune_records_its_cells_infeasible(tmp_path):
    """A tuning run refused as infeasible (dense above max_dim) leaves nothing to tune: every cell of
    the configuration is then recorded ``infeasible`` with its reason, not as an error."""
    from hierbench.records import read_records
    from hierbench.suites.sweep import run_sweep

    toml = _experiment(tmp_path, 'method = "dense"\nmethod_params = { max_dim = 5 }\ntune = "lr"')
    out = tmp_path / "r.jsonl"
    result = run_sweep(toml, out, jobs=0, references=None, progress=False)
    records = read_records([out])
    assert sorted(r["status"] for r in records) == ["infeasible"] * 3 and not result.failed
    runs = [r for r in records if r.get("role") != "tuning"]
    assert sorted(r["seed"] for r in runs) == [0, 1] and all("max_dim=5" in r["error"] for r in runs)


def _experiment(tmp_path, run: str):
    """A two-seed experiment file on tiny hier-linear data with one run (TOML lines ``run``), tuned once
    at 40 steps."""
    toml = tmp_path / "exp.toml"
    toml.write_text(
        '[defaults]\ndataset = "hier-linear"\ndata_params = { N = 6, n = 5, d = 2 }\nseeds = [0, 1]\n'
        f"steps = 60\ncheckpoints = 1\neval_draws = 100\n[[runs]]\n{run}\ntune_once = {{ steps = 40 }}\n"
    )
    return toml
