"""Every figure and table of the paper's four experiments, from stored sweep records only.

::

    python -m hierbench.paper --out results/paper [--records-root results/sweeps] [--quick]
    make figures                 # the same, into results/paper/

This module never runs a fit: it reads the records that ``hierbench sweep EXPERIMENT`` appended to
``<records-root>/<experiment>[-quick]/records.jsonl`` and writes, per experiment, a figure (PNG and
PDF) and a table (markdown and CSV), plus an index ``README.md`` that lists every artifact with the
command that made it, its records file, and the git SHAs and dirty flags found in the records' ``env``.
An experiment without records gets a message (``no records for experiment X: run `make sweep
EXP=X```), and the others are still made.  ``--quick`` reads the ``<experiment>-quick`` records and,
unless ``--out`` is given, writes to ``results/paper-quick/`` so that it never overwrites the real
figures.

The four experiments (Agrawal & Domke, NeurIPS 2021) and what is made of them:

1. ``scaling`` → ``fig1_scaling_gap`` and ``table1_scaling``.  The ELBO gap to the exact log
   evidence per group, (log Z − ELBO) / N at every trace point, against optimization wall time (top
   row) and against steps (bottom row), one column per N, log-log.  The gap is clipped below at
   :data:`GAP_FLOOR` nats/group (a converged fit's gap is Monte Carlo noise around zero and may be
   negative); the start point (step 0, time 0) has no place on a log axis and is left out.  The table
   gives, per record, the final KL and KL/N, the time to come within 1% and within 0.1 nats/group of
   the best final ELBO among the runs at that N (see :func:`time_to_target`), steps/s, compile time
   and status; a run that never comes within the target has an empty cell, and a cell that was not
   run because it would not fit (dense above its ``max_dim``) reads ``infeasible (needs X GiB)``.
   The headline ratio is explained in :func:`headline_ratio`.
2. ``accuracy`` → ``fig2_accuracy`` and ``table2_accuracy``.  Per (N, method): the final KL/N and the
   standardized mean errors |E_q − E_ref| / sd_ref (mean over coordinates) of the global and local
   blocks, mean over seeds ± 1 sd over seeds (ddof = 1; a single seed has no error bar), against N.
3. ``movielens`` → ``fig3_movielens`` and ``table3_movielens``.  One column per (dataset, N): the ELBO
   (top) and the held-out log predictive density per observation (bottom) against optimization time.
   The harness scores the held-out density only at the end of a run unless a trace point carries
   ``heldout_lpd_per_obs``; without it each run's final value is one point at its final wall time.
4. ``theta_collapse`` → ``fig4_theta_collapse`` and ``table4_theta_collapse``.  Final KL/N of
   amortized VI with q(z_i | θ) and with q(z_i) (``condition_on_theta=false``) against N for each
   head, and the gap (without − with), paired by seed, mean ± 1 sd over seeds.

Only records with status ``ok`` are plotted and enter the time-to-target columns and the means; the
others appear in the tables with their status and are named on the figures.  Where a sweep recorded a
cell more than once (``--retry-failed`` after an error), the last record that is not an error is used.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from hierbench._io import SWEEPS_DIR  # noqa: E402
from hierbench.records import Record, read_records  # noqa: E402
from hierbench.reports.labels import label as report_label  # noqa: E402
from hierbench.reports.tables import trace_table  # noqa: E402
from hierbench.reports.targets import time_to_target, trace_columns  # noqa: E402

EXPERIMENTS = ("scaling", "accuracy", "movielens", "theta_collapse")
DEFAULT_RECORDS_ROOT = SWEEPS_DIR
DEFAULT_OUT = Path("results") / "paper"
DEFAULT_OUT_QUICK = Path("results") / "paper-quick"
GAP_FLOOR = 1e-5  # nats/group: log-scale floor of ELBO gaps and KLs (a converged fit's is noise around 0)
HEADLINE_N = 10_000
HEADLINE_SE = 3.0  # the headline target: branch's final ELBO minus max(3 se, HEADLINE_TINY)
HEADLINE_TINY = 1e-3  # nats (total), for a final ELBO whose se is ~0
WITHIN_FRACTION = 0.01  # "within 1%" of the best final ELBO
WITHIN_PER_GROUP = 0.1  # "within 0.1 nats/group" of the best final ELBO
PAPER_CLAIM = "the paper's claim: ≥ 5× faster, target 10×"
GIB = 2.0**30

TITLES = {
    "scaling": "Scaling in N",
    "accuracy": "Accuracy at an equal budget",
    "movielens": "MovieLens",
    "theta_collapse": "θ collapse",
}
STEMS = {
    "scaling": ("fig1_scaling_gap", "table1_scaling"),
    "accuracy": ("fig2_accuracy", "table2_accuracy"),
    "movielens": ("fig3_movielens", "table3_movielens"),
    "theta_collapse": ("fig4_theta_collapse", "table4_theta_collapse"),
}
FIGURE_TEXT = {
    "scaling": "ELBO gap to the exact log evidence per group vs optimization wall time (top) and vs steps "
    f"(bottom), one column per N; log-log, clipped at {GAP_FLOOR:g} nats/group.",
    "accuracy": "Final KL/N and standardized mean errors of θ (global) and z (local) vs N at an equal "
    "budget; mean over seeds ± 1 sd over seeds.",
    "movielens": "ELBO (top) and held-out log predictive density per observation (bottom) vs optimization "
    "wall time, one column per (dataset, N).",
    "theta_collapse": "Final KL/N of amortized VI with and without conditioning q(z_i | θ) on θ vs N, and "
    "the gap (without − with); mean over seeds ± 1 sd.",
}


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass
class Source:
    """The records of one experiment and where they came from."""

    experiment: str
    path: Path
    records: list[Record]
    read: int  # records read, before de-duplication
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # unreadable lines: file, line, why

    def describe(self) -> str:
        """``path (k records)``, for headers and captions."""
        return f"`{os.fspath(self.path)}` ({len(self.records)} records)"


@dataclass
class PaperResult:
    """What :func:`make_paper` wrote: artifacts per experiment, messages for the missing ones."""

    out: Path
    artifacts: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # experiment -> message
    headline: list[dict[str, Any]] = field(default_factory=list)
    index: Path | None = None


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
    return Source(experiment, path, dedupe(records), len(records), records.skipped)


def num_groups(rec: Record) -> int | None:
    """N of a record: its ``num_groups``, which every record whose model was built has (None for a
    cell that failed before).  Legacy ``infeasible`` hier-linear records (results/sweeps/accuracy and
    scaling) predate that; hier-linear's ``N`` is its group count by definition."""
    if "num_groups" in rec:
        return rec["num_groups"]
    if rec["dataset"] == "hier-linear" and isinstance(rec["data_params"].get("N"), int):
        return rec["data_params"]["N"]
    return None


