"""NUTS references: agreement with exact and published posteriors, the gate, the store, accuracy scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from hierbench import reference as refstore
from hierbench.accuracy import accuracy_block, block_scores, psis_khat
from hierbench.harness import run_one
from hierbench.methods import nuts
from hierbench.methods.base import Posterior, Sampler
from hierbench.registry import build_model
from hierbench.scoring import heldout_scores

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def linear20():
    return build_model("hier-linear", {"N": 20, "n": 10, "d": 3, "seed": 1})


@pytest.fixture(scope="module")
def linear20_nuts(linear20, tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    sampler = nuts.make(linear20, chains=4, warmup=500, draws=1000)
    ref, path, built = refstore.get_or_build("hier-linear", linear20, sampler, 3, {}, root=root)
    assert built
    return ref, path, sampler, root


def test_nuts_agrees_with_exact_posterior_within_mcse(linear20, linear20_nuts):
    """Acceptance 2: every coordinate's NUTS mean is within 4 MCSE of the exact posterior mean."""
    ref, _, _, _ = linear20_nuts
    assert ref.accepted, ref.failed_checks
    exact = refstore.exact_reference(linear20)
    for got, got_sd, mcse, want, sd in [
        (ref.global_mean, ref.global_sd, ref.global_mcse, exact.global_mean, exact.global_sd),
        (ref.local_mean, ref.local_sd, ref.local_mcse, exact.local_mean, exact.local_sd),
    ]:
        z = np.abs(got - want) / mcse
        assert z.max() < 4.0, z.max()
        # sds: 4000 draws with ESS in the thousands pin an sd to a few percent
        np.testing.assert_allclose(got_sd, sd, rtol=0.1)
    assert ref.meta["diagnostics"]["divergences"] == 0
    assert {c["check"] for c in ref.meta["checks_made"]} == {
        "split R-hat",
        "bulk ESS",
        "tail ESS",
        "divergences",
        "E-BFMI",
    }


def test_store_reloads_detects_corruption_and_staleness(linear20, linear20_nuts):
    ref, path, sampler, root = linear20_nuts
    again, path2, built = refstore.get_or_build("hier-linear", linear20, sampler, 3, {}, root=root)
    assert not built and path2 == path
    np.testing.assert_array_equal(again.local_q, ref.local_q)
    meta = json.loads(path.read_text())
    assert meta["command"].startswith("hierbench reference --dataset hier-linear")
    assert meta["has_draws"] and refstore.load_draws(path).shape == (4000, 3 + 20 * 3)

    npz = path.with_name(meta["npz_file"])
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt"):
        refstore.load(path)
    with pytest.raises(ValueError, match="stale"):
        refstore.load(path, expect_key="0" * 64)

    calls = []

    def fake_run(seed):  # the rebuild must rerun the sampler, not reuse the corrupt file
        calls.append(seed)
        return sampler.run(seed)

    logged = []
    rebuilt, _, built = refstore.get_or_build(
        "hier-linear", linear20, Sampler(fake_run, sampler.config), 3, {}, root=root, log=logged.append
    )
    assert built and calls == [3] and "corrupt" in logged[0]
    np.testing.assert_allclose(rebuilt.global_mean, ref.global_mean)  # same seed, same chains
    refstore.load(path)  # valid again


def test_a_different_dataset_seed_is_a_different_reference(linear20):
    other = build_model("hier-linear", {"N": 20, "n": 10, "d": 3, "seed": 2})
    config = nuts.make(linear20).config
    assert refstore.reference_key("hier-linear", linear20, config, 0) != refstore.reference_key(
        "hier-linear", other, config, 0
    )
    assert refstore.reference_key("hier-linear", linear20, config, 0) != refstore.reference_key(
        "hier-linear", linear20, config | {"draws": 5}, 0
    )


