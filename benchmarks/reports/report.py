"""``hierbench report``: the tables and figures of a records file, written as one set, all or nothing.

Every output is made in memory first; then the set replaces the previous report in one step
(:func:`hierbench._io.replace_files`), which also removes the previous report's outputs that this one
does not make (a figure of a dataset no longer in the records, an accuracy table of records without
accuracy).  A report that fails anywhere leaves the folder as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hierbench._io import replace_files
from hierbench.reports.convergence import convergence_plan
from hierbench.reports.figures import trace_figure
from hierbench.reports.tables import (
    accuracy_markdown,
    accuracy_table,
    by_dataset,
    common_settings,
    format_markdown,
    read_note,
    summary_table,
    trace_table,
)

# what a report writes into its folder (and so may remove there when a new report does not make it)
OUTPUT_NAMES = ("summary.md", "summary.csv", "trace.csv", "accuracy.md", "accuracy.csv")
FIGURE_GLOB = "elbo_vs_time_*.png"


def make_report(
    records: Sequence[dict[str, Any]],
    skipped: Sequence[tuple[str, int, str]] = (),
    sources: Sequence[str] = (),
) -> dict[str, str | bytes]:
    """Every output of a report, in memory: file name -> content (text or PNG bytes).

    Parameters
    ----------
    records : list of dict
        Validated records (:func:`hierbench.records.read_records`), every status.
    skipped : list of (file, line, reason)
        The lines the reader could not read: their count heads ``summary.md``.
    sources : list of str
        The records files, named in ``summary.md``.
    """
    files: dict[str, str | bytes] = {}
    summary = summary_table(records)
    files["summary.csv"] = summary.to_csv(index=False)
    files["summary.md"] = (
        "# hierbench summary\n\n"
        + read_note(len(records), skipped, sources)
        + "One row per record, whatever its status (a run that did not end `ok` has its error). Final ELBO "
        "(float64, ± Monte Carlo standard error), KL = log evidence − ELBO where the evidence is exact "
        "(≤ 0: Monte Carlo noise around a converged fit), optimization wall time (compile excluded) and "
        "compile time. `params` names the run settings that differ between a dataset's rows (and `data` "
        "its data parameters other than N); what they share:\n\n"
        + common_settings(records)
        + format_markdown(summary)
        + "\n"
    )
    if any(rec.get("accuracy") for rec in records):
        acc = accuracy_table(records)
        files["accuracy.csv"] = acc.to_csv(index=False)
        files["accuracy.md"] = (
            "# Posterior accuracy against the reference\n\nPer cell: global / local block standardized "
            "mean error |E_q − E_ref| / sd_ref (mean over coordinates) · PSIS k̂ of log p − log q. A row is "
            "a method (a row per configuration where a dataset has several, named by what differs; each "
            "seed is shown); its settings per dataset are in summary.md.\n\n" + accuracy_markdown(acc) + "\n"
        )
    traces = trace_table(records)
    if not traces.empty:
        files["trace.csv"] = traces.to_csv(index=False)
    for dataset, recs in by_dataset(records).items():
        plan = convergence_plan(recs)
        if plan.curves:
            files[f"elbo_vs_time_{dataset}.png"] = trace_figure(plan)
    return files


def write_report(
    records: list[dict[str, Any]],
    out_dir: str | Path,
    skipped: Sequence[tuple[str, int, str]] | None = None,
    sources: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv``, ``trace.csv``, ``accuracy.*`` and a figure per dataset
    into ``out_dir``, as one set (:func:`make_report`, then :func:`hierbench._io.replace_files`).

    Parameters
    ----------
    records : list of dict
        Validated records (:func:`hierbench.records.read_records`).
    out_dir : path
        The output folder (created).
    skipped : list of (file, line, reason), optional
        Lines the reader could not read (default: ``records.skipped`` where it has one); their count
        and places are stated at the top of ``summary.md``.
    sources : list of str
        The records files, named in ``summary.md``.

    Returns
    -------
    dict
        Output name -> path.  Nothing in ``out_dir`` changes unless every output could be made and
        written; the previous report's outputs that this one does not make are removed with it.
    """
    out = Path(out_dir)
    skipped = list(getattr(records, "skipped", []) if skipped is None else skipped)
    files = make_report(records, skipped, sources)
    stale = [out / name for name in OUTPUT_NAMES if name not in files]
    stale += [p for p in sorted(out.glob(FIGURE_GLOB)) if p.name not in files] if out.is_dir() else []
    replace_files({out / name: content for name, content in files.items()}, remove=stale)
    return {name: out / name for name in files}
