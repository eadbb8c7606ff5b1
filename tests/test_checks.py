"""The one validation layer (hierbench.harness.checks): every bad input the issue-15 probe found is
refused before any work, with a message, the same way by `hierbench run` (exit 2, nothing written),
a sweep (before its first cell) and the Python API (a ParamError)."""

from __future__ import annotations

import re

import pytest

import hierbench as hb
from hierbench.cli import main
from hierbench.datasets import DATASETS, small_params
from hierbench.datasets.base import ParamError
from hierbench.harness.checks import dataset_shape
from hierbench.registry import build_model, parameters
from hierbench.suites.experiment import expand, load_experiment
from hierbench.suites.validate import validate

SMALL = {"N": 5, "n": 3, "d": 2}

# (what the user typed on `hierbench run`, the same as run_one keyword arguments, what the message says)
CASES = [
    (["--eval-draws", "0"], {"eval_draws": 0}, "eval_draws must be an integer >= 2"),
    (["--checkpoints", "0"], {"checkpoints": 0}, "checkpoints must be an integer >= 1"),
    (["--checkpoints", "-3"], {"checkpoints": -3}, "checkpoints must be an integer >= 1"),
    (["--method-param", "steps=5"], {"method_params": {"steps": 5}}, "the run's own"),
    (["--method-param", "init_sd=0"], {"method_params": {"init_sd": 0.0}}, "init_sd must be a positive"),
    (["--method-param", "init_sd=-1"], {"method_params": {"init_sd": -1.0}}, "init_sd must be a positive"),
    (["--budget-s", "inf"], {"budget_s": float("inf")}, "budget_s .*finite"),
    (
        ["--backend", "torch", "--device", "bogus"],
        {"backend": "torch", "backend_options": {"device": "bogus"}},
        "is not a torch device",
    ),
    (
        ["--method-param", "batch_groups=6"],
        {"method_params": {"batch_groups": 6}},
        "more than the data's N=5",
    ),
]


def _run_argv(extra: list[str], method: str = "branch") -> list[str]:
    data = [a for k, v in SMALL.items() for a in ("--data-param", f"{k}={v}")]
    return ["run", "--method", method, "--dataset", "hier-linear", *data, "--steps", "10", *extra]


@pytest.mark.parametrize(("argv", "kwargs", "match"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_run_sweep_and_api_refuse_the_same_input(argv, kwargs, match, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main([*_run_argv(argv), "--out", str(out)]) == 2
    assert re.search(match, capsys.readouterr().err) and not out.exists()  # nothing written
    # the Python API: a ParamError before any work
    run_kwargs = {"method_params": {}} | kwargs
    with pytest.raises(ParamError, match=match):
        hb.run("branch", "hier-linear", data_params=SMALL, steps=10, **run_kwargs)
    # a sweep: refused before its first cell
    cell = {"method": "branch", "dataset": "hier-linear", "data_params": SMALL, "steps": 10} | kwargs
    toml = tmp_path / "exp.toml"
    toml.write_text(_toml(cell))
    with pytest.raises(ParamError, match=match):
        validate(expand(load_experiment(toml)))


def _toml(cell: dict) -> str:
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, str):
            return f'"{v}"'
        if v == float("inf"):
            return "inf"
        return repr(v).lower() if isinstance(v, bool) else repr(v)

    runs = {k: v for k, v in cell.items()}
    return "[[runs]]\n" + "\n".join(f"{k} = {value(v)}" for k, v in runs.items()) + "\n"


def test_other_refusals(tmp_path, capsys):
    out = str(tmp_path / "r.jsonl")
    cases = [
        (_run_argv(["--method-param", "max_dim=-1"], "dense"), "max_dim must be an integer >= 1"),
        (_run_argv(["--method-param", "rank=500"], "lowrank"), "rank=500 is more than the dimension"),
        (_run_argv(["--data-param", "N=6"]), "'N' is given twice"),
    ]
    for argv, match in cases:
        assert main([*argv, "--out", out]) == 2
        assert match in capsys.readouterr().err
    assert main(["bench", "--sizes", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--sizes 0" in capsys.readouterr().err and not (tmp_path / "b" / "records.jsonl").exists()


@pytest.mark.parametrize("name", list(DATASETS))
def test_a_datasets_shape_is_its_models(name):
    """``shape(**params)`` (the size checks, without data) agrees with the built model."""
    params = small_params(name)
    shape = dataset_shape(name, parameters("dataset", DATASETS[name]) | params)
    if shape is None:
        pytest.skip(f"{name} declares no shape")
    model = build_model(name, params)
    assert shape == {
        "num_groups": model.num_groups,
        "dim_global": model.dim_global,
        "dim_local": model.dim_local,
    }