def _fake_posterior(model, rng, shift_chain=0.0, diverging=0, energy_scale=1.0):
    C, S, G, N, L = 4, 500, model.dim_global, model.num_groups, model.dim_local
    theta = rng.normal(size=(C, S, G))
    theta[0] += shift_chain
    z = rng.normal(size=(C, S, N, L))
    stats = {
        "diverging": np.zeros((C, S), bool),
        "energy": rng.normal(size=(C, S)).cumsum(axis=1) * 0.05 * energy_scale + rng.normal(size=(C, S)),
        "num_steps": np.full((C, S), 7),
    }
    stats["diverging"].flat[:diverging] = True
    natural = {"theta": theta, "z": z}
    return Posterior(theta, z, natural, stats, 0.0, 0.0, {"sampler": "fake", "chains": C, "draws": S})


@pytest.mark.parametrize(
    ("kwargs", "failed"),
    [
        ({}, None),
        ({"shift_chain": 1.0}, "split R-hat"),
        ({"diverging": 3}, "divergences"),
        ({"energy_scale": 100.0}, "E-BFMI"),
    ],
)
def test_gate_refuses_bad_references_and_says_why(kwargs, failed, tmp_path):
    model = build_model("hier-linear", {"N": 3, "n": 4, "d": 2})
    post = _fake_posterior(model, np.random.default_rng(0), **kwargs)
    key = refstore.reference_key("hier-linear", model, post.settings, None)
    ref, _ = refstore.from_posterior("hier-linear", model, post, key, "cmd")
    if failed is None:
        assert ref.accepted and ref.require_accepted() is ref
        return
    assert not ref.accepted
    assert any(msg.startswith(failed) for msg in ref.failed_checks), ref.failed_checks
    with pytest.raises(refstore.RefusedReference, match=failed):
        ref.require_accepted()
    # stored with its diagnostics, and never picked as ground truth
    refstore.save(ref, None, tmp_path)
    stored = refstore.load(refstore.paths(tmp_path, "hier-linear", key)[0])
    assert not stored.accepted and stored.meta["diagnostics"]["rhat_max"] > 0
    logistic = build_model("hier-logistic", {"N": 3, "n": 4, "d": 2})
    # a refused reference for the same data is reported, not used
    post_l = _fake_posterior(logistic, np.random.default_rng(0), **kwargs)
    key_l = refstore.reference_key("hier-logistic", logistic, post_l.settings, None)
    bad, _ = refstore.from_posterior("hier-logistic", logistic, post_l, key_l, "cmd")
    refstore.save(bad, None, tmp_path)
    found, note = refstore.find_accepted("hier-logistic", logistic, tmp_path)
    assert found is None and "refused" in note


