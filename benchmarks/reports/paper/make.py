"""Every figure and table of the chosen experiments from their stored records, and the index."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hierbench.reports.paper.accuracy import make_accuracy
from hierbench.reports.paper.experiments import EXPERIMENTS
from hierbench.reports.paper.index import write_index
from hierbench.reports.paper.movielens import make_movielens
from hierbench.reports.paper.scaling import make_scaling
from hierbench.reports.paper.sources import DEFAULT_RECORDS_ROOT, Source, load_source, missing_message
from hierbench.reports.paper.theta_collapse import make_theta

COMMAND = "hierbench figures"  # the command line (cli.py runs command.run)
DEFAULT_OUT = Path("results") / "paper"
DEFAULT_OUT_QUICK = Path("results") / "paper-quick"


@dataclass
class PaperResult:
    """What :func:`make_paper` wrote: artifacts per experiment, messages for the missing ones."""

    out: Path
    artifacts: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # experiment -> message
    headline: list[dict[str, Any]] = field(default_factory=list)
    index: Path | None = None


def paper_command(out: Path, records_root: Path, quick: bool) -> str:
    """The command line that regenerates these artifacts."""
    cmd = f"{COMMAND} --out {os.fspath(out)}"
    if Path(records_root) != DEFAULT_RECORDS_ROOT:
        cmd += f" --records-root {os.fspath(records_root)}"
    return cmd + (" --quick" if quick else "")


def make_paper(
    out: str | os.PathLike | None = None,
    records_root: str | os.PathLike = DEFAULT_RECORDS_ROOT,
    quick: bool = False,
    experiments: Sequence[str] = EXPERIMENTS,
) -> PaperResult:
    """Write every figure and table of ``experiments`` from their stored records, and an index.

    Parameters
    ----------
    out : path, optional
        The output folder; default ``results/paper`` (``results/paper-quick`` with ``quick``).
    records_root : path
        Where the sweeps' records are: ``<records_root>/<experiment>[-quick]/records.jsonl``.
    quick : bool
        Read the ``--quick`` sweeps' records.
    experiments : sequence of str
        A subset of :data:`EXPERIMENTS`.

    Returns
    -------
    PaperResult
        The artifacts written per experiment, the messages of the experiments without records, the
        headline rows (:func:`~hierbench.reports.paper.scaling.headline_ratio`) and the index file.
    """
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(EXPERIMENTS)}")
    out = Path(out) if out is not None else (DEFAULT_OUT_QUICK if quick else DEFAULT_OUT)
    records_root = Path(records_root)
    out.mkdir(parents=True, exist_ok=True)
    command = paper_command(out, records_root, quick)
    result = PaperResult(out)
    sources: dict[str, Source] = {}
    for exp in experiments:
        source = load_source(records_root, exp, quick)
        if source is None:
            result.missing[exp] = missing_message(exp, quick)
            continue
        sources[exp] = source
        if exp == "scaling":
            paths, result.headline = make_scaling(source, out, command, quick)
        else:
            paths = {"accuracy": make_accuracy, "movielens": make_movielens, "theta_collapse": make_theta}[
                exp
            ](source, out, command, quick)
        result.artifacts[exp] = paths
    result.index = write_index(result, sources, command, quick)
    return result
