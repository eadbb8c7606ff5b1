"""Batch sources: what one training step sees of the data.

A batch source says which groups a step's −ELBO estimate uses and how their local terms are scaled,
so that the estimate stays unbiased for the full-data ELBO.  It is backend-neutral: the backend draws
the random positions (``choice_without_replacement`` from JAX keys, ``torch.randperm`` from a
generator) and :meth:`Batches.picks` gathers the groups with array-API code.

=====================  ==========================================================================
:class:`FullData`      every group every step (scale 1); ragged groups evaluated on size buckets
:class:`UniformGroups` B of the N groups, drawn without replacement, scaled by N/B
:class:`Stratified`    ragged groups: about B·N_s/N from each size stratum s, scaled by N_s/B_s
RatingStoreBatches     a model whose ratings are kept compressed (``model.store``): stratified as
                       above, each step's rows gathered from the store
                       (:mod:`hierbench.methods.store_batches`)
=====================  ==========================================================================

A new source is one class (one file) with the four members of :class:`Batches`;
:func:`default_batches` chooses among them from the model and the method's ``batch_groups``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from hierbench.datasets.base import HierModel, ParamError, check_positive_int, row_layout
from hierbench.methods._ops import namespace
from hierbench.methods.base import Infeasible

MAX_STRATA = 3  # default size strata of a minibatch on ragged groups (each is a branch of the step)

Array = Any


class Stratum(NamedTuple):
    """A set of groups sampled apart: N_s groups, B_s of them drawn a step, their terms scaled by
    ``scale`` = N_s / B_s."""

    size: int
    alloc: int
    scale: float


class Pick(NamedTuple):
    """The groups one part of a step uses: ids ``idx`` (None: all N, in order), their rows ``data``,
    the weight ``scale`` of their local terms, and (full data on ragged groups only) ``rows``, the size
    buckets on which the full-data joint is evaluated (:func:`~hierbench.datasets.base.log_joint_rows`)."""

    idx: Array | None
    data: dict[str, Array]
    scale: float
    rows: list[dict[str, Any]] | None = None


class Batches(Protocol):
    """A batch source.

    ``strata``: the strata the backend draws positions in (empty: every step sees all groups).
    ``groups_per_pick``: the number of groups of each :class:`Pick` a step makes (what the family's
    ``noise_shapes`` needs).  ``arrays(dtype)``: the step's ``data`` argument as numpy arrays
    (floating ones in ``dtype``), put on the device once.  ``picks(data, positions)``: array-API code,
    ``positions[s]`` being ``strata[s].alloc`` distinct positions in ``range(strata[s].size)``.
    ``describe()``: what a record states about the batching.
    """

    strata: tuple[Stratum, ...]
    groups_per_pick: tuple[int, ...]

    def arrays(self, dtype: str) -> Any: ...

    def picks(self, data: Any, positions: list[Array]) -> list[Pick]: ...

    def describe(self) -> dict[str, Any]: ...


def cast(tree: Any, dtype: str) -> Any:
    """Every floating numpy array of a dict/list pytree in ``dtype``; others unchanged."""
    if isinstance(tree, dict):
        return {k: cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(cast(v, dtype) for v in tree)
    a = np.asarray(tree)
    return a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a


def take_groups(data: dict[str, Array], idx: Array) -> dict[str, Array]:
    """Every array of ``data`` at the groups ``idx`` (axis 0)."""
    return {k: namespace(v).take(v, idx, axis=0) for k, v in data.items()}


class FullData:
    """Every group every step.  Where groups are ragged (:func:`~hierbench.datasets.base.row_layout`)
    the joint is evaluated on size buckets (cost ∝ observations instead of N·n_max), and the padded
    groups are still passed for families that read the rows (amortized)."""

    strata: tuple[Stratum, ...] = ()

    def __init__(self, model: HierModel, batch_groups: int | None = None):
        if model.store is not None:
            refuse_full_data(model, "this method")
        self.model, self.batch_groups = model, batch_groups  # recorded: a B >= N asked for full data
        self.layout = row_layout(model)
        self.groups_per_pick = (model.num_groups,)

    def arrays(self, dtype: str) -> dict[str, Any]:
        out = {"groups": cast(self.model.data, dtype)}
        if self.layout is not None:
            out["rows"] = cast(self.layout, dtype)
        return out

    def picks(self, data: Any, positions: list[Array]) -> list[Pick]:
        return [Pick(None, data["groups"], 1.0, data.get("rows"))]

    def describe(self) -> dict[str, Any]:
        return {"batch_groups": self.batch_groups, "row_layout": self.layout is not None}


class UniformGroups:
    """B of the N groups a step, without replacement; their local terms scaled by N/B (unbiased for
    group-factorized families)."""

    def __init__(self, model: HierModel, batch_groups: int):
        n = model.num_groups
        self.model, self.batch_groups = model, batch_groups
        self.strata = (Stratum(n, batch_groups, n / batch_groups),)
        self.groups_per_pick = (batch_groups,)

    def arrays(self, dtype: str) -> dict[str, Any]:
        return {"groups": cast(self.model.data, dtype)}

    def picks(self, data: Any, positions: list[Array]) -> list[Pick]:
        (idx,) = positions
        return [Pick(idx, take_groups(data["groups"], idx), self.strata[0].scale)]

    def describe(self) -> dict[str, Any]:
        return {"batch_groups": self.batch_groups, "row_layout": False}


def size_levels(sizes: np.ndarray) -> np.ndarray:
    """⌊log₂ n_i⌋ (n_i ≥ 1): the size buckets of :func:`~hierbench.datasets.base.row_layout`."""
    return np.floor(np.log2(np.maximum(sizes, 1))).astype(np.int64)


class StratumPlan(NamedTuple):
    """One planned stratum: its groups (bucket by bucket), the width its rows pad to, B_s, N_s/B_s."""

    groups: np.ndarray
    width: int
    alloc: int
    scale: float


def plan_strata(sizes: np.ndarray, batch_groups: int, max_strata: int) -> list[StratumPlan]:
    """Size strata of a minibatch on ragged groups.

    The log₂ size buckets, merged into at most ``max_strata`` runs of consecutive sizes (each stratum
    is a separately shaped part of a compiled step: eight of them took minutes to compile, and fewer
    pad more); proportional allocation of ``batch_groups`` with at least one group per stratum.  A
    stratum's groups are listed bucket by bucket, each bucket in increasing id order.
    """
    level = size_levels(sizes)
    levels = np.unique(level)
    runs = np.array_split(np.arange(len(levels)), min(max_strata, len(levels)))
    num_groups = len(sizes)
    batch_groups = min(batch_groups, num_groups)
    out = []
    for run in runs:
        groups = np.concatenate([np.flatnonzero(level == levels[b]) for b in run]).astype(np.int32)
        n = len(groups)
        alloc = min(n, max(1, round(batch_groups * n / num_groups)))
        out.append(StratumPlan(groups, max(1, int(sizes[groups].max())), alloc, n / alloc))
    return out


class Stratified:
    """Ragged groups: about B·N_s/N groups (at least one) from each size stratum s a step, scaled by
    N_s/B_s.  Still unbiased, and a batch pads only to its own stratum's widest group rather than to
    the largest group (MovieLens: 8× fewer padded rows)."""

    def __init__(self, model: HierModel, batch_groups: int, max_strata: int = MAX_STRATA):
        mask = model.data["mask"]
        self.model, self.batch_groups, self.max_strata = model, batch_groups, max_strata
        self.plan = plan_strata(np.asarray(mask).sum(axis=1).astype(np.int64), batch_groups, max_strata)
        self.strata = tuple(Stratum(len(p.groups), p.alloc, p.scale) for p in self.plan)
        self.groups_per_pick = tuple(p.alloc for p in self.plan)

    def arrays(self, dtype: str) -> dict[str, Any]:
        data = self.model.data
        mask_shape = np.shape(data["mask"])
        out = []
        for p in self.plan:
            rows = {
                k: np.asarray(v)[p.groups, : p.width]
                if np.shape(v)[:2] == mask_shape
                else np.asarray(v)[p.groups]
                for k, v in data.items()
            }
            out.append({"index": p.groups, "data": cast(rows, dtype)})
        return {"strata": out}

    def picks(self, data: Any, positions: list[Array]) -> list[Pick]:
        out = []
        for stratum, arrays, pos in zip(self.strata, data["strata"], positions, strict=True):
            idx = namespace(arrays["index"]).take(arrays["index"], pos, axis=0)
            out.append(Pick(idx, take_groups(arrays["data"], pos), stratum.scale))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "batch_groups": self.batch_groups,
            "row_layout": True,
            "strata": len(self.strata),
            "groups_per_step": sum(self.groups_per_pick),
            "max_strata": self.max_strata,
        }


def refuse_full_data(model: HierModel, who: str) -> None:
    """Raise :class:`~hierbench.methods.base.Infeasible` for ``who`` reading the full padded data of a
    model whose ratings are kept compressed, with the memory the padded layout would take."""
    need = model.store.padded_bytes
    raise Infeasible(
        f"{who} reads all the data at once, padded: {need / 2**30:,.1f} GiB for {model.num_groups:,} "
        "groups (float64 x, y, mask); this model keeps its ratings compressed (layout=store), which "
        "VI over groups reads a minibatch at a time (branch, amortized)",
        memory_bytes=need,
    )


def check_batch_groups(batch_groups: int | None, num_groups: int) -> None:
    """Refuse a ``batch_groups`` above the data's N (:class:`ParamError`): B = N is full data."""
    if batch_groups is not None and batch_groups > num_groups:
        raise ParamError(
            f"batch_groups={batch_groups} is more than the data's N={num_groups} groups "
            f"(batch_groups={num_groups} is full data)"
        )