def method_label(rec: dict[str, Any]) -> str:
    """The sweep's label of the record's run (``branch (full data)``), else report.py's label."""
    return rec.get("label") or report_label(rec)


def status_text(rec: dict[str, Any]) -> str:
    """The status, with the memory an infeasible cell would have needed: ``infeasible (needs 3 GiB)``."""
    status = rec["status"]
    if status == "infeasible" and rec.get("memory_bytes") is not None:
        return f"infeasible (needs {rec['memory_bytes'] / GIB:.3g} GiB)"
    return status


def is_ok(rec: dict[str, Any]) -> bool:
    return rec["status"] == "ok"


def _mp(rec: dict[str, Any]) -> dict[str, Any]:
    return rec["method_params"]


def _full_data(rec: dict[str, Any]) -> bool:
    return _mp(rec).get("batch_groups") in (None, num_groups(rec))


def is_amortized_potential(rec: dict[str, Any]) -> bool:
    """Amortized VI with the potential head, conditioned on θ (the headline's fast method)."""
    mp = _mp(rec)
    return (
        rec["method"] == "amortized" and mp.get("head") == "potential" and mp.get("condition_on_theta", True)
    )


def is_branch_full(rec: dict[str, Any]) -> bool:
    """Branch VI on the full data each step (the headline's reference method)."""
    return rec["method"] == "branch" and _full_data(rec)


def method_order(records: list[dict[str, Any]]) -> list[str]:
    """Labels in the order they first appear (a sweep records its runs in the experiment file's order)."""
    return list(dict.fromkeys(method_label(rec) for rec in records))


