"""Running a suite: every entry once per seed through the sweep's cell runner, and the references it needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from hierbench._io import REFERENCES_DIR
from hierbench.datasets.base import ParamError
from hierbench.suites.definition import Suite
from hierbench.suites.metrics import ACCURACY_METRICS, extract_metrics


def reference_notes(suite: Suite, references: str | Path | None = REFERENCES_DIR) -> dict[str, str]:
    """Per entry, which ground truth its accuracy metrics are scored against.

    Raises
    ------
    ParamError
        If an entry with accuracy metrics has no exact posterior and no accepted stored reference;
        the message is the command that builds one.
    """
    from hierbench import reference as refstore
    from hierbench.registry import build_model

    notes = {}
    for entry in suite.entries:
        if not set(entry.metrics) & set(ACCURACY_METRICS):
            notes[entry.name] = "none needed"
            continue
        model = build_model(entry.dataset, entry.data_params)
        if references is None:
            raise ParamError(
                f"suite {suite.name!r} entry {entry.name}: its accuracy metrics need --references"
            )
        ref, note = refstore.find_accepted(entry.dataset, model, Path(references))
        if ref is None:
            command = refstore.regenerate_command(entry.dataset, model.params, 0, {})
            raise ParamError(
                f"suite {suite.name!r} entry {entry.name}: {note}; its accuracy metrics need one.  "
                f"Build it with: {command}"
            )
        notes[entry.name] = note
    return notes


def run_suite(
    suite: Suite,
    run_seeds: Iterable[int],
    references: str | Path | None = REFERENCES_DIR,
    log: Callable[[str], None] | None = None,
    compilation_cache: bool = True,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Run every entry of ``suite`` once per seed.

    Parameters
    ----------
    suite : Suite
        What to run.
    run_seeds : iterable of int
        Run seeds (the data seed is part of the suite).
    references : path, optional
        Reference store for the accuracy blocks of datasets without an exact posterior.
    log : callable, optional
        Called with one line per finished run.
    compilation_cache : bool
        Switch on JAX's persistent compilation cache (``.cache/hierbench/jax``, the one ``nuts``
        uses): repeats of an entry compile the same programs, so only the first compiles.

    Returns
    -------
    values : DataFrame
        Long table ``entry, metric, seed, value`` (NaN: the run gave no value).
    runs : list of dict
        Per run: entry, seed, status, elbo, steps, wall_s, compile_s, total_s and any error.
    """
    from hierbench.suites.executors import run_cell

    if compilation_cache:
        from hierbench._jax import enable_compilation_cache

        enable_compilation_cache()
    run_seeds = list(run_seeds)
    rows, runs = [], []
    total = len(suite.entries) * len(run_seeds)
    for entry in suite.entries:
        for seed in run_seeds:
            t0 = time.perf_counter()
            record = run_cell(suite.cell(entry, seed), {"references": references})
            total_s = time.perf_counter() - t0
            values = extract_metrics(record, entry.metrics)
            rows += [{"entry": entry.name, "metric": m, "seed": seed, "value": v} for m, v in values.items()]
            run = {
                "entry": entry.name,
                "seed": seed,
                "status": record["status"],
                "elbo": record["elbo"],
                "steps": record["steps"],
                "wall_s": record["wall_s"],
                "compile_s": record["compile_s"],
                "total_s": total_s,
            }
            if record.get("error"):
                run["error"] = record["error"]
            runs.append(run)
            if log is not None:
                extra = f" ({record['error']})" if record["status"] != "ok" and record.get("error") else ""
                log(
                    f"[{len(runs)}/{total}] {entry.name} seed {seed}: {record['status']}{extra}, "
                    f"{total_s:.1f} s (train {record['wall_s']:.1f} s)"
                )
    return pd.DataFrame(rows, columns=["entry", "metric", "seed", "value"]), runs
