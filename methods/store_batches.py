"""A batch source over a compressed rating store: users stratified by size, rows gathered per step.

A model whose ratings are kept in a :class:`~hierbench.datasets.movielens_synth.RatingStore`
(``model.store``; CSR offsets, per-rating movie index and label, the movie × feature table) is never
padded: 162,541 users padded to their largest would be 0.42 TB, the store is 5 bytes a rating.
:class:`RatingStoreBatches` samples users exactly as :class:`~hierbench.methods.batches.Stratified`
does on padded ragged groups: the log₂ size buckets merged into at most ``max_strata`` strata, about
B·N_s/N users (at least one) from stratum s a step, drawn without replacement and scaled by N_s/B_s,
so the minibatch −ELBO stays unbiased (tested).  Each stratum has a fixed shape (its users pad to its
widest user); :func:`gather` builds the step's rows from the CSR arrays with array-API ``take`` (on
the device, inside the compiled step), and x from the movie × feature table, so a step materializes
only its own batch.  With a batch of every user (B ≥ N) it is the full data, scale 1, still never
padded beyond a stratum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hierbench.methods._ops import namespace
from hierbench.methods.batches import Pick, Stratum, plan_strata

# Every log₂ bucket its own stratum (10 at full size).  Measured on the full store, 256 users a step:
# 3 strata pad to 131,632 rows and take 242 ms a step, 10 pad to 72,586 rows and take 117 ms (2.1×
# faster) for 18 s more compilation (10.5 → 28.9 s).
MAX_STRATA = 16


class DeviceStore(NamedTuple):
    """A rating store's arrays as a step reads them (numpy, then on the backend's device)."""

    offsets: Any  # (N + 1,) int64
    num_train: Any  # (N,) int32
    movie: Any  # (R,) int32
    y: Any  # (R,) uint8
    table: Any  # (M, d) float: the movie × feature table


def store_arrays(store: Any, dtype: Any) -> DeviceStore:
    """The store's arrays as numpy; the feature table in ``dtype``."""
    return DeviceStore(store.offsets, store.num_train, store.movie, store.y, np.asarray(store.genres, dtype))


def gather(store: DeviceStore, users: Any, width: int, part: str = "train") -> dict[str, Any]:
    """The contract's padded rows of ``users`` ``(B,)``: ``x (B, width, d)``, ``y``, ``mask``, in the
    table's dtype, gathered from the CSR arrays (padding is zero, like the registered datasets').

    ``part``: ``"train"`` (each user's first ``num_train`` ratings) or ``"test"`` (the rest)."""
    xp = namespace(store.table)
    dtype = store.table.dtype
    start = xp.take(store.offsets, users, axis=0)
    n_train = xp.astype(xp.take(store.num_train, users, axis=0), start.dtype)
    if part == "train":
        first, size = start, n_train
    else:
        first, size = start + n_train, xp.take(store.offsets, users + 1, axis=0) - start - n_train
    pos = xp.arange(width, dtype=start.dtype)
    valid = pos[None, :] < size[:, None]
    rows = xp.where(valid, first[:, None] + pos[None, :], xp.zeros_like(first[:, None]))
    movie = xp.take(store.movie, xp.reshape(rows, (-1,)), axis=0)
    x = (
        xp.reshape(xp.take(store.table, movie, axis=0), (*rows.shape, -1))
        * xp.astype(valid, dtype)[..., None]
    )
    y_raw = xp.reshape(xp.take(store.y, xp.reshape(rows, (-1,)), axis=0), rows.shape)
    y = xp.astype(xp.where(valid, y_raw, xp.zeros_like(y_raw)), dtype)
    return {"x": x, "y": y, "mask": xp.astype(valid, dtype)}


class RatingStoreBatches:
    """Users of a rating store stratified by training size, their rows gathered each step (module
    docstring).  ``batch_users`` ≥ N: every user every step (the full data, scale 1).

    Parameters
    ----------
    store : RatingStore
        The ratings.
    batch_users : int
        Users a step (B), allocated to the strata in proportion to their sizes.
    max_strata : int
        Size strata of a step (each a separately shaped part of the compiled step: more strata pad
        less and compile longer).
    """

    def __init__(self, store: Any, batch_users: int, max_strata: int = MAX_STRATA):
        self.store, self.batch_users, self.max_strata = store, batch_users, max_strata
        self.plan = plan_strata(store.train_sizes, batch_users, max_strata)
        self.strata = tuple(Stratum(len(p.groups), p.alloc, p.scale) for p in self.plan)
        self.groups_per_pick = tuple(p.alloc for p in self.plan)

    def arrays(self, dtype: str) -> dict[str, Any]:
        return {"store": store_arrays(self.store, dtype), "strata": [p.groups for p in self.plan]}

    def picks(self, data: Any, positions: list[Any]) -> list[Pick]:
        out = []
        for p, users_s, pos in zip(self.plan, data["strata"], positions, strict=True):
            users = namespace(users_s).take(users_s, pos, axis=0)
            out.append(Pick(users, gather(data["store"], users, p.width), p.scale))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "batch_groups": self.batch_users,
            "row_layout": True,
            "strata": len(self.plan),
            "groups_per_step": sum(self.groups_per_pick),
            "strata_widths": [p.width for p in self.plan],
            "strata_users": [len(p.groups) for p in self.plan],
            "rows_per_step": sum(p.alloc * p.width for p in self.plan),
            "max_strata": self.max_strata,
        }
