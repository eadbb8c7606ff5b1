"""Tuning once per configuration, for a sweep: ``tune = "lr"`` with ``tune_once = {...}`` in a run.

Tuning every cell of a grid by the protocol (:mod:`hierbench.harness.tune`) costs one run per value of
the grid per cell.  With ``tune_once``, the cells that differ only in their seed, steps or budget (one
*configuration*: method, its parameters, data, backend) share one **tuning cell**: the configuration
run by the protocol on ``tune_once``'s seed (default the smallest of the cells') and budget (its
``steps`` and/or ``budget_s``, default the cells'; a ``budget_s`` alone keeps the cells' fewest steps as
a cap, so a tuning run is never longer than the runs it tunes) and ``checkpoints`` (default the cells':
the choice reads only each point's final q, so at large N one checkpoint saves the grid most of its
off-clock evaluation), recorded in the sweep's records file with
``role = "tuning"``.  Every cell of the configuration then runs once, at the chosen value; its record
has a ``tuning`` block naming the tuning record (``tuned_by``), the grid, every point, the choice and the
grid's total cost, with ``shared = true`` and what it was tuned on (``tuned_on``).

A tuning cell's id hashes its own keyword arguments under a ``"tuning"`` key, so it never collides
with a cell of the grid, and a resumed sweep finds the tuning record and runs nothing twice.
"""

from __future__ import annotations

import copy
from typing import Any

from hierbench.datasets.base import ParamError
from hierbench.suites.experiment import Cell, canonical_json, cell_id

ONCE_KEYS = ("seed", "steps", "budget_s", "checkpoints")
VARIES = ("seed", "steps", "budget_s", "tune_once")  # what the cells of one configuration may differ in


def check_once(kwargs: dict[str, Any]) -> None:
    """A cell's ``tune_once`` table: with ``tune``, of :data:`ONCE_KEYS` only; :class:`ParamError`."""
    once = kwargs.get("tune_once")
    if once is None:
        return
    if kwargs.get("tune") is None:
        raise ParamError("tune_once needs tune (e.g. tune = 'lr')")
    if not isinstance(once, dict):
        raise ParamError(f"tune_once must be a table of {', '.join(ONCE_KEYS)}; got {once!r}")
    unknown = sorted(set(once) - set(ONCE_KEYS))
    if unknown:
        raise ParamError(f"unknown tune_once key(s) {', '.join(unknown)}; valid: {', '.join(ONCE_KEYS)}")


def tuning_cells(cells: list[Cell]) -> dict[str, Cell]:
    """The tuning cell of every cell with ``tune_once`` (cell id -> its configuration's tuning cell)."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.kwargs.get("tune_once") is not None:
            config = {k: v for k, v in cell.kwargs.items() if k not in VARIES}
            groups.setdefault(canonical_json(config | {"once": cell.kwargs["tune_once"]}), []).append(cell)
    out: dict[str, Cell] = {}
    for members in groups.values():
        first = members[0]
        once = first.kwargs["tune_once"]
        kwargs = {k: v for k, v in first.kwargs.items() if k != "tune_once"}
        kwargs["seed"] = once.get("seed", min(c.kwargs["seed"] for c in members))
        if "steps" in once or "budget_s" in once:
            # a budget alone keeps the cells' step count as a cap: the tuning run is never longer than
            # the runs it tunes (its schedule decays over at most their steps)
            member_steps = [c.kwargs["steps"] for c in members if c.kwargs.get("steps") is not None]
            kwargs["steps"] = once.get("steps", min(member_steps) if member_steps else None)
            kwargs["budget_s"] = once.get("budget_s")
            if kwargs["budget_s"] is None:
                kwargs.pop("budget_s")
        if "checkpoints" in once:  # the grid's points are chosen by their final q: trace points are cost
            kwargs["checkpoints"] = once["checkpoints"]
        tuning = Cell(
            cell_id({"tuning": kwargs}),
            f"{first.label} (tuning {first.kwargs['tune']})",
            first.run_index,
            kwargs,
        )
        out |= {c.cell_id: tuning for c in members}
    return out


def tuned_cell(cell: Cell, tuning_record: dict[str, Any] | None) -> tuple[Cell, dict[str, Any]]:
    """The cell to run at its configuration's chosen value, and the ``tuning`` block for its record.

    Raises
    ------
    ParamError
        When the tuning cell has no record with a choice (it failed before its grid ran).
    """
    tuning = (tuning_record or {}).get("tuning")
    if not isinstance(tuning, dict) or "chosen" not in tuning:
        why = (tuning_record or {}).get("error") or "no record"
        raise ParamError(f"its configuration's tuning run chose nothing ({why})")
    param = tuning["param"]
    kwargs = untuned(cell).kwargs
    kwargs["method_params"] = dict(kwargs.get("method_params") or {}) | {param: tuning["chosen"]}
    block = copy.deepcopy(tuning) | {
        "shared": True,
        "tuned_by": tuning_record["record_id"],
        "tuning_cell": tuning_record.get("cell_id"),
        "tuned_on": {k: tuning_record.get("cell", {}).get(k) for k in ("seed", "steps", "budget_s")},
    }
    return Cell(cell.cell_id, cell.label, cell.run_index, kwargs), block


def untuned(cell: Cell) -> Cell:
    """The cell without its tuning keys: for a configuration whose tuning run was ``infeasible``
    (nothing to tune), so that the cell's own run records why it cannot run, as ``infeasible`` too."""
    kwargs = {k: v for k, v in cell.kwargs.items() if k not in ("tune", "tune_grid", "tune_once")}
    return Cell(cell.cell_id, cell.label, cell.run_index, kwargs)


def latest(records: list[dict[str, Any]], cell_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The last record of each of ``cell_ids`` that is not an error (else the last error)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        cid = rec.get("cell_id")
        if cid in cell_ids and (cid not in out or rec["status"] != "error" or out[cid]["status"] == "error"):
            out[cid] = rec
    return out
