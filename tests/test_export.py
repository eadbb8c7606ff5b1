"""``hierbench export``: every dataset's rows round-trip, and its Stan data is the program's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SMALL_DATA_PARAMS

from hierbench.cli import main
from hierbench.datasets import DATASETS
from hierbench.datasets.base import pad_groups
from hierbench.datasets.export import export, stan_export
from hierbench.registry import build_model


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_export_round_trips(name, tmp_path):
    model = build_model(name, SMALL_DATA_PARAMS[name])
    paths = export(model, name, tmp_path / "d.npz")
    with np.load(paths["npz"]) as f:  # plain arrays: no pickle
        arrays = {k: f[k] for k in f.files}
    assert int(arrays["num_groups"]) == model.num_groups
    assert json.loads(str(arrays["data_params"])) == {"dataset": name} | model.params
    group = arrays["group"]
    assert len(group) == model.num_obs and np.all(np.diff(group) >= 0)  # the observed rows, group by group
    for split, data in (("", model.data), ("test_", model.test_data or {})):
        if not data:
            assert not any(k.startswith("test_") for k in arrays)
            continue
        mask = data.get("mask")
        if mask is None:  # one row a group (eight schools)
            for key, value in data.items():
                np.testing.assert_array_equal(arrays[split + key], value)
            continue
        sizes = np.bincount(arrays[split + "group"], minlength=model.num_groups)
        for key, value in data.items():
            if key == "mask":
                continue
            (padded,), rebuilt_mask = pad_groups(sizes, arrays[split + key])
            np.testing.assert_array_equal(rebuilt_mask, mask)
            np.testing.assert_array_equal(padded, value)  # padding is zero in both
    stan = stan_export(model)
    assert (stan is None) == ("stan_json" not in paths) and str(arrays["stan_program"]) == (
        stan[0] if stan else ""
    )
    if stan is not None:
        written = json.loads(paths["stan_json"].read_text())
        assert set(written) == set(stan[1])
        for key, value in stan[1].items():
            np.testing.assert_allclose(np.asarray(written[key], dtype=float), np.asarray(value, dtype=float))
        assert paths["stan"].name == stan[0] and "data {" in paths["stan"].read_text()


def test_every_dataset_exports_stan_data():
    """Every dataset ships Stan data for some program (movielens-synth: movielens-small's)."""
    for name in DATASETS:
        assert stan_export(build_model(name, SMALL_DATA_PARAMS[name])) is not None, name


def test_export_cli_eight_schools(tmp_path, capsys):
    out = tmp_path / "es.npz"
    assert main(["export", "--dataset", "eight-schools", "--out", str(out)]) == 0
    assert "eight_schools.stan" in capsys.readouterr().out
    with np.load(out) as f:
        np.testing.assert_array_equal(f["sigma"], [15, 10, 16, 11, 9, 11, 10, 18])
    assert json.loads((tmp_path / "es.stan.json").read_text())["J"] == 8