def palette(labels: Sequence[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab10", max(10, len(labels)))
    return {lab: colors[i] for i, lab in enumerate(labels)}


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


# ---------------------------------------------------------------------------------------------------
# Time to a target ELBO


def _trace(rec: dict[str, Any], key: str = "wall_s") -> tuple[list[float], list[float | None]]:
    times, elbos, _ = trace_columns(rec, key)
    return times, elbos


def headline_ratio(
    records: list[dict[str, Any]],
    n: int = HEADLINE_N,
    fast: Callable[[dict[str, Any]], bool] = is_amortized_potential,
    slow: Callable[[dict[str, Any]], bool] = is_branch_full,
) -> list[dict[str, Any]]:
    """How much sooner amortized (potential) reaches branch (full data)'s final ELBO, at N = ``n``.

    The rule, the same for both runs: the target is branch's final ELBO minus
    max(:data:`HEADLINE_SE` · its standard error, :data:`HEADLINE_TINY` nats), so that branch itself
    reaches it despite Monte Carlo noise in its last estimate; each run's time to the target is the
    optimization wall time (compile excluded) where its trace first crosses it, interpolated linearly
    between trace points (:func:`time_to_target`).  Branch's time is thus at most its total wall time,
    and the ratio is branch's time / amortized's time (> 1: amortized is faster).  Amortized may never
    reach the target within its budget; the ratio is then None.

    Parameters
    ----------
    records : list of dict
        The scaling experiment's records.
    n : int
        The number of groups to compare at.  Where no pair of ``ok`` runs exists at ``n`` (e.g. in
        quick records) the largest N with one is used, and ``requested_n`` says what was asked.
    fast, slow : callable
        Pick the runs to compare.

    Returns
    -------
    list of dict
        One per seed both runs have: ``N``, ``requested_n``, ``seed``, ``target``, ``tolerance``,
        ``t_fast_s``, ``t_slow_s``, ``ratio``, ``fast_wall_s``, ``slow_wall_s``, ``fast_final_elbo``,
        ``slow_final_elbo``.  Empty when no N has both runs ``ok``.
    """
    pairs: dict[tuple[int, Any], dict[str, dict[str, Any]]] = {}
    for rec in records:
        if not is_ok(rec) or rec.get("elbo") is None:
            continue
        for role, pick in (("fast", fast), ("slow", slow)):
            if pick(rec):
                pairs.setdefault((num_groups(rec), rec.get("seed")), {}).setdefault(role, rec)
    complete = {key: pair for key, pair in pairs.items() if len(pair) == 2}
    sizes = sorted({size for size, _ in complete})
    if not sizes:
        return []
    size = n if n in sizes else sizes[-1]
    out = []
    for (size_k, seed), pair in sorted(complete.items(), key=lambda kv: str(kv[0][1])):
        if size_k != size:
            continue
        slow_rec, fast_rec = pair["slow"], pair["fast"]
        tol = max(HEADLINE_SE * (slow_rec.get("elbo_se") or 0.0), HEADLINE_TINY)
        target = slow_rec["elbo"] - tol
        t_slow = time_to_target(*_trace(slow_rec), target)
        t_fast = time_to_target(*_trace(fast_rec), target)
        ratio = t_slow / t_fast if t_slow is not None and t_fast not in (None, 0.0) else None
        out.append(
            {
                "N": size,
                "requested_n": n,
                "seed": seed,
                "target": target,
                "tolerance": tol,
                "t_fast_s": t_fast,
                "t_slow_s": t_slow,
                "ratio": ratio,
                "fast_label": method_label(fast_rec),
                "slow_label": method_label(slow_rec),
                "fast_wall_s": fast_rec.get("wall_s"),
                "slow_wall_s": slow_rec.get("wall_s"),
                "fast_final_elbo": fast_rec.get("elbo"),
                "slow_final_elbo": slow_rec["elbo"],
            }
        )
    return out


def headline_sentence(rows: list[dict[str, Any]], n: int = HEADLINE_N) -> str:
    """The headline ratio as one sentence per seed (or why it cannot be computed)."""
    if not rows:
        return (
            f"Headline ratio: not computable, no N has both amortized (potential) and branch (full data) "
            f"runs `ok` (wanted N={n:,})."
        )
    sentences = []
    for row in rows:
        where = f"N={row['N']:,}"
        if row["N"] != row["requested_n"]:
            where += f" (no N={row['requested_n']:,} pair in these records; the largest N with one)"
        head = (
            f"Headline ratio at {where}, seed {row['seed']}: the target is {row['slow_label']}'s final ELBO "
            f"{row['slow_final_elbo']:,.3f} − {row['tolerance']:.3g} nats; {row['slow_label']} reaches it "
            f"at {_num(row['t_slow_s'], '.3g')} s (of {row['slow_wall_s']:.3g} s in all)"
        )
        if row["t_fast_s"] is None:
            sentences.append(
                f"{head}, and {row['fast_label']} never does within its {row['fast_wall_s']:.3g} s "
                f"(final ELBO {row['fast_final_elbo']:,.3f}), so there is no ratio ({PAPER_CLAIM})."
            )
        else:
            sentences.append(
                f"{head}, {row['fast_label']} at {row['t_fast_s']:.3g} s: "
                f"**{_num(row['ratio'], '.3g')}×** faster ({PAPER_CLAIM})."
            )
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------------
# Tables


def scaling_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 1: one row per record of the scaling experiment.

    ``t_within_1pct_s`` and ``t_within_0.1_per_group_s`` are the wall times at which the run first
    comes within 1% (of |ELBO|) and within 0.1 nats/group of ``best_final_elbo``, the best final ELBO of
    the ``ok`` runs at that N (:func:`time_to_target`; empty if never).
    """
    best: dict[int | None, float] = {}
    for rec in records:
        if is_ok(rec) and rec.get("elbo") is not None:
            size = num_groups(rec)
            best[size] = max(best.get(size, -math.inf), rec["elbo"])
    rows = []
    for rec in records:
        size = num_groups(rec)
        row = {
            "N": size,
            "method": method_label(rec),
            "seed": rec.get("seed"),
            "status": status_text(rec),
            "elbo": rec.get("elbo"),
            "elbo_se": rec.get("elbo_se"),
            "kl": rec.get("kl"),
            "kl_per_group": rec.get("kl_per_group"),
            "best_final_elbo": best.get(size),
            "t_within_1pct_s": None,
            "t_within_0.1_per_group_s": None,
            "steps": rec.get("steps"),
            "wall_s": rec.get("wall_s"),
            "steps_per_s": rec.get("steps_per_s"),
            "compile_s": rec.get("compile_s"),
            "memory_bytes": rec.get("memory_bytes"),
        }
        if is_ok(rec) and size in best:
            top = best[size]
            row["t_within_1pct_s"] = time_to_target(*_trace(rec), top - WITHIN_FRACTION * abs(top))
            row["t_within_0.1_per_group_s"] = time_to_target(*_trace(rec), top - WITHIN_PER_GROUP * size)
        rows.append(row)
    return _sorted(pd.DataFrame(rows), records, ["N"])


def _sorted(df: pd.DataFrame, records: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``, then by method in the experiment's order, then by seed."""
    if df.empty:
        return df
    order = {lab: i for i, lab in enumerate(method_order(records))}
    df = df.assign(_order=df["method"].map(order).fillna(len(order)))
    by = [*keys, "_order"] + (["seed"] if "seed" in df else [])
    return df.sort_values(by, kind="stable", na_position="last").drop(columns="_order").reset_index(drop=True)


ACCURACY_METRICS = {  # column -> where in a record
    "kl_per_group": ("kl_per_group",),
    "global_std_mean_err": ("accuracy", "global", "std_mean_err_mean"),
    "local_std_mean_err": ("accuracy", "local", "std_mean_err_mean"),
    "global_sd_ratio_err": ("accuracy", "global", "sd_ratio_err_mean"),
    "local_sd_ratio_err": ("accuracy", "local", "sd_ratio_err_mean"),
}


def _get(rec: dict[str, Any], path: Sequence[str]) -> float | None:
    value: Any = rec
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if value is not None else None


def _statuses(texts: Sequence[str]) -> str:
    counts = Counter(texts)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.most_common())


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sd with ddof = 1 or None for one value, count) of the values that are not None."""
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(vals):
        return None, None, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else None, len(vals)


def accuracy_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 2: per (N, method), mean and sd over seeds (ddof = 1) of each metric of
    :data:`ACCURACY_METRICS`, over the seeds whose runs ended ``ok`` (``seeds_ok`` of ``seeds``)."""
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((num_groups(rec), method_label(rec)), []).append(rec)
    rows = []
    for (size, lab), recs in groups.items():
        ok = [r for r in recs if is_ok(r)]
        row: dict[str, Any] = {
            "N": size,
            "method": lab,
            "status": _statuses([status_text(r) for r in recs]),
            "seeds": len(recs),
            "seeds_ok": len(ok),
        }
        for col, path in ACCURACY_METRICS.items():
            mean, sd, _ = _mean_sd([_get(r, path) for r in ok])
            row[f"{col}_mean"], row[f"{col}_sd"] = mean, sd
        rows.append(row)
    return _sorted(pd.DataFrame(rows), records, ["N"])