def test_eight_schools_matches_posteriordb(tmp_path):
    """Acceptance 1: `hierbench reference` on eight-schools writes a gated reference whose means agree
    with posteriordb's within 4 combined MCSE and whose sds agree within 10%."""
    summary = tmp_path / "es.csv"
    cmd = [sys.executable, "-m", "hierbench.cli", "reference", "--dataset", "eight-schools"]
    cmd += ["--references", str(tmp_path / "refs"), "--summary", str(summary)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "pass  divergences" in out.stdout
    ours = pd.read_csv(summary).set_index("name")
    assert list(ours.columns) == ["mean", "sd", "mcse_mean"]
    pdb = json.loads((DATA / "posteriordb_eight_schools_noncentered.json").read_text())
    for name, mean, mcse, msv in zip(
        pdb["names"], pdb["mean"], pdb["mcse_mean"], pdb["mean_squared_value"], strict=True
    ):
        row = ours.loc[name]
        assert abs(row["mean"] - mean) <= 4 * np.hypot(row["mcse_mean"], mcse), name
        sd = np.sqrt(msv - mean**2)
        assert abs(row["sd"] - sd) <= 0.1 * sd, name


def test_run_nuts_records_diagnostics_and_accuracy_vs_exact(tmp_path):
    rec = run_one(
        "nuts",
        "hier-linear",
        {"N": 5, "n": 5, "d": 2},
        {"warmup": 300, "draws": 300, "chains": 2},
        references=tmp_path,
        save_reference=tmp_path / "saved",
    )
    assert rec["status"] == "ok", rec.get("error")
    assert rec["compile_s"] > 0 and rec["wall_s"] > 0 and rec["grad_evals"] > 0
    assert set(rec["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "ebfmi_min"}
    assert rec["accuracy"]["reference"] == "exact"
    assert rec["accuracy"]["global"]["std_mean_err_max"] < 0.5
    assert Path(rec["reference_file"]).is_file() and Path(rec["reference_file"]).is_relative_to(tmp_path)


def _stored_copy(tmp_path: Path, dataset: str = "eight-schools") -> Path:
    """A copy of the committed reference of ``dataset`` in a store of its own."""
    (src,) = sorted((Path(__file__).parents[1] / "results" / "references" / dataset).glob("*.json"))
    dst = tmp_path / dataset
    dst.mkdir(parents=True)
    for f in (src, src.with_suffix(".npz")):
        (dst / f.name).write_bytes(f.read_bytes())
    return dst / src.name


def test_load_reapplies_the_gate_to_edited_diagnostics(tmp_path):
    """Diagnostics edited to 10 draws and bulk ESS 5 (the file still saying "accepted"): the gate is
    re-run on load, the reference is refused and never scores a VI run."""
    path = _stored_copy(tmp_path)
    assert refstore.load(path).accepted
    meta = json.loads(path.read_text())
    meta["diagnostics"]["ess_bulk_min"] = 5.0
    path.write_text(json.dumps(meta))
    ref = refstore.load(path)
    assert not ref.accepted and any(m.startswith("bulk ESS = 5") for m in ref.failed_checks)
    assert any("stored verdict" in m for m in ref.failed_checks)
    assert not next(c for c in ref.meta["checks_made"] if c["check"] == "bulk ESS")["passed"]
    model = build_model("eight-schools", {})
    found, note = refstore.find_accepted("eight-schools", model, tmp_path)
    assert found is None and "refused" in note
    # an ESS the run's draws cannot have
    meta["diagnostics"]["ess_bulk_min"] = meta["diagnostics"]["ess_tail_min"] = 10**9
    path.write_text(json.dumps(meta))
    assert any("10× the" in m for m in refstore.load(path).failed_checks)


def test_load_refuses_an_edited_key_or_other_data(tmp_path):
    path = _stored_copy(tmp_path)
    meta = json.loads(path.read_text())
    edited = meta | {"key": "f" * 64}
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="edited"):
        refstore.load(path)
    model = build_model("eight-schools", {})
    found, note = refstore.find_accepted("eight-schools", model, tmp_path)
    assert found is None and "edited" in note
    path.write_text(json.dumps(meta))
    other = build_model("hier-linear", {"N": 8, "n": 3, "d": 1})
    with pytest.raises(ValueError, match="other data"):
        refstore.load(path, model=other)


def test_a_nuts_run_writes_only_where_told_and_a_failed_gate_exits_1(tmp_path, monkeypatch):
    """`hierbench run --method nuts` stores its reference in the user cache (or --save-reference),
    never in the committed store, and a run whose gate failed exits 1."""
    from hierbench.cli import main

    monkeypatch.setenv("HIERBENCH_CACHE_DIR", str(tmp_path / "cache"))
    committed = Path(__file__).parents[1] / "results" / "references"
    before = sorted(p.name for p in committed.rglob("*"))
    argv = ["run", "--method", "nuts", "--dataset", "eight-schools", "--out", str(tmp_path / "r.jsonl")]
    argv += ["--method-param", "warmup=30", "--method-param", "draws=20", "--method-param", "chains=2"]
    assert main(argv) == 1  # 40 draws cannot pass an ESS >= 400 gate
    (rec,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rec["gate_passed"] is False
    assert Path(rec["reference_file"]).is_relative_to(tmp_path / "cache" / "references")
    assert sorted(p.name for p in committed.rglob("*")) == before


def test_vi_record_carries_accuracy_block():
    rec = run_one("branch", "hier-linear", {"N": 8, "n": 10, "d": 2}, steps=3000, checkpoints=2)
    acc = rec["accuracy"]
    assert rec["status"] == "ok" and acc["reference"] == "exact"
    assert set(acc["global"]) == {
        "std_mean_err_mean",
        "std_mean_err_max",
        "sd_ratio_err_mean",
        "sd_ratio_err_max",
        "w1_mean",
        "coords",
    }
    assert acc["local"]["coords"] == 8 * 2 and acc["local_groups_scored"] == 8
    # branch contains the posterior: errors are Monte Carlo noise of 1000 draws
    assert acc["global"]["std_mean_err_max"] < 0.2 and acc["local"]["sd_ratio_err_max"] < 0.2
    assert acc["psis_khat"] is not None and acc["psis_khat"] < 0.5


def test_block_scores_on_known_gaussians():
    """q = N(m + δs, (ρs)²) vs p = N(m, s²): std mean error δ, sd ratio error |ρ − 1|, and
    W1/s = E|δ + (ρ − 1)Z| (quantile coupling), here with ρ = 1: exactly δ."""
    rng = np.random.default_rng(0)
    m, s = np.array([1.0, -2.0, 5.0]), np.array([0.5, 2.0, 1.0])
    ref_q = m + scipy.stats.norm.ppf(refstore.QUANTILE_LEVELS)[:, None] * s
    draws = m + 0.3 * s + s * rng.normal(size=(200_000, 3))
    got = block_scores(draws, m, s, ref_q)
    assert got["std_mean_err_mean"] == pytest.approx(0.3, abs=0.01)
    assert got["sd_ratio_err_max"] < 0.01
    assert got["w1_mean"] == pytest.approx(0.3, abs=0.01)
    wide = m + 1.5 * s * rng.normal(size=(200_000, 3))
    got = block_scores(wide, m, s, ref_q)
    assert got["sd_ratio_err_mean"] == pytest.approx(0.5, abs=0.01)
    assert got["std_mean_err_max"] < 0.02
    # W1 between N(0,1) and N(0, 1.5²) is 0.5·E|Z| = 0.5·sqrt(2/π) (minus the dropped tails)
    assert got["w1_mean"] == pytest.approx(0.5 * np.sqrt(2 / np.pi), rel=0.03)


def test_psis_khat_separates_good_and_bad_proposals():
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    good = scipy.stats.norm.logpdf(x, 0, 1) - scipy.stats.norm.logpdf(x, 0, 1.05)  # q a bit wider
    # q = N(0, σ²), σ < 1, has Pareto tail index k = 1 − σ² (here 0.91)
    y = rng.normal(scale=0.3, size=4000)
    bad = scipy.stats.norm.logpdf(y, 0, 1) - scipy.stats.norm.logpdf(y, 0, 0.3)  # q far too narrow
    assert psis_khat(good) < 0.5 < 0.7 < psis_khat(bad)
    assert psis_khat(np.array([np.nan] * 20)) is None


def test_heldout_scores_is_a_log_mean_exp_over_draws():
    model = build_model("movielens-small", {"num_users": 6})
    rng = np.random.default_rng(0)
    ll = rng.normal(size=(50, model.num_groups)) - 3.0
    got = heldout_scores(ll, model)
    want = sum(np.log(np.mean(np.exp(ll[:, i]))) for i in range(model.num_groups))
    assert got["heldout_lpd"] == pytest.approx(want, rel=1e-12)
    assert got["heldout_obs"] == int(model.test_data["mask"].sum())


def test_movielens_record_has_heldout_predictive():
    rec = run_one("meanfield", "movielens-small", {"num_users": 8}, steps=200, checkpoints=1)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["heldout_obs"] > 0 and -1.0 < rec["heldout_lpd_per_obs"] < 0.0


def test_accuracy_block_without_log_weights_has_no_khat(linear20):
    exact = refstore.exact_reference(linear20)
    rng = np.random.default_rng(0)
    theta = exact.global_mean + exact.global_sd * rng.normal(size=(1000, 3))
    z = exact.local_mean + exact.local_sd * rng.normal(size=(1000, 20, 3))
    acc = accuracy_block(exact, theta, z[:, :7])
    assert acc["psis_khat"] is None and acc["local_groups_scored"] == 7 and acc["local"]["coords"] == 21
    assert acc["global"]["std_mean_err_max"] < 0.15


def test_parallel_diagnostics_equal_serial(monkeypatch):
    """Many coordinates are diagnosed in worker processes: same numbers as one ArviZ call."""
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 200, 40)).cumsum(axis=1) * 0.1 + rng.normal(size=(4, 200, 40))
    monkeypatch.setattr(refstore, "PARALLEL_DIAGNOSTICS_MIN", 10)
    monkeypatch.setattr(refstore.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    parallel, serial = refstore._diagnostics(draws), refstore._diagnostics_serial(draws)
    assert set(parallel) == {"rhat", "ess_bulk", "ess_tail", "mcse_mean"}
    for k in serial:
        np.testing.assert_array_equal(parallel[k], serial[k])
    assert serial["rhat"].shape == (40,) and np.all(serial["rhat"] > 1.0)


def test_build_all_runs_builds_in_subprocesses_and_reports_failures(tmp_path):
    """`hierbench references` (make references): one subprocess per dataset, pinned one per core,
    an exact-posterior dataset skipped, a failing build reported without stopping the others."""
    logs: list[str] = []
    failed = refstore.build_all(
        tmp_path, datasets=["hier-linear", "no-such-dataset"], jobs=2, log=logs.append
    )
    assert failed == 1
    assert "exact posterior, no sampling needed" in (tmp_path / "hier-linear.log").read_text()
    assert "hier-linear" in (tmp_path / "no-such-dataset.log").read_text()  # the error lists valid names
    assert any("no-such-dataset: FAILED (exit 2)" in line for line in logs)
    assert any("hier-linear: ok" in line for line in logs)
    assert "2 datasets" in logs[-2] and "refused or failed: no-such-dataset" in logs[-1]


def test_index_names_every_stored_reference(tmp_path):
    """save() keeps results/references/index.json current; a rebuild from scratch gives the same file."""
    linear = build_model("hier-linear", {"N": 3, "n": 4, "d": 2})
    logistic = build_model("hier-logistic", {"N": 3, "n": 4, "d": 2})
    for name, model, key, shift in [
        ("hier-linear", linear, "a" * 64, 0.0),
        ("hier-logistic", logistic, "b" * 64, 1.0),
    ]:
        post = _fake_posterior(model, np.random.default_rng(0), shift_chain=shift)
        post.settings["seed"] = 7
        cmd = refstore.regenerate_command(name, model.params, 7, {"draws": 500})
        ref, _ = refstore.from_posterior(name, model, post, key, cmd)
        refstore.save(ref, None, tmp_path)
    index_path = tmp_path / "index.json"
    index = json.loads(index_path.read_text())
    assert sorted(index) == ["hier-linear", "hier-logistic"]
    (lin,), (logi,) = index["hier-linear"], index["hier-logistic"]
    assert lin["key"] == "a" * 64 and lin["data_params"] == linear.params and lin["seed"] == 7
    assert lin["method"] == "nuts" and lin["method_params"] == {"draws": 500}
    assert lin["accepted"] and not logi["accepted"]  # the shifted chain fails its R-hat check
    for entry in (lin, logi):
        meta_path = tmp_path / entry["files"]["meta"]
        assert meta_path == refstore.paths(tmp_path, meta_path.parent.name, entry["key"])[0]
        assert (tmp_path / entry["files"]["arrays"]).is_file()
    incremental = index_path.read_text()
    index_path.unlink()
    refstore.write_index(tmp_path)
    assert index_path.read_text() == incremental


def test_committed_index_is_current():
    """The committed store's index.json is what write_index would write now."""
    root = Path(__file__).parents[1] / "results" / "references"
    want = json.dumps(refstore.to_jsonable(refstore.index_entries(root)), indent=1) + "\n"
    assert (root / "index.json").read_text() == want
