"""The notebook API (``import hierbench as hb``): cheap to import, listings, dataset, run, read_records."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hierbench as hb
from hierbench.datasets.base import HierModel, ParamError
from hierbench.records import append_record, validate

TINY = {"N": 4, "n": 3, "d": 2}
FAST = {"steps": 20, "checkpoints": 2, "eval_draws": 50, "references": None, "progress": False}


def test_import_hierbench_is_cheap():
    """`import hierbench` loads neither JAX nor pandas; the API loads them on first use."""
    code = "import sys, hierbench; print([m for m in ('jax', 'pandas', 'hierbench.api') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(hb.__all__) <= set(dir(hb))


def test_listings_name_every_registered_dataset_and_method():
    from hierbench.datasets import DATASETS
    from hierbench.methods import METHODS

    datasets, methods = hb.datasets(), hb.methods()  # also callable once the subpackages are imported
    assert list(datasets) == list(DATASETS) and list(methods) == list(METHODS)
    assert all(isinstance(v, str) and v for v in (*datasets.values(), *methods.values()))
    assert hb.datasets.DATASETS is DATASETS and hb.methods.METHODS is METHODS  # still the subpackages


def test_dataset_builds_a_validated_model():
    model = hb.dataset("hier-linear", **TINY)
    assert isinstance(model, HierModel) and model.num_groups == 4 and model.params["n"] == 3
    with pytest.raises(ParamError, match="valid datasets"):
        hb.dataset("no-such-dataset")
    with pytest.raises(ParamError, match="unknown dataset parameter 'M'"):
        hb.dataset("hier-linear", M=3)


def test_run_gives_the_cli_record_from_a_model_or_a_name():
    model = hb.dataset("hier-linear", **TINY)
    rec = hb.run("meanfield", model, seed=1, **FAST)
    assert validate(rec) == [] and rec["status"] == "ok" and rec["num_groups"] == 4
    assert rec["seed"] == 1 and rec["data_params"] == model.params
    by_name = hb.run("meanfield", "hier-linear", data_params=TINY, seed=1, **FAST)
    assert by_name["elbo"] == rec["elbo"] and by_name["steps"] == rec["steps"]  # the same seed, the same run
    with pytest.raises(ParamError, match="unknown method parameter"):
        hb.run("meanfield", model, method_params={"no_such": 1}, **FAST)
    with pytest.raises(ParamError, match="data_params go with a dataset name"):
        hb.run("meanfield", model, data_params=TINY, **FAST)
    with pytest.raises(ParamError, match="valid methods"):
        hb.run("no-such-method", "hier-linear", data_params=TINY, **FAST)


def test_read_records_is_a_flat_table_with_the_skipped_count(tmp_path):
    from hierbench.records import finish, new_record

    path = tmp_path / "records.jsonl"
    for seed in (0, 1):
        rec = new_record("meanfield", "hier-linear", TINY, {"lr": 0.01}, seed)
        trace = [{"step": 0, "wall_s": 0.0, "elbo": -9.0}, {"step": 5, "wall_s": 0.1, "elbo": -3.0}]
        append_record(path, finish(rec, "ok", elbo=-3.0, trace=trace, accuracy={"global": {"err": 0.1}}))
    with open(path, "a") as fh:
        fh.write('{"foo": 1}\n')
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        df = hb.read_records(path)
    assert len(df) == 2 and list(df["seed"]) == [0, 1]
    assert list(df["data_params.N"]) == [4, 4] and list(df["method_params.lr"]) == [0.01, 0.01]
    assert list(df["accuracy.global.err"]) == [0.1, 0.1]
    assert df["trace"].map(len).tolist() == [2, 2] and df["trace"][0][1]["elbo"] == -3.0
    assert df.attrs["skipped"] == 1 and df.attrs["skipped_lines"][0][:2] == (str(path), 3)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        both = hb.read_records([path, path])
    assert len(both) == 4 and both.attrs["skipped"] == 2