def movielens_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 3: one row per record: final ELBO ± se, held-out lpd per observation, times, and the
    standardized errors where a reference exists."""
    rows = []
    for rec in records:
        rows.append(
            {
                "dataset": rec["dataset"],
                "N": num_groups(rec),
                "method": method_label(rec),
                "seed": rec["seed"],
                "status": status_text(rec),
                "elbo": rec["elbo"],
                "elbo_se": rec["elbo_se"],
                "heldout_lpd_per_obs": rec.get(
                    "heldout_lpd_per_obs"
                ),  # optional: datasets with held-out rows
                "steps": rec["steps"],
                "wall_s": rec["wall_s"],
                "steps_per_s": rec.get("steps_per_s"),
                "compile_s": rec["compile_s"],
                "global_std_mean_err": _get(rec, ACCURACY_METRICS["global_std_mean_err"]),
                "local_std_mean_err": _get(rec, ACCURACY_METRICS["local_std_mean_err"]),
            }
        )
    return _sorted(pd.DataFrame(rows), records, ["dataset", "N"])


def _theta_key(rec: dict[str, Any]) -> tuple[str, bool]:
    mp = _mp(rec)
    return str(mp.get("head", "?")), bool(mp.get("condition_on_theta", True))


def theta_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Table 4: per (head, N), final KL/N with and without conditioning on θ (mean, sd over seeds,
    ddof = 1, count) and the gap without − with, paired by seed (mean, sd, pairs)."""
    kl: dict[tuple[str, Any], dict[bool, dict[Any, float]]] = {}
    statuses: dict[tuple[str, Any], list[str]] = {}
    for rec in records:
        if rec["method"] != "amortized":
            continue
        head, conditioned = _theta_key(rec)
        key = (head, num_groups(rec))
        statuses.setdefault(key, []).append(status_text(rec))
        per_seed = kl.setdefault(key, {True: {}, False: {}})[conditioned]
        if is_ok(rec) and rec["kl_per_group"] is not None:
            per_seed[rec["seed"]] = float(rec["kl_per_group"])
    rows = []
    for (head, size), variants in kl.items():
        row: dict[str, Any] = {"head": head, "N": size, "status": _statuses(statuses[(head, size)])}
        for conditioned, name in ((True, "with_theta"), (False, "without_theta")):
            mean, sd, count = _mean_sd(list(variants[conditioned].values()))
            row |= {f"kl_per_group_{name}_mean": mean, f"kl_per_group_{name}_sd": sd, f"{name}_seeds": count}
        paired = sorted(set(variants[True]) & set(variants[False]), key=str)
        mean, sd, count = _mean_sd([variants[False][s] - variants[True][s] for s in paired])
        row |= {"gap_mean": mean, "gap_sd": sd, "gap_pairs": count}
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["head", "N"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------
# Markdown


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return format(value, fmt)


def _n(size: Any) -> str:
    return f"{int(size):,}" if size is not None and not pd.isna(size) and size else "?"


INT_COLUMNS = (
    "N",
    "seed",
    "steps",
    "seeds",
    "seeds_ok",
    "with_theta_seeds",
    "without_theta_seeds",
    "gap_pairs",
)


def _markdown(df: pd.DataFrame, formats: dict[str, str], drop: Sequence[str] = ()) -> str:
    show = df.drop(columns=[c for c in drop if c in df]).astype(object)
    for col, fmt in formats.items():
        if col in show:
            show[col] = [_num(v, fmt) for v in show[col]]
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


def _mean_pm(df: pd.DataFrame, col: str, fmt: str) -> list[str]:
    out = []
    for mean, sd in zip(df[f"{col}_mean"], df[f"{col}_sd"], strict=True):
        text = _num(mean, fmt)
        if text and _num(sd, fmt):
            text += f" ± {_num(sd, fmt)}"
        out.append(text)
    return out


def _header(title: str, source: Source, command: str, quick: bool) -> str:
    return (
        f"# {title}{' (quick records)' if quick else ''}\n\n"
        f"Records: {source.describe()}; code: {provenance_text(source.records)}. "
        f"Made by `{command}` from the stored records only.\n\n"
    )


# ---------------------------------------------------------------------------------------------------
# Figures


def _save(fig: plt.Figure, out: Path, stem: str, source: Source, command: str) -> list[Path]:
    fig.text(
        0.0,
        -0.01,
        f"records: {os.fspath(source.path)} · made by: {command}",
        fontsize=6,
        color="0.4",
        ha="left",
        va="top",
    )
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    # no creation date in the PDF, so that the same records give the same file
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return paths


def _legend(fig: plt.Figure, colors: dict[str, Any], labels: Sequence[str], **styles: dict[str, Any]) -> None:
    handles = [Line2D([], [], color=colors[lab], marker="o", markersize=4, label=lab) for lab in labels]
    handles += [Line2D([], [], color="0.3", label=name, **style) for name, style in styles.items()]
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _title(ax: plt.Axes, title: str, recs: list[dict[str, Any]]) -> None:
    """A panel title that names, on lines below it, the runs without a curve (infeasible, diverged, error)."""
    lines = [f"not plotted: {method_label(r)}: {status_text(r)}" for r in recs if not is_ok(r)]
    ax.set_title("\n".join([title, *lines]), fontsize=9 if lines else None)


def _log_x(ax: plt.Axes) -> None:
    """Log x with plain tick labels (10, 20, 50); minor ones (2, 5 per decade) only on an axis under two
    decades, where major ticks alone may be one or none, and where more of them would overlap."""
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.get_xlim()
    if lo > 0 and hi / lo < 100:
        ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
    else:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.3")


def _panels(rows: int, cols: int, width: float = 3.3, height: float = 2.8) -> tuple[plt.Figure, np.ndarray]:
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(rows, max(1, cols), figsize=(width * max(1, cols), height * rows), squeeze=False)
    return fig, axes


def scaling_figure(records: list[dict[str, Any]], out: Path, source: Source, command: str) -> list[Path]:
    """Figure 1: ELBO gap per group vs wall time (top row) and vs steps (bottom row), a column per N."""
    labels = method_order(records)
    colors = palette(labels)
    frames = []
    for rec in records:
        if is_ok(rec) and rec.get("log_evidence") is not None:
            df = trace_table([rec])  # its kl_per_group is (log Z − ELBO) / N at each trace point
            if not df.empty:
                frames.append(df.assign(method=method_label(rec), run=rec.get("record_id") or id(rec)))
    traces = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    sizes = sorted({s for s in (num_groups(r) for r in records) if s is not None})
    fig, axes = _panels(2, len(sizes))
    for j, size in enumerate(sizes):
        here = [r for r in records if num_groups(r) == size]
        sub = traces[traces["N"] == size] if not traces.empty else traces
        for i, x in enumerate(("wall_s", "step")):
            ax = axes[i, j]
            pts = (
                sub[sub[x] > 0].assign(gap=lambda d: d["kl_per_group"].clip(lower=GAP_FLOOR))
                if len(sub)
                else sub
            )
            if len(pts):
                sns.lineplot(
                    data=pts,
                    x=x,
                    y="gap",
                    hue="method",
                    hue_order=[lab for lab in labels if lab in set(pts["method"])],
                    palette=colors,
                    units="run",
                    estimator=None,
                    marker="o",
                    markersize=3,
                    legend=False,
                    ax=ax,
                )
                _log_x(ax)
                ax.set_yscale("log")
                if pts["gap"].min() <= 10 * GAP_FLOOR:  # else the line would only squash the curves
                    ax.axhline(GAP_FLOOR, color="0.6", lw=0.8, ls=":")
            else:
                _empty(ax, "no ok run with a trace")
            if i == 0:
                _title(ax, f"N = {size:,}", here)
            ax.set_xlabel("optimization wall time (s)" if x == "wall_s" else "steps")
            ax.set_ylabel("(log Z − ELBO) / N (nats)" if j == 0 else "")
    if not sizes:
        _empty(axes[0, 0], "no records with N")
    _legend(fig, colors, [lab for lab in labels if not traces.empty and lab in set(traces["method"])])
    fig.suptitle(
        "Scaling in N (hier-linear): ELBO gap to the exact log evidence per group\n"
        f"clipped at {GAP_FLOOR:g} (dotted where reached); wall time excludes compilation; the start "
        "(step 0) is not shown",
        y=1.02,
    )
    fig.tight_layout()
    return _save(fig, out, STEMS["scaling"][0], source, command)


def _errorbars(
    ax: plt.Axes, table: pd.DataFrame, col: str, labels: Sequence[str], colors: dict, floor: float | None
):
    """One line with ±1 sd error bars per method; methods are spread a little along log N to stay apart."""
    present = [lab for lab in labels if lab in set(table["method"])]
    plotted = False
    for k, lab in enumerate(present):
        sub = table[(table["method"] == lab)].dropna(subset=[f"{col}_mean"])
        if sub.empty:
            continue
        offset = 10 ** (0.025 * (k - (len(present) - 1) / 2))
        mean = sub[f"{col}_mean"].astype(float).to_numpy()
        sd = sub[f"{col}_sd"].astype(float).fillna(0.0).to_numpy()
        if floor is not None:
            mean = np.maximum(mean, floor)
        ax.errorbar(
            sub["N"].astype(float).to_numpy() * offset,
            mean,
            yerr=sd,
            color=colors[lab],
            marker="o",
            markersize=3.5,
            capsize=2,
            lw=1.2,
            label=lab,
        )
        plotted = True
    if plotted:
        _log_x(ax)
        ax.set_yscale("log", nonpositive="clip")
    else:
        _empty(ax, "no ok runs")
    return plotted


def accuracy_figure(
    table: pd.DataFrame, records: list[dict[str, Any]], out: Path, source: Source, command: str
):
    """Figure 2: KL/N, global and local standardized mean error vs N; mean ± 1 sd over seeds."""
    labels = method_order(records)
    colors = palette(labels)
    fig, axes = _panels(1, 3, width=3.6, height=3.0)
    panels = [
        ("kl_per_group", f"final KL / N (nats; floor {GAP_FLOOR:g})", GAP_FLOOR),
        ("global_std_mean_err", "global θ: |E_q − E| / sd (mean)", None),
        ("local_std_mean_err", "local z: |E_q − E| / sd (mean)", None),
    ]
    for ax, (col, ylabel, floor) in zip(axes[0], panels, strict=True):
        if not table.empty:
            _errorbars(ax, table, col, labels, colors, floor)
        else:
            _empty(ax, "no records")
        ax.set_xlabel("N (groups)")
        ax.set_ylabel(ylabel)
    plotted = table.dropna(subset=["kl_per_group_mean"]) if not table.empty else table
    _legend(fig, colors, [lab for lab in labels if not plotted.empty and lab in set(plotted["method"])])
    not_ok = (
        []
        if table.empty
        else [f"{r.method} at N={_n(r.N)}: {r.status}" for r in table.itertuples() if r.status != "ok"]
    )
    fig.suptitle(
        "Accuracy at an equal budget (hier-linear): mean over seeds, error bars ±1 sd over seeds (ddof=1)",
        y=1.03,
    )
    if not_ok:  # the runs without a point: infeasible dense, diverged or failed seeds
        fig.text(
            0.0,
            -0.05,
            textwrap.fill("runs not all ok (no point or fewer seeds): " + "; ".join(not_ok), 200),
            fontsize=6,
            color="0.3",
            ha="left",
            va="top",
        )
    fig.tight_layout()
    return _save(fig, out, STEMS["accuracy"][0], source, command)


def movielens_figure(records: list[dict[str, Any]], out: Path, source: Source, command: str) -> list[Path]:
    """Figure 3: ELBO (top) and held-out lpd per observation (bottom) vs wall time, per (dataset, N)."""
    labels = method_order(records)
    colors = palette(labels)
    keys = sorted({(str(r.get("dataset")), num_groups(r) or 0) for r in records})
    fig, axes = _panels(2, len(keys))
    any_trace_heldout = any_final_point = False
    for j, (dataset, size) in enumerate(keys):
        here = [r for r in records if str(r.get("dataset")) == dataset and (num_groups(r) or 0) == size]
        ok = [r for r in here if is_ok(r)]
        ax_elbo, ax_lpd = axes[0, j], axes[1, j]
        ax_lpd.sharex(ax_elbo)  # a lone final point per run needs the ELBO curves' time axis
        finals = []
        for rec in ok:
            color = colors[method_label(rec)]
            pts = [
                p for p in rec.get("trace") or [] if p.get("elbo") is not None and (p.get("wall_s") or 0) > 0
            ]
            if pts:
                ax_elbo.plot([p["wall_s"] for p in pts], [p["elbo"] for p in pts], "o-", ms=3, color=color)
            if rec.get("elbo") is not None:
                finals.append(rec["elbo"])
            held = [p for p in pts if p.get("heldout_lpd_per_obs") is not None]
            if held:
                any_trace_heldout = True
                ax_lpd.plot(
                    [p["wall_s"] for p in held],
                    [p["heldout_lpd_per_obs"] for p in held],
                    "o-",
                    ms=3,
                    color=color,
                )
            elif rec.get("heldout_lpd_per_obs") is not None and (rec.get("wall_s") or 0) > 0:
                ax_lpd.plot([rec["wall_s"]], [rec["heldout_lpd_per_obs"]], "D", ms=5, color=color)
                any_final_point = True
        if ax_elbo.has_data() or ax_lpd.has_data():
            _log_x(ax_elbo)
        for ax in (ax_elbo, ax_lpd):
            if not ax.has_data():
                _empty(ax, "no ok runs" if not ok else "no values")
            ax.set_xlabel("optimization wall time (s)")
        if finals:  # the first trace points are far below: keep the end of the curves readable
            spread = max(finals) - min(finals)
            ax_elbo.set_ylim(bottom=min(finals) - max(3 * spread, 0.01 * abs(max(finals)), 1.0))
        _title(ax_elbo, f"{dataset}, N = {_n(size)}", here)
        ax_elbo.set_ylabel("ELBO (nats)" if j == 0 else "")
        ax_lpd.set_ylabel("held-out lpd / observation" if j == 0 else "")
    if not keys:
        _empty(axes[0, 0], "no records")
    _legend(fig, colors, [lab for lab in labels if any(is_ok(r) and method_label(r) == lab for r in records)])
    how = {
        (True, False): "along the trace",
        (True, True): "along the trace where recorded, else the final value at the final wall time (◆)",
    }.get(
        (any_trace_heldout, any_final_point),
        "final value at the final wall time (◆): the trace has ELBOs only",
    )
    fig.suptitle(f"MovieLens: ELBO and held-out log predictive density ({how})", y=1.02)
    fig.tight_layout()
    return _save(fig, out, STEMS["movielens"][0], source, command)


def theta_figure(table: pd.DataFrame, out: Path, source: Source, command: str) -> list[Path]:
    """Figure 4: KL/N with and without q(z_i | θ)'s conditioning vs N (left), and the gap (right)."""
    fig, axes = _panels(1, 2, width=4.2, height=3.2)
    ax_kl, ax_gap = axes[0]
    heads = list(dict.fromkeys(table["head"])) if not table.empty else []
    colors = palette(heads)
    styles = {
        "with θ: q(z_i | θ)": {"ls": "-", "marker": "o"},
        "without θ: q(z_i)": {"ls": "--", "marker": "s"},
    }
    for head in heads:
        sub = table[table["head"] == head]
        for name, style in zip(("with_theta", "without_theta"), styles.values(), strict=True):
            col = f"kl_per_group_{name}"
            part = sub.dropna(subset=[f"{col}_mean"])
            if part.empty:
                continue
            ax_kl.errorbar(
                part["N"].astype(float),
                np.maximum(part[f"{col}_mean"].astype(float), GAP_FLOOR),
                yerr=part[f"{col}_sd"].astype(float).fillna(0.0),
                color=colors[head],
                capsize=2,
                ms=3.5,
                **style,
            )
        part = sub.dropna(subset=["gap_mean"])
        if not part.empty:
            ax_gap.errorbar(
                part["N"].astype(float),
                part["gap_mean"].astype(float),
                yerr=part["gap_sd"].astype(float).fillna(0.0),
                color=colors[head],
                marker="o",
                ms=3.5,
                capsize=2,
            )
    if ax_kl.has_data():
        _log_x(ax_kl)
        ax_kl.set_yscale("log", nonpositive="clip")
    else:
        _empty(ax_kl, "no ok runs")
    if ax_gap.has_data():
        _log_x(ax_gap)
        if (table["gap_mean"].dropna() > 0).all():
            ax_gap.set_yscale("log", nonpositive="clip")
        else:  # a gap of either sign (noise) that spans decades: symmetric log, linear near 0
            ax_gap.set_yscale("symlog", linthresh=10 * GAP_FLOOR)
            ax_gap.axhline(0.0, color="0.5", lw=0.8)
    else:
        _empty(ax_gap, "no seed with both variants ok")
    ax_kl.set(xlabel="N (groups)", ylabel=f"final KL / N (nats; floor {GAP_FLOOR:g})", title="KL / N")
    ax_gap.set(xlabel="N (groups)", ylabel="KL/N without θ − with θ (nats)", title="cost of dropping θ")
    _legend(fig, {h: colors[h] for h in heads}, heads, **styles)
    fig.suptitle(
        "θ collapse (amortized VI, hier-linear): mean over seeds, error bars ±1 sd over seeds", y=1.03
    )
    fig.tight_layout()
    return _save(fig, out, STEMS["theta_collapse"][0], source, command)


# ---------------------------------------------------------------------------------------------------
# One experiment's artifacts


def _write_table(out: Path, stem: str, df: pd.DataFrame, markdown: str) -> list[Path]:
    paths = [out / f"{stem}.md", out / f"{stem}.csv"]
    paths[0].write_text(markdown, encoding="utf-8")
    df.to_csv(paths[1], index=False)
    return paths


def make_scaling(source: Source, out: Path, command: str, quick: bool) -> tuple[list[Path], list[dict]]:
    """Figure 1 and Table 1; returns the paths and the headline rows."""
    records = source.records
    table = scaling_table(records)
    headline = headline_ratio(records)
    md = (
        _header("Table 1: scaling in N (hier-linear, d = 10)", source, command, quick)
        + "Per run: final ELBO ± se, KL = log Z − ELBO (exact) and KL/N; the optimization wall time (compile "
        f"excluded) at which the run first comes within {WITHIN_FRACTION:.0%} of |ELBO| and within "
        f"{WITHIN_PER_GROUP} nats/group of the best final ELBO of the runs at that N (linear interpolation "
        "between trace points; empty: never); steps/s, compile time and status. An infeasible cell states "
        "the memory it would have needed.\n\n"
        + headline_sentence(headline)
        + "\n\n"
        + _markdown(
            table,
            {
                "elbo": ",.2f",
                "elbo_se": ".3f",
                "kl": ".4g",
                "kl_per_group": ".3g",
                "best_final_elbo": ",.2f",
                "t_within_1pct_s": ".3g",
                "t_within_0.1_per_group_s": ".3g",
                "wall_s": ".3g",
                "steps_per_s": ".0f",
                "compile_s": ".2f",
            },
            drop=("memory_bytes",),
        )
        + "\n"
    )
    stem_fig, stem_table = STEMS["scaling"]
    paths = _write_table(out, stem_table, table, md)
    paths += scaling_figure(records, out, source, command)
    return paths, headline


def make_accuracy(source: Source, out: Path, command: str, quick: bool) -> list[Path]:
    """Figure 2 and Table 2."""
    table = accuracy_table(source.records)
    show = table.copy()
    if not show.empty:
        for col in ACCURACY_METRICS:
            show[col] = _mean_pm(table, col, ".3g")
        show = show[["N", "method", "status", "seeds", "seeds_ok", *ACCURACY_METRICS]]
    md = (
        _header("Table 2: accuracy at an equal budget (hier-linear, d = 10)", source, command, quick)
        + "Per (N, method): mean ± sd over the seeds whose runs ended ok (sd with ddof = 1; none for one "
        "seed) of the final KL/N (exact) and of the standardized mean error |E_q − E| / sd and sd-ratio "
        "error |sd_q / sd − 1| (means over coordinates) of the global (θ) and local (z) blocks against the "
        "exact posterior. The CSV has the means and sds in separate columns.\n\n" + _markdown(show, {}) + "\n"
    )
    stem_fig, stem_table = STEMS["accuracy"]
    paths = _write_table(out, stem_table, table, md)
    paths += accuracy_figure(table, source.records, out, source, command)
    return paths


def make_movielens(source: Source, out: Path, command: str, quick: bool) -> list[Path]:
    """Figure 3 and Table 3."""
    table = movielens_table(source.records)
    show = table.copy()
    if not show.empty:
        show["elbo"] = [
            f"{_num(e, ',.2f')} ± {_num(s, '.3f')}" if _num(e, ".2f") else ""
            for e, s in zip(table["elbo"], table["elbo_se"], strict=True)
        ]
        show = show.drop(columns="elbo_se").rename(columns={"elbo": "elbo ± se"})
    md = (
        _header("Table 3: MovieLens", source, command, quick)
        + "Per run: final ELBO ± se, held-out log predictive density per held-out observation, optimization "
        "wall time (compile excluded), steps/s, compile time, and the standardized mean errors where a gated "
        "NUTS reference exists for the same data.\n\n"
        + _markdown(
            show,
            {
                "heldout_lpd_per_obs": ".4f",
                "wall_s": ".3g",
                "steps_per_s": ".0f",
                "compile_s": ".2f",
                "global_std_mean_err": ".3f",
                "local_std_mean_err": ".3f",
            },
        )
        + "\n"
    )
    stem_fig, stem_table = STEMS["movielens"]
    paths = _write_table(out, stem_table, table, md)
    paths += movielens_figure(source.records, out, source, command)
    return paths


def make_theta(source: Source, out: Path, command: str, quick: bool) -> list[Path]:
    """Figure 4 and Table 4."""
    table = theta_table(source.records)
    show = table.copy()
    if not show.empty:
        show["KL/N with θ"] = _mean_pm(table, "kl_per_group_with_theta", ".3g")
        show["KL/N without θ"] = _mean_pm(table, "kl_per_group_without_theta", ".3g")
        show["gap (without − with)"] = _mean_pm(table, "gap", ".3g")
        show = show[
            [
                "head",
                "N",
                "status",
                "KL/N with θ",
                "with_theta_seeds",
                "KL/N without θ",
                "without_theta_seeds",
            ]
            + ["gap (without − with)", "gap_pairs"]
        ]
    md = (
        _header("Table 4: θ collapse (amortized VI, hier-linear, d = 10)", source, command, quick)
        + "Per (head, N): final KL/N (exact) with q(z_i | θ) and with q(z_i) (`condition_on_theta=false`), "
        "mean ± sd over the seeds that ended ok (ddof = 1), and the gap KL/N without − with θ, paired by "
        "seed (> 0: conditioning on θ helps).\n\n" + _markdown(show, {}) + "\n"
    )
    stem_fig, stem_table = STEMS["theta_collapse"]
    paths = _write_table(out, stem_table, table, md)
    paths += theta_figure(table, out, source, command)
    return paths


# ---------------------------------------------------------------------------------------------------
# All of it


def paper_command(out: Path, records_root: Path, quick: bool) -> str:
    """The command line that regenerates these artifacts."""
    cmd = f"python -m hierbench.paper --out {os.fspath(out)}"
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
        headline rows (:func:`headline_ratio`) and the index file.
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
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring.  Exit 0, also when some experiments have no records."""
    parser = argparse.ArgumentParser(prog="python -m hierbench.paper", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help=f"output folder (default {DEFAULT_OUT}; with --quick {DEFAULT_OUT_QUICK})"
    )
    parser.add_argument(
        "--records-root",
        default=os.fspath(DEFAULT_RECORDS_ROOT),
        help="folder of the sweeps' records: <root>/<experiment>[-quick]/records.jsonl (default %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="read the --quick sweeps' records (<experiment>-quick)"
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        choices=EXPERIMENTS,
        default=list(EXPERIMENTS),
        help="a subset (default: all)",
    )
    args = parser.parse_args(argv)
    result = make_paper(args.out, args.records_root, quick=args.quick, experiments=args.experiments)
    for exp in args.experiments:
        if exp in result.missing:
            print(result.missing[exp], file=sys.stderr)
        for path in result.artifacts.get(exp, []):
            print(f"{exp}: {path}")
    if "scaling" in result.artifacts:
        print(headline_sentence(result.headline))
    print(f"index: {result.index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
