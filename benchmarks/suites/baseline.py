"""The regression gate's baseline file, ``results/baselines/<suite>.json``: written, read and checked.

Per (entry, metric) the baseline stores the mean over its seeds, their sd and the Monte Carlo standard
error of the mean, sd/√R (:func:`hierbench.suites.stats.summarize`), with its provenance (versions,
git SHA, date, the suite definition, K and the minimum effects), every value and every run.  A
baseline whose suite definition (entries, budgets, metrics) or references differ from the current
code's is *stale*: :func:`load_baseline` refuses it with the command that writes a current one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hierbench._io import BASELINES_DIR, atomic_write_text
from hierbench.datasets.base import ParamError
from hierbench.suites.definition import Suite
from hierbench.suites.metrics import METRICS
from hierbench.suites.stats import K_SE, summarize

FORMAT_VERSION = 1


def default_baseline_path(suite: str) -> Path:
    """``results/baselines/<suite>.json``."""
    return BASELINES_DIR / f"{suite}.json"


def update_command(suite: str, path: str | Path | None = None) -> str:
    """The command that (re)writes the baseline of ``suite``."""
    parts = ["hierbench", "baseline", "update"]
    if suite != "quick":
        parts += ["--suite", suite]
    if path is not None and Path(path).resolve() != default_baseline_path(suite).resolve():
        parts += ["--out", str(path)]
    return " ".join(parts)


def write_baseline(
    path: str | Path,
    suite: Suite,
    values: pd.DataFrame,
    runs: list[dict[str, Any]],
    run_seeds: list[int],
    references: dict[str, str],
    wall_s: float | None = None,
) -> dict[str, Any]:
    """Write the baseline JSON atomically (temporary file, fsync, rename); returns what was written."""
    from hierbench.records import env_info, to_jsonable

    summary = summarize(values)
    env = env_info(None)
    doc = {
        "format": FORMAT_VERSION,
        "kind": "hierbench regression baseline",
        "suite": suite.definition(),
        "suite_digest": suite.digest(),
        "references": references,
        "repeats": len(run_seeds),
        "seeds": list(run_seeds),
        "rule": {
            "k": K_SE,
            "fails_when": "worse > max(k * sqrt(se_baseline^2 + se_now^2), min_effect)",
            "min_effects": {m: METRICS[m].min_effect for m in suite.definition()["metrics"]},
        },
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": env.get("git_sha"),
        "git_dirty": env.get("git_dirty"),
        "command": update_command(suite.name, path) + f" --repeats {len(run_seeds)}",
        "wall_s": wall_s,
        "env": env,
        "stats": summary.to_dict(orient="records"),
        "values": values.to_dict(orient="records"),
        "runs": runs,
    }
    text = json.dumps(to_jsonable(doc), indent=1, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    return doc


def load_baseline(path: str | Path, suite: Suite, references: dict[str, str] | None = None) -> dict[str, Any]:
    """Read a baseline and check it belongs to ``suite`` as the code defines it now.

    Returns the document with ``summary`` (a DataFrame like :func:`summarize`'s) added.

    Raises
    ------
    ParamError
        Missing, corrupt or stale (suite definition or references differ) baseline; the message
        names the command that writes a current one.
    """
    path = Path(path)
    fix = f"create it with: {update_command(suite.name, path)}"
    if not path.is_file():
        raise ParamError(f"no baseline at {path}; {fix}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT_VERSION}")
        summary = pd.DataFrame(doc["stats"])
        missing = {"entry", "metric", "runs", "n", "mean", "sd", "se"} - set(summary.columns)
        if missing or summary.empty:
            raise ValueError(f"stats lack {', '.join(sorted(missing)) or 'rows'}")
        summary[["mean", "sd", "se"]] = summary[["mean", "sd", "se"]].astype(float)  # JSON null -> NaN
        suite_def = doc["suite"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ParamError(f"corrupt baseline {path} ({type(err).__name__}: {err}); re{fix}") from err
    if suite_def != json.loads(json.dumps(suite.definition())):
        raise ParamError(
            f"stale baseline {path}: its suite (digest {doc.get('suite_digest')}) differs from the current "
            f"{suite.name!r} suite (digest {suite.digest()}); not compared.  Update it with: "
            f"{update_command(suite.name, path)}"
        )
    if references is not None and doc.get("references") != references:
        raise ParamError(
            f"stale baseline {path}: it was scored against references {doc.get('references')}, the suite "
            f"now uses {references}; not compared.  Update it with: {update_command(suite.name, path)}"
        )
    doc["summary"] = summary
    return doc
