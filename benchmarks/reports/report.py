"""``hierbench report``: the tables and figures of a records file, written all or nothing.

Every output is made in memory first and then written atomically (:func:`hierbench._io.atomic_write`),
so a report that fails leaves nothing half-written behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hierbench._io import atomic_write_bytes, atomic_write_text
from hierbench.reports.figures import trace_figure
from hierbench.reports.tables import (
    accuracy_markdown,
    accuracy_table,
    format_markdown,
    skipped_note,
    summary_table,
    trace_table,
)


def write_report(
    records: list[dict[str, Any]],
    out_dir: str | Path,
    skipped: Sequence[tuple[str, int, str]] | None = None,
) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv``, ``trace.csv`` and figures into ``out_dir``.

    Parameters
    ----------
    records : list of dict
        Validated records (:func:`hierbench.records.read_records`).
    out_dir : path
        The output folder (created).
    skipped : list of (file, line, reason), optional
        Lines the reader could not read (default: ``records.skipped`` where it has one); their count
        and places are stated at the top of ``summary.md``.

    Returns
    -------
    dict
        Output name -> path.  Nothing is written unless every output could be made.
    """
    out = Path(out_dir)
    skipped = list(getattr(records, "skipped", []) if skipped is None else skipped)
    files: dict[str, tuple[Path, str | bytes]] = {}  # made in full before anything is written
    summary = summary_table(records)
    files["summary_csv"] = (out / "summary.csv", summary.to_csv(index=False))
    files["summary_md"] = (
        out / "summary.md",
        "# hierbench summary\n\n"
        + skipped_note(len(records), skipped)
        + "Final ELBO (float64, ± Monte Carlo standard error), KL = log evidence − ELBO "
        "where the evidence is exact, optimization wall time (compile excluded) and compile time.\n\n"
        + format_markdown(summary)
        + "\n",
    )
    if any(rec.get("accuracy") for rec in records):
        acc = accuracy_table(records)
        files["accuracy_csv"] = (out / "accuracy.csv", acc.to_csv(index=False))
        files["accuracy_md"] = (
            out / "accuracy.md",
            "# Posterior accuracy against the reference\n\nPer cell: global / local block standardized "
            "mean error |E_q − E_ref| / sd_ref (mean over coordinates) · PSIS k̂ of log p − log q.\n\n"
            + accuracy_markdown(acc)
            + "\n",
        )
    traces = trace_table(records)
    if not traces.empty:
        files["trace_csv"] = (out / "trace.csv", traces.to_csv(index=False))
        for dataset, sub in traces.groupby("dataset"):
            files[f"fig_{dataset}"] = (out / f"elbo_vs_time_{dataset}.png", trace_figure(sub))
    out.mkdir(parents=True, exist_ok=True)
    for path, content in files.values():
        (atomic_write_text if isinstance(content, str) else atomic_write_bytes)(path, content)
    return {name: path for name, (path, _) in files.items()}
