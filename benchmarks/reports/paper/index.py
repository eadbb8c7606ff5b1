"""The index ``README.md`` of the output folder: every artifact, the command, the records and their code."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from hierbench._io import atomic_write_text
from hierbench.reports.paper.experiments import EXPERIMENTS, FIGURE_TEXT, STEMS, TITLES
from hierbench.reports.paper.scaling import headline_sentence
from hierbench.reports.paper.sources import Source, provenance, provenance_text

if TYPE_CHECKING:
    from hierbench.reports.paper.make import PaperResult


def write_index(result: PaperResult, sources: dict[str, Source], command: str, quick: bool) -> Path:
    """``README.md`` in the output folder: every artifact, its command, records and their provenance."""
    lines = [
        f"# The paper's experiments: figures and tables{' (quick records)' if quick else ''}",
        "",
        f"Made by `{command}` from stored sweep records only (nothing is run). `make figures` remakes "
        "them from `results/sweeps/`; `make paper` runs the four sweeps first.",
        "",
    ]
    for num, exp in enumerate(EXPERIMENTS, 1):
        if exp not in sources and exp not in result.missing:
            continue
        lines += [f"## {num}. {TITLES[exp]} (`{exp}`)", ""]
        if exp in result.missing:
            lines += [f"**{result.missing[exp]}**", ""]
            continue
        source = sources[exp]
        fig, table = STEMS[exp]
        prov = provenance(source.records)
        statuses = Counter(r["status"] for r in source.records)
        lines += [
            f"- Figure {num}: [`{fig}.png`]({fig}.png) ([PDF]({fig}.pdf)): {FIGURE_TEXT[exp]}",
            f"- Table {num}: [`{table}.md`]({table}.md) ([CSV]({table}.csv))",
            f"- Command: `{command}`",
            f"- Records: {source.describe()}"
            + (
                f", {source.read - len(source.records)} superseded record(s) of retried cells skipped"
                if source.read > len(source.records)
                else ""
            )
            + (
                f", {len(source.skipped)} unreadable line(s) skipped ("
                + ", ".join(f"line {line}: {why}" for _, line, why in source.skipped[:5])
                + (", ..." if len(source.skipped) > 5 else "")
                + ")"
                if source.skipped
                else ""
            )
            + "; statuses: "
            + ", ".join(f"{n} {s}" for s, n in statuses.most_common()),
            f"- Records' code: {provenance_text(source.records)}",
        ]
        if prov["commands"]:
            lines.append("- Records made by: " + ", ".join(f"`{c}`" for c in prov["commands"]))
        if prov["time_span"]:
            lines.append(f"- Records' time span (UTC): {prov['time_span'][0]} to {prov['time_span'][1]}")
        if exp == "scaling":
            lines.append(f"- {headline_sentence(result.headline)}")
        lines.append("")
    path = result.out / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