def default_batches(
    model: HierModel,
    batch_groups: int | None,
    factorizes_over_groups: bool,
    max_strata: int | None = None,
) -> Batches:
    """The batch source of ``batch_groups`` (None: full data): full data, uniform groups, or size
    strata where groups are ragged; on a model whose ratings are kept in a store
    (``model.store``), size strata gathered from the store
    (:class:`~hierbench.methods.store_batches.RatingStoreBatches`; full data: every user a step).
    ``batch_groups`` = N is full data.  ``max_strata``: size strata of a stratified source (None: the
    source's default, :data:`MAX_STRATA` padded, 16 on a store).

    Raises
    ------
    ParamError
        A ``batch_groups`` or ``max_strata`` that is not a positive integer, a ``batch_groups`` above N
        (an experiment over N with a fixed B sets B = N where N is smaller: say what runs), or
        ``batch_groups`` < N for a family that does not factor over groups.
    Infeasible
        A family that does not factor over groups on a store model: it would need the padded data.
    """
    if max_strata is not None:
        max_strata = check_positive_int("max_strata", max_strata)
    if batch_groups is not None and (
        isinstance(batch_groups, bool) or not isinstance(batch_groups, (int, np.integer)) or batch_groups < 1
    ):
        raise ParamError(f"batch_groups must be an integer >= 1, got {batch_groups!r}")
    check_batch_groups(batch_groups, model.num_groups)
    if model.store is not None:
        from hierbench.methods.store_batches import MAX_STRATA as STORE_MAX_STRATA
        from hierbench.methods.store_batches import RatingStoreBatches

        if not factorizes_over_groups:
            refuse_full_data(model, "a family that does not factor over groups")
        every = model.num_groups if batch_groups is None else min(int(batch_groups), model.num_groups)
        return RatingStoreBatches(model.store, every, max_strata or STORE_MAX_STRATA)
    if batch_groups is None:
        return FullData(model)
    if batch_groups >= model.num_groups:
        return FullData(model, model.num_groups)
    if not factorizes_over_groups:
        raise ParamError("batch_groups < N needs a family that factorizes over groups")
    if row_layout(model) is not None:
        return Stratified(model, int(batch_groups), max_strata or MAX_STRATA)
    return UniformGroups(model, int(batch_groups))
