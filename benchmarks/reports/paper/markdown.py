"""The tables as markdown (and CSV): number formats, the header that names the records, and the writer.

The markdown is made with ``disable_numparse`` so that tabulate keeps the formatted numbers as they
are (it would otherwise re-parse ``-5,000.00`` into ``-5000``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hierbench._io import atomic_write_text
from hierbench.reports.paper.sources import Source, provenance_text


def num_text(value: Any, fmt: str) -> str:
    """``value`` formatted with ``fmt``, or ``""`` for None, NaN or infinity."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return format(value, fmt)


def n_text(size: Any) -> str:
    """A group count with thousands separators (``10,000``), or ``?`` when unknown."""
    return f"{int(size):,}" if size is not None and not pd.isna(size) and size else "?"


INT_COLUMNS = (  # counts: printed as integers even where pandas made them float
    "N",
    "seed",
    "steps",
    "seeds",
    "seeds_ok",
    "with_theta_seeds",
    "without_theta_seeds",
    "gap_pairs",
)


def markdown_table(df: pd.DataFrame, formats: dict[str, str], drop: Sequence[str] = ()) -> str:
    """A table as markdown: numbers formatted, empty cells for missing values, numbers right-aligned.

    Parameters
    ----------
    df : DataFrame
        The table.
    formats : dict
        Column -> format spec (``",.2f"``); other columns are printed as they are, the counts of
        :data:`INT_COLUMNS` as integers.
    drop : sequence of str
        Columns to leave out.

    Returns
    -------
    str
        The markdown, or ``(no rows)``.
    """
    show = df.drop(columns=[c for c in drop if c in df]).astype(object)
    for col, fmt in formats.items():
        if col in show:
            show[col] = [num_text(v, fmt) for v in show[col]]
    for col in show:
        show[col] = [
            ""
            if v is None or (isinstance(v, float) and math.isnan(v))
            # a count column with a missing value is float in pandas: print 100, not 100.0
            else int(v)
            if col in INT_COLUMNS and isinstance(v, float) and v.is_integer()
            else v
            for v in show[col]
        ]
    if show.empty:
        return "(no rows)"
    numeric = set(formats) | set(INT_COLUMNS) | {c for c in df if pd.api.types.is_numeric_dtype(df[c])}
    # tabulate would re-parse the formatted numbers and drop their digits (-5,000.00 -> -5000)
    align = tuple("right" if col in numeric else "left" for col in show)
    return show.to_markdown(index=False, disable_numparse=True, colalign=align)


def mean_pm(df: pd.DataFrame, col: str, fmt: str) -> list[str]:
    """``mean ± sd`` per row from the columns ``<col>_mean`` and ``<col>_sd`` (the mean alone without sd)."""
    out = []
    for mean, sd in zip(df[f"{col}_mean"], df[f"{col}_sd"], strict=True):
        text = num_text(mean, fmt)
        if text and num_text(sd, fmt):
            text += f" ± {num_text(sd, fmt)}"
        out.append(text)
    return out


def header(title: str, source: Source, command: str, quick: bool) -> str:
    """A table's title and the line that names its records, their code and the command that made it."""
    return (
        f"# {title}{' (quick records)' if quick else ''}\n\n"
        f"Records: {source.describe()}; code: {provenance_text(source.records)}. "
        f"Made by `{command}` from the stored records only.\n\n"
    )


def write_table(out: Path, stem: str, df: pd.DataFrame, markdown: str) -> list[Path]:
    """Write ``<stem>.md`` (``markdown``) and ``<stem>.csv`` (``df``) into ``out``; returns both paths."""
    paths = [out / f"{stem}.md", out / f"{stem}.csv"]
    atomic_write_text(paths[0], markdown)
    atomic_write_text(paths[1], df.to_csv(index=False))
    return paths
