"""movielens-synth (the ML-25M-shaped generator, its CSR store and cache, the CSV reader, its compressed
layout) and minibatch VI on the store through the one run path (stratified minibatches gathered from the
store, chunked float64 scoring, the records of run_one and of the scale experiment)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierbench.cli import main
from hierbench.datasets import DATASETS, movielens
from hierbench.datasets import movielens_synth as synth
from hierbench.datasets.base import ParamError
from hierbench.harness import run_one
from hierbench.methods import amortized, branch
from hierbench.methods.batches import plan_strata, size_levels
from hierbench.methods.store_batches import DeviceStore, RatingStoreBatches, gather, store_arrays
from hierbench.methods.vi import make_vi
from hierbench.records import read_records
from hierbench.scale.report import write_summary
from hierbench.scoring import Scorer
from hierbench.scoring_store import ChunkedScorer
from hierbench.suites.sweep import run_sweep


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test caches its stores in its own folder."""
    monkeypatch.setenv("HIERBENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def store300():
    return synth.generate(300, seed=1)


def _same(a: synth.RatingStore, b: synth.RatingStore) -> None:
    for name in synth.RatingStore.ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.feature_names == b.feature_names


# --------------------------------------------------------------------------- the generator


def test_registered_and_genres_sorted():
    assert DATASETS["movielens-synth"] is synth.make
    assert list(synth.GENRES) == sorted(synth.GENRES) and len(synth.FEATURES) == 20
    assert len(synth.GENRE_WEIGHTS) == len(synth.GENRES) and len(synth.TRUE_SIGMA) == len(synth.FEATURES)


def test_generator_is_deterministic_and_a_prefix_of_larger_runs(store300):
    _same(store300, synth.generate(300, seed=1))
    other = synth.generate(300, seed=2)
    assert not np.array_equal(other.movie[:1000], store300.movie[:1000])
    # the first K users (and their held-out split) do not depend on how many users are generated
    _same(synth.generate(1100, seed=1).head(300), store300)


def test_count_distribution_matches_ml25m():
    counts = synth.user_counts(synth.ML25M_USERS, seed=0)  # cheap: the sizes only
    assert counts.min() >= 20
    assert abs(np.median(counts) - 71) <= 2
    assert abs(counts.sum() / synth.ML25M_RATINGS - 1) < 0.02  # ~25.0 M ratings
    assert abs(counts.mean() - 153.8) < 3
    assert counts.max() > 100 * np.median(counts)  # heavy tail: the largest user has > 7,000
    assert np.mean(counts > 1000) > 0.01


def test_ratings_have_the_planned_shape(store300):
    store = store300
    sizes = store.sizes
    assert sizes.min() >= 20 and store.num_users == 300
    # each user rates distinct movies, stored by increasing id within each part
    for i in range(0, 300, 7):
        rows = store.movie[store.offsets[i] : store.offsets[i + 1]]
        assert len(np.unique(rows)) == len(rows)
    # held-out split as movielens-small: max(1, round(0.1 n)) per user
    np.testing.assert_array_equal(store.test_sizes, np.maximum(1, np.rint(0.1 * sizes)))
    # popularity skew: the top 1% of movies get a large share of the ratings
    per_movie = np.sort(np.bincount(store.movie, minlength=synth.NUM_MOVIES))[::-1]
    assert per_movie[: synth.NUM_MOVIES // 100].sum() > 0.4 * per_movie.sum()
    assert synth.popularity()[0] == pytest.approx(81_491 / 25_000_095, rel=0.05)
    # genres: 1-4 per movie, intercept always; Drama and Comedy the commonest, Film-Noir and IMAX rare
    table = store.genres
    assert np.all(table[:, 0] == 1) and set(np.unique(table[:, 1:].sum(1))) == {1, 2, 3, 4}
    share = table[:, 1:].mean(0)
    order = [synth.GENRES[k] for k in np.argsort(share)[::-1]]
    assert set(order[:2]) == {"Drama", "Comedy"} and set(order[-3:]) >= {"Film-Noir"}
    assert 0.25 < store.y.mean() < 0.75


def test_labels_follow_the_true_parameters():
    """Users' rating rates of a genre move with the true genre effects' signs (Film-Noir +, Horror −)."""
    store = synth.generate(2048, seed=0)
    x = store.genres[store.movie]
    y = store.y.astype(float)
    rate = {g: y[x[:, 1 + synth.GENRES.index(g)] == 1].mean() for g in ("Film-Noir", "Horror", "Documentary")}
    assert rate["Film-Noir"] > y.mean() > rate["Horror"]
    assert rate["Documentary"] > y.mean()


# --------------------------------------------------------------------------- the registered model


def test_make_pads_the_store_and_refuses_big_layouts(store300):
    model = synth.make(num_users=40, seed=1)
    store = store300.head(40)
    assert model.num_groups == 40 and model.dim_global == 40 and model.dim_local == 20
    assert model.num_obs == int(store.train_sizes.sum())
    np.testing.assert_array_equal(model.data["mask"].sum(1), store.train_sizes)
    np.testing.assert_array_equal(model.test_data["mask"].sum(1), store.test_sizes)
    assert model.global_names[1] == "mu[Action]" and model.log_lik is movielens.log_lik
    assert model.params == {"num_users": 40, "seed": 1} and model.store is None
    np.testing.assert_array_equal(model.theta_true, synth.true_theta())
    with pytest.raises(ParamError, match="layout=store"):
        synth.make(num_users=50_000)  # refused from the sizes alone, before generating
    with pytest.raises(ParamError):
        synth.make(num_users=0)
    with pytest.raises(ParamError, match="layout must be one of padded, store"):
        synth.make(num_users=10, layout="csr")


def test_validate_params_refuses_a_full_size_padded_layout_without_generating(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generated data to validate parameters")

    monkeypatch.setattr(synth, "generate", fail)
    with pytest.raises(ParamError, match="layout=store"):
        synth.validate_params(num_users=synth.ML25M_USERS)
    full = synth.validate_params(num_users=synth.ML25M_USERS, layout="store")
    assert full == {"num_users": synth.ML25M_USERS, "seed": 0, "layout": "store"}


def test_store_layout_keeps_the_ratings_compressed(store300):
    model = synth.make(num_users=300, seed=1, layout="store")
    padded = synth.make(num_users=300, seed=1)
    assert model.data == {} and model.test_data is None and model.store is not None
    _same(model.store, store300)
    assert model.params == {"num_users": 300, "seed": 1, "layout": "store"}
    assert model.num_obs == padded.num_obs and model.num_groups == padded.num_groups == 300
    assert (model.dim_global, model.dim_local, model.global_names) == (
        padded.dim_global,
        padded.dim_local,
        padded.global_names,
    )
    info = model.store.describe()
    assert info["store_bytes"] == store300.nbytes < info["padded_bytes"]
    assert info["padded_bytes"] == sum(padded.data[k].nbytes for k in ("x", "y", "mask"))
    assert info["store_layout"] == {
        "ratings": int(store300.sizes.sum()),
        "movies": synth.NUM_MOVIES,
        "features": 20,
        "bytes_per_rating": 5,
    }


def test_feature_stats_equal_the_amortized_nets():
    model = synth.make(num_users=30, seed=1)
    center, spread = synth.load_or_generate(30, 1).feature_stats()
    want_center, want_spread = amortized.row_feature_stats(model.data)
    np.testing.assert_allclose(center, want_center, rtol=1e-12)
    np.testing.assert_allclose(spread, want_spread, rtol=1e-10)


# --------------------------------------------------------------------------- the cache


def test_cache_round_trip_and_rebuild_of_stale_or_corrupt_files(monkeypatch):
    calls = []
    real = synth.generate

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "generate", counting)
    first = synth.load_or_generate(120, 5)
    path = synth.cache_path(synth.synth_key(120, 5))
    assert path.is_file() and path.parent.name == "data" and len(calls) == 1
    _same(synth.load_or_generate(120, 5), first)
    assert len(calls) == 1  # loaded, not rebuilt
    assert synth.cache_path(synth.synth_key(120, 6)) != path  # other params: another file
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, no pickles
        assert json.loads(str(npz["key"]))["num_users"] == 120

    # corrupt: truncated file
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable"):
        _same(synth.load_or_generate(120, 5), first)
    assert len(calls) == 2

    # tampered data with the old checksum
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["y"] = 1 - arrays["y"]
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="checksum"):
        _same(synth.load_or_generate(120, 5), first)
    assert len(calls) == 3

    # stale: a file whose key (e.g. generator constants) differs, or of another format
    arrays["y"] = first.y
    for key, value in (("key", np.asarray("{}")), ("format", np.asarray(synth.FORMAT_VERSION + 1))):
        np.savez(path, **(arrays | {key: value}))
        with pytest.warns(UserWarning, match="other parameters|format"):
            _same(synth.load_or_generate(120, 5), first)
    assert len(calls) == 5
    _same(synth.load_store(path, synth.synth_key(120, 5)), first)  # the rebuilt file is valid


# --------------------------------------------------------------------------- MovieLens CSVs


def test_csv_release_round_trips_through_both_loaders(tmp_path, store300):
    store = store300.head(150)
    synth.write_movielens_csv(store, tmp_path)
    frame = movielens.load_movielens_csv(tmp_path)  # movielens-small's loader reads the layout
    assert len(frame) == int(store.sizes.sum())
    from_csv = synth.read_csv_store(tmp_path, seed=1, chunk_rows=5000)  # several chunks
    _same(from_csv, store)
    # the same users, features, order and split as movielens-small's padded loader
    model = movielens.make(num_users=None, seed=1, path=str(tmp_path))
    for got, want in ((from_csv.padded("train"), model.data), (from_csv.padded("test"), model.test_data)):
        for key in ("x", "y", "mask"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    cached = synth.load_csv_store(tmp_path, seed=1)
    _same(cached, from_csv)
    assert synth.load_csv_store(tmp_path, seed=2).test_sizes.sum() == from_csv.test_sizes.sum()
    with pytest.raises(ParamError, match="does not exist"):
        synth.read_csv_store(tmp_path / "missing")
    (tmp_path / "movies.csv").unlink()
    with pytest.raises(ParamError, match="movies.csv"):
        synth.load_csv_store(tmp_path)


def test_csv_reader_handles_unknown_movies_and_ratings_order(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n7,3,4.5,20\n7,1,2.0,10\n2,99,5.0,5\n2,1,3.0,6\n7,2,4.0,10\n"
    )
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n1,A (1999),Drama|War\n2,B,Comedy\n3,C,Drama\n"
    )
    store = synth.read_csv_store(tmp_path)
    assert store.feature_names == ("intercept", "Comedy", "Drama", "War")
    np.testing.assert_array_equal(store.sizes, [2, 3])  # userId 2, then 7
    assert store.movie_ids[-1] == -1 and np.all(store.genres[-1] == [1, 0, 0, 0])  # movie 99
    model = movielens.make(num_users=None, path=str(tmp_path))
    for got, want in ((store.padded("train"), model.data), (store.padded("test"), model.test_data)):
        for key in ("x", "y", "mask"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    ids = store.movie_ids[store.movie]
    assert sorted(ids[:2]) == [-1, 1] and sorted(ids[2:]) == [1, 2, 3]


# --------------------------------------------------------------------------- VI on the store


HARNESS_KEYS = (
    "record_id",
    "method",
    "dataset",
    "data_params",
    "method_params",
    "seed",
    "backend",
    "status",
    "elbo",
    "elbo_se",
    "iw_elbo",
    "log_evidence",
    "kl",
    "global_mean",
    "global_sd",
    "steps",
    "grad_evals",
    "group_evals",
    "wall_s",
    "compile_s",
    "eval_compile_s",
    "steps_per_s",
    "trace",
    "num_groups",
    "num_obs",
    "accuracy",
    "env",
    "heldout_lpd",
    "heldout_lpd_per_obs",
    "log_q_ok",
)


def _small_store(num_users=40, num_movies=30, dim=4, seed=0) -> synth.RatingStore:
    """A ragged toy store (sizes 2..64 in several log2 buckets, d=4) for exact-answer tests."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(64, 2 + rng.geometric(0.06, num_users))
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    n_test = np.maximum(1, np.rint(0.1 * sizes)).astype(np.int64)
    genres = np.c_[np.ones(num_movies), rng.random((num_movies, dim - 1)) < 0.4].astype(np.uint8)
    return synth.RatingStore(
        offsets=offsets,
        num_train=(sizes - n_test).astype(np.int32),
        movie=rng.integers(0, num_movies, offsets[-1]).astype(np.int32),
        y=rng.integers(0, 2, offsets[-1]).astype(np.uint8),
        genres=genres,
        movie_ids=np.arange(1, num_movies + 1),
        feature_names=("intercept", *(f"g{k}" for k in range(1, dim))),
    )


def _perturbed(params, seed=0, sd=0.05):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [a + sd * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    )


def _device(store: synth.RatingStore) -> DeviceStore:
    return DeviceStore(*(jnp.asarray(a) for a in store_arrays(store, jnp.float64)))


def test_gather_equals_the_padded_layout(store300):
    store = store300.head(25)
    dev = _device(store)
    users = jnp.arange(25)
    for part in ("train", "test"):
        want = store.padded(part)
        got = gather(dev, users, want["mask"].shape[1], part)
        for key in ("x", "y", "mask"):
            np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=(part, key))


def test_the_store_only_changes_the_batch_source():
    """branch.make and amortized.make on the compressed model build the padded model's family: the same
    initial parameters and the same draws from the same key; the batch source is the store's (chosen
    from the model), with the store's default strata unless max_strata says otherwise."""
    store = _small_store(num_users=12)
    padded = synth.model_from_store(store, "toy", {})
    compressed = synth.store_model(store, "toy", {})
    for make, params in ((branch.make, {}), (amortized.make, {"head": "potential", "width": 8})):
        ours = make(compressed, steps=10, batch_groups=4, **params)
        registered = make(padded, steps=10, batch_groups=4, **params)
        assert isinstance(ours.batches, RatingStoreBatches) and ours.config["max_strata"] == 16
        assert make(compressed, steps=10, batch_groups=4, max_strata=2, **params).config["strata"] == 2
        for a, b in zip(
            jax.tree.leaves(ours.init(jax.random.key(0)).params),
            jax.tree.leaves(registered.init(jax.random.key(0)).params),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        params_ = _perturbed(registered.init(jax.random.key(0)).params)
        data = {k: jnp.asarray(v) for k, v in padded.data.items()}
        want = registered.sample(jax.random.key(3), params_, data, 5)
        got = ours.sample(jax.random.key(3), params_, data, 5)
        np.testing.assert_array_equal(got.theta, want.theta)
        np.testing.assert_allclose(got.z, want.z, rtol=1e-12)
        np.testing.assert_allclose(got.log_q, want.log_q, rtol=1e-12)


# slow (40 s): the store only changes where a batch's rows come from
# (test_the_store_only_changes_the_batch_source), and the stratified estimate's unbiasedness is
# tested on the padded layout in make test
# (tests/methods/test_methods.py::test_stratified_minibatch_estimate_is_unbiased)
@pytest.mark.slow
@pytest.mark.parametrize("head", ["potential", "moments"])
def test_stratified_minibatch_estimate_from_the_store_is_unbiased(head):
    """The minibatch −ELBO on the store (users stratified by size, gathered from the CSR store, scaled
    N_s/B_s) has the full-data estimate's mean within 4 standard errors, and the test has power (its se
    is below 0.2% of the value)."""
    store = _small_store()
    model = synth.store_model(store, "toy", {})
    sub_strata = plan_strata(store.train_sizes, 8, 3)
    full_strata = plan_strata(store.train_sizes, store.num_users, 3)
    assert len(np.unique(size_levels(store.train_sizes))) > 3 and len(sub_strata) == 3
    assert all(s.alloc == len(s.groups) for s in full_strata)  # every user: the full-data estimate
    keys = jax.random.split(jax.random.key(1), 16_000)

    def losses(batch_users):
        method = amortized.make(model, head=head, batch_groups=batch_users, max_strata=3, width=8, steps=10)
        state = method.init(jax.random.key(0))
        state = state._replace(params=_perturbed(state.params))
        data = jax.tree.map(jnp.asarray, method.batches.arrays("float64"))
        # in batches of keys: 16,000 minibatches at once would not fit
        return np.asarray(
            jax.jit(
                lambda: jax.lax.map(lambda k: method.step(k, state, data)[1].neg_elbo, keys, batch_size=1000)
            )()
        )

    a, b = losses(8), losses(store.num_users)
    se = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert se < 0.002 * abs(b.mean())
    assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)


def test_chunked_elbo_equals_the_harness_scorer(store300):
    """Same q (the amortized family with the store's statistics), same parameters: the ELBO scored over
    chunks of users with shared θ draws equals the harness Scorer's full-data one within 4 se, and so
    does the held-out log predictive density."""
    store = store300.head(30)
    padded = synth.model_from_store(store, "movielens-synth", {})
    compressed = synth.store_model(store, "movielens-synth", {})
    family, cfg, _ = amortized.build(compressed, head="potential", width=8, steps=10)
    params = _perturbed(jax.tree.map(jnp.asarray, family.init_params(jax.random.key(0))), sd=0.02)
    ours = ChunkedScorer(compressed, make_vi(compressed, family, cfg, batch_groups=8), 1500, max_segments=1)
    got = ours(jax.random.key(5), params)
    want = Scorer(padded, make_vi(padded, family, cfg), num_draws=1500)(jax.random.key(6), params)
    se = np.hypot(got["elbo_se"], want["elbo_se"])
    assert abs(got["elbo"] - want["elbo"]) < 4 * se, (got["elbo"], want["elbo"], se)
    assert got["heldout_obs"] == want["heldout_obs"] == int(store.test_sizes.sum())
    # the held-out lpd (a log of a Monte Carlo mean) of this untrained q moves by ±0.015 per rating
    # from one key to the next at 1,500 draws (measured, either scorer)
    assert got["heldout_lpd_per_obs"] == pytest.approx(want["heldout_lpd_per_obs"], abs=0.05)
    assert got["log_q_ok"] and got["eval_draws"] == 1500


QUICK_SCALE = """
[experiment]
name = "scale-test"

[defaults]
dataset = "movielens-synth"
data_params = { num_users = 300, seed = 1, layout = "store" }
steps = 20
chunk_steps = 10
checkpoints = 1
eval_draws = 8
scoring = { eval_segments = 2 }

[[runs]]
method = "amortized"
method_params = { head = "potential", width = 8, batch_groups = 32, max_strata = 3 }

[[runs]]
method = "branch"
method_params = { batch_groups = 32, max_strata = 3 }

[[runs]]
method = "dense"

[[runs]]
method = "meanfield"
"""


def test_quick_run_writes_complete_records(tmp_path):
    """Through the sweep (in this process): amortized and branch train on the store, dense and
    meanfield (full-data families) are recorded infeasible with the memory they would need; the
    report is written from the records."""
    exp = tmp_path / "scale-test.toml"
    exp.write_text(QUICK_SCALE)
    out = tmp_path / "records.jsonl"
    result = run_sweep(exp, out, jobs=0, references=None, progress=False)
    assert not result.failed
    records = read_records([out])
    assert [(r["method"], r["status"]) for r in records] == [
        ("amortized", "ok"),
        ("branch", "ok"),
        ("dense", "infeasible"),
        ("meanfield", "infeasible"),
    ]
    amort, br, dense, mf = records
    for rec in (amort, br):
        for key in (
            "elbo",
            "elbo_se",
            "heldout_lpd_per_obs",
            "compile_s",
            "eval_compile_s",
            "env",
            "peak_rss_bytes",
            "theta_true_std_err",
        ):
            assert rec[key] is not None, key
        assert rec["steps"] == 20 and rec["wall_s"] > 0 and "stopped" not in rec
        assert [p["step"] for p in rec["trace"]] == [0, 20]
        assert all(np.isfinite(p["elbo"]) and np.isfinite(p["heldout_lpd_per_obs"]) for p in rec["trace"])
        assert rec["method_params"]["strata"] == 3 and rec["method_params"]["steps"] == 20
        assert rec["store_bytes"] > 0 and rec["num_groups"] == 300 and rec["dataset"] == "movielens-synth"
        assert rec["padded_bytes"] > rec["store_bytes"] and rec["store_layout"]["bytes_per_rating"] == 5
        assert len(rec["theta_true"]) == 40 and rec["data_params"]["layout"] == "store"
        assert 0 < rec["params_bytes"] < rec["memory_estimate_bytes"]
    # the schema of harness.run_one's records, with the memory and store fields
    harness_keys = set(HARNESS_KEYS) | {
        "peak_rss_bytes",
        "store_bytes",
        "params_bytes",
        "memory_estimate_bytes",
    }
    assert harness_keys <= set(amort) and harness_keys <= set(br)
    assert amort["method_params"]["head"] == "potential" and amort["method_params"]["width"] == 8
    assert amort["cell"]["scoring"] == {"eval_segments": 2} and amort["cell"]["chunk_steps"] == 10
    assert dense["memory_bytes"] > dense["covariance_bytes"] == 8 * dense["dim"] ** 2 > 0
    assert dense["dim"] == 40 + 300 * 20
    assert mf["memory_bytes"] == mf["padded_bytes"] and "layout=store" in mf["error"]
    paths = write_summary(records, tmp_path)
    assert paths["summary_md"].is_file() and paths["figure"].is_file()
    assert "amortized" in paths["summary_md"].read_text()


@pytest.mark.slow
def test_a_csv_release_trains_from_the_store(tmp_path, store300):
    synth.write_movielens_csv(store300.head(120), tmp_path / "ml")
    data = {"path": str(tmp_path / "ml"), "layout": "store", "num_users": None, "seed": 1}
    rec = run_one(
        "amortized",
        "movielens-small",
        data,
        {"head": "moments", "batch_groups": 16, "width": 8},
        steps=10,
        chunk_steps=10,
        checkpoints=1,
        eval_draws=8,
        scoring={"eval_segments": 1},
        progress=False,
        references=None,
    )
    assert rec["status"] == "ok", rec.get("error")
    assert rec["dataset"] == "movielens-small" and rec["num_groups"] == 120 and rec["store_bytes"] > 0
    assert rec["data_params"]["layout"] == "store" and rec["method_params"]["head"] == "moments"
    assert "theta_true" not in rec  # real data: no truth
    with pytest.raises(ParamError, match="give path"):
        movielens.make(layout="store")


def test_bad_config_is_a_param_error(tmp_path, capsys):
    with pytest.raises(ParamError, match="steps, budget_s"):
        run_one("branch", "movielens-synth", steps=None, raise_param_errors=True, references=None)
    with pytest.raises(ParamError, match="eval_segments"):
        run_one("branch", "movielens-synth", scoring={"eval_segments": 0}, raise_param_errors=True)
    with pytest.raises(ParamError, match="store"):  # a padded model has no chunked scorer
        run_one(
            "branch",
            "movielens-synth",
            {"num_users": 6},
            scoring={"eval_segments": 2},
            steps=2,
            raise_param_errors=True,
            references=None,
        )
    with pytest.raises(ParamError, match="max_strata"):
        amortized.make(synth.make(num_users=6, layout="store"), max_strata=0)
    # a sweep refuses a full-size padded cell before anything runs (or generates)
    exp = tmp_path / "padded.toml"
    exp.write_text(
        '[[runs]]\nmethod = "branch"\ndataset = "movielens-synth"\ndata_params = { num_users = 162_541 }\n'
    )
    assert main(["sweep", str(exp), "--out", str(tmp_path / "r.jsonl"), "--jobs", "0"]) == 2
    assert "layout=store" in capsys.readouterr().err and not (tmp_path / "r.jsonl").exists()
    argv = ["run", "--method", "branch", "--dataset", "movielens-synth", "--out", str(tmp_path / "r.jsonl")]
    assert main([*argv, "--data-param", "layout=csr"]) == 2
    assert "layout must be one of padded, store" in capsys.readouterr().err


@pytest.mark.slow
def test_budget_plans_and_stops_a_run_on_the_store():
    rec = run_one(
        "amortized",
        "movielens-synth",
        {"num_users": 500, "layout": "store"},
        {"head": "potential", "width": 8, "batch_groups": 32, "max_strata": 3},
        steps=None,
        budget_s=3.0,
        chunk_steps=5,
        checkpoints=2,
        eval_draws=8,
        scoring={"eval_segments": 2},
        progress=False,
        references=None,
    )
    assert rec["status"] == "ok" and rec["planned_steps"] >= 5 and rec["probe"]["chunk"] == 5
    assert rec["method_params"]["steps"] == rec["planned_steps"]
    assert rec["wall_s"] <= 1.25 * 3.0 + 1.0 or rec["stopped"] == "budget"


@pytest.mark.slow
def test_quick_scale_command_end_to_end(tmp_path):
    """`hierbench scale --quick`: experiments/scale.toml's smoke check, each cell in its own process."""
    assert main(["scale", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    records = read_records([tmp_path / "records.jsonl"])
    assert [(r["method"], r["status"]) for r in records] == [
        ("amortized", "ok"),
        ("branch", "ok"),
        ("dense", "infeasible"),
    ]
    assert {r["experiment"] for r in records} == {"scale"} and records[0]["num_groups"] == 2000
    assert len({r["env"]["hostname"] for r in records}) == 1 and all(r["peak_rss_bytes"] for r in records)
    assert (tmp_path / "scale.png").is_file() and (tmp_path / "summary.md").is_file()
