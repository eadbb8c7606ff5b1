"""An experiment's records: which file they are in, one record per sweep cell, and where they came from.

``hierbench sweep EXPERIMENT`` appends to ``<records-root>/<experiment>[-quick]/records.jsonl``
(:func:`records_path`); :func:`load_source` reads that file through the one validating reader
(:func:`hierbench.records.read_records`, which skips and counts unreadable lines) and keeps one record
per cell (:func:`dedupe`).  :func:`provenance` collects the git SHAs, dirty flags, commands and times
found in the records' ``env``, for the headers and the index.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierbench._io import SWEEPS_DIR
from hierbench.records import Record, read_records

DEFAULT_RECORDS_ROOT = SWEEPS_DIR


@dataclass
class Source:
    """The records of one experiment and where they came from."""

    experiment: str
    path: Path
    records: list[Record]
    read: int  # records read, before de-duplication
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # unreadable lines: file, line, why
    tuning: list[Record] = field(default_factory=list)  # the sweep's tuning runs (role "tuning")

    def describe(self) -> str:
        """``path (k records)``, for headers and captions; tuning runs and their cost counted apart."""
        text = f"`{os.fspath(self.path)}` ({len(self.records)} records"
        if self.tuning:
            cost = sum(r["tuning"]["total_wall_s"] for r in self.tuning if isinstance(r.get("tuning"), dict))
            text += f", and {len(self.tuning)} tuning runs whose grids took {cost:,.0f} s of optimization"
        return text + ")"


def records_path(records_root: str | os.PathLike, experiment: str, quick: bool = False) -> Path:
    """``<records_root>/<experiment>[-quick]/records.jsonl``, where ``hierbench sweep`` writes."""
    return Path(records_root) / f"{experiment}{'-quick' if quick else ''}" / "records.jsonl"


def missing_message(experiment: str, quick: bool = False) -> str:
    """The message for an experiment without records, naming the command that makes them."""
    flag = " QUICK=1" if quick else ""
    return f"no records for experiment {experiment}: run `make sweep EXP={experiment}{flag}`"


def dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per sweep cell: the last that is not an error, else the last (file order is kept).

    A sweep run with ``--retry-failed`` appends a new record for a cell whose record was an error;
    records without a ``cell_id`` are all kept.
    """
    chosen: dict[str, int] = {}
    for i, rec in enumerate(records):
        cid = rec.get("cell_id")
        if cid is None:
            continue
        prev = chosen.get(cid)
        if prev is None or rec["status"] != "error" or records[prev]["status"] == "error":
            chosen[cid] = i
    keep = set(chosen.values())
    return [rec for i, rec in enumerate(records) if rec.get("cell_id") is None or i in keep]


def load_source(records_root: str | os.PathLike, experiment: str, quick: bool = False) -> Source | None:
    """An experiment's de-duplicated records (validated by :func:`hierbench.records.read_records`, which
    skips and counts unreadable lines), or None when its records file is missing or holds none."""
    path = records_path(records_root, experiment, quick)
    if not path.is_file():
        return None
    records = read_records([path])
    if not records:
        return None
    runs = [r for r in records if r.get("role") != "tuning"]  # a tuning run's choice is in its cells' records
    tuning = dedupe([r for r in records if r.get("role") == "tuning"])
    return Source(experiment, path, dedupe(runs), len(records), records.skipped, tuning)


def provenance(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Git SHAs with dirty flags (counted), the commands and the UTC time span found in the records' env."""
    shas: Counter = Counter()
    commands: Counter = Counter()
    times = []
    for rec in records:
        env = rec.get("env") or {}
        sha = env.get("git_sha")
        shas[(sha[:12] if sha else "unknown", env.get("git_dirty"))] += 1
        if env.get("argv"):
            argv = list(env["argv"])
            argv[0] = Path(argv[0]).name  # .venv/bin/hierbench -> hierbench
            commands[" ".join(argv)] += 1
        if env.get("time_utc"):
            times.append(env["time_utc"])
    return {"shas": shas, "commands": commands, "time_span": (min(times), max(times)) if times else None}


def provenance_text(records: list[dict[str, Any]]) -> str:
    """``git 1a2b3c4d5e6f (dirty) × 12, …``: the code the records were made with."""
    prov = provenance(records)
    parts = []
    for (sha, dirty), count in sorted(prov["shas"].items(), key=lambda kv: -kv[1]):
        flag = {True: " (dirty)", False: " (clean)"}.get(dirty, " (dirty flag unknown)")
        parts.append(f"git {sha}{flag} × {count}")
    return ", ".join(parts) or "no env in the records"
