"""Regression gate across releases that knows Monte Carlo noise (``hierbench regress``).

A fixed quick suite of runs (:data:`QUICK`, the grid of ``experiments/regress-quick.toml``: every VI
family on a small ``hier-linear`` and a small ``hier-logistic``) is run cell by cell through the sweep's
:func:`hierbench.sweep.run_cell` with R seeds each. Per (entry, metric) the baseline
``results/baselines/quick.json`` stores the mean over its R = 5 seeds, their sd and the Monte Carlo
standard error of the mean, sd/√R, with its provenance (versions, git SHA, date, the suite definition, K
and the minimum effects); ``hierbench baseline update [--repeats R]`` writes it. ``hierbench regress``
reruns the suite with R = 3 other seeds and compares, with :func:`compare` (a pure function of two
summary tables).

Metrics
-------
========================  ==========  ===========  ==================================================
metric                    better      min effect   what
========================  ==========  ===========  ==================================================
``elbo_per_group``        higher      0.02 nats    final float64 ELBO / N (1000 draws of q)
``kl_per_group``          lower       0.02 nats    exact log Z − ELBO, / N (``hier-linear`` only)
``global_std_mean_err``   lower       0.05 sd      |E_q θ − E_ref θ| / sd_ref, mean over θ's coordinates
``local_std_mean_err``    lower       0.05 sd      the same over every z_i coordinate
``global_sd_ratio_err``   lower       0.05         |sd_q / sd_ref − 1|, mean over θ's coordinates
``local_sd_ratio_err``    lower       0.05         the same over every z_i coordinate
========================  ==========  ===========  ==================================================

The accuracy metrics come from the record's ``accuracy`` block: against the exact posterior on
``hier-linear``, against the stored gated NUTS reference on ``hier-logistic`` (``hierbench reference``
builds it; the gate exits 2 with that command if it is missing).

Verdict
-------
With ``worse`` the baseline-to-now change signed so that positive is worse (baseline − now for a
higher-better metric, now − baseline for a lower-better one) and ``se`` its standard error from the
across-seed spread pooled over both sides (:func:`combined_se`; with equal seed counts it is
√(se_baseline² + se_now²)), a metric

* fails (``REGRESSION``) when ``worse > max(K · se, min effect)``, with **K = 4**;
* is ``improved`` when ``−worse`` exceeds the same threshold (never a failure);
* is ``MISSING`` (a failure) when a run of the entry did not end ``ok`` or gave no value.

K = 4: on unchanged code worse/se is t-distributed with R_baseline + R_now − 2 = 6 degrees of
freedom, so a metric whose threshold is set by its SE raises a false alarm with probability 0.36%
(0.8% with 4 degrees of freedom, as Welch's unpooled SE would have at these seed counts).  Most
thresholds are set by the minimum effect instead: branch and dense reach KL ≈ 10⁻³ nats/group or
less with SEs near 10⁻⁴, and a harmless 10⁻³ change must not be an alarm.  The minimum effects are
about the smallest change worth a look at these budgets; real defects are far larger (in the tests,
on the tiny suite: a learning rate 100× too small moves meanfield's KL from 0.27 to 6.9 nats/group,
half the steps to 1.5, 100+ SEs).

Seeds
-----
The baseline uses run seeds 1000, 1001, …; ``regress`` uses 2000, 2001, … (the data seed is fixed by
the suite).  Different seeds on purpose: on the same machine and code the same seeds reproduce the
baseline bit for bit, which would test nothing about the noise model, and a harmless change that
only reorders random draws (a different key split) moves every run by its full Monte Carlo noise —
exactly what the across-seed SE models, and what fresh seeds exercise on every run of the gate.
Both seed lists are fixed, so ``make regress`` is repeatable.

A baseline whose suite definition (entries, budgets, metrics) or references differ from the current
code's is *stale*: the gate exits 2 with the update command instead of comparing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierbench._io import BASELINES_DIR, REFERENCES_DIR, atomic_write_text
from hierbench.datasets.base import ParamError

FORMAT_VERSION = 1
K_SE = 4.0
BASELINE_SEED0 = 1000  # baseline seeds: 1000, 1001, ...
REGRESS_SEED0 = 2000  # regress seeds: 2000, 2001, ... (disjoint from the baseline's; see module docs)
BASELINE_REPEATS = 5  # seeds per entry in the baseline
REGRESS_REPEATS = 3  # seeds per entry in a regress run
MAX_REPEATS = 100  # keeps the two seed ranges disjoint


@dataclasses.dataclass(frozen=True)
class Metric:
    """A scalar read off a run's record, with the direction that is better and the minimum effect.

    Parameters
    ----------
    higher_is_better : bool
        True for the ELBO, False for errors and KL.
    min_effect : float
        A change smaller than this never fails, however small its standard error.
    description : str
        What it is, for the docs and the printed table.
    """

    higher_is_better: bool
    min_effect: float
    description: str


METRICS: dict[str, Metric] = {
    "elbo_per_group": Metric(True, 0.02, "final ELBO / N (nats)"),
    "kl_per_group": Metric(False, 0.02, "exact log Z - ELBO, / N (nats)"),
    "global_std_mean_err": Metric(False, 0.05, "|E_q - E_ref| / sd_ref, mean over theta"),
    "local_std_mean_err": Metric(False, 0.05, "|E_q - E_ref| / sd_ref, mean over z"),
    "global_sd_ratio_err": Metric(False, 0.05, "|sd_q / sd_ref - 1|, mean over theta"),
    "local_sd_ratio_err": Metric(False, 0.05, "|sd_q / sd_ref - 1|, mean over z"),
}
ACCURACY_METRICS = ("global_std_mean_err", "local_std_mean_err", "global_sd_ratio_err", "local_sd_ratio_err")
EXACT_METRICS = ("elbo_per_group", "kl_per_group", *ACCURACY_METRICS)
REFERENCE_METRICS = ("elbo_per_group", *ACCURACY_METRICS)


def extract_metrics(record: dict[str, Any], names: Iterable[str]) -> dict[str, float]:
    """The named metrics of one record (NaN where the record has no value, e.g. a failed run)."""
    acc = record.get("accuracy") or {}  # optional: absent without a reference
    ok = record["status"] == "ok"
    elbo = record["elbo"]
    values = {
        # every record that ran has num_groups
        "elbo_per_group": elbo / record["num_groups"] if ok and elbo is not None else None,
        "kl_per_group": record["kl_per_group"] if ok else None,
    }
    for block in ("global", "local"):
        scores = acc.get(block) or {}
        values[f"{block}_std_mean_err"] = scores.get("std_mean_err_mean") if ok else None
        values[f"{block}_sd_ratio_err"] = scores.get("sd_ratio_err_mean") if ok else None
    return {name: math.nan if values.get(name) is None else float(values[name]) for name in names}


# --------------------------------------------------------------------------- the suite
@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """One run of the suite (repeated over seeds): arguments of :func:`~hierbench.harness.run_one`
    and the metrics read off its record."""

    name: str
    method: str
    dataset: str
    data_params: dict[str, Any]
    method_params: dict[str, Any]
    steps: int
    metrics: tuple[str, ...]

    def definition(self) -> dict[str, Any]:
        """JSON-ready description (what the baseline stores and the staleness check compares)."""
        return dataclasses.asdict(self) | {"metrics": list(self.metrics)}


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named list of entries, run at ``checkpoints`` timed chunks and ``eval_draws`` draws of q."""

    name: str
    entries: tuple[SuiteEntry, ...]
    checkpoints: int = 1
    eval_draws: int = 1000

    def definition(self) -> dict[str, Any]:
        """JSON-ready suite definition, metric directions included (minimum effects and K are not:
        they are the gate's rule, not what was measured)."""
        used = sorted({m for e in self.entries for m in e.metrics})
        return {
            "name": self.name,
            "checkpoints": self.checkpoints,
            "eval_draws": self.eval_draws,
            "entries": [e.definition() for e in self.entries],
            "metrics": {m: "higher" if METRICS[m].higher_is_better else "lower" for m in used},
        }

    def cell(self, entry: SuiteEntry, seed: int) -> dict[str, Any]:
        """The :func:`~hierbench.harness.run_one` keyword arguments of ``entry`` at run seed ``seed``."""
        return {
            "method": entry.method,
            "dataset": entry.dataset,
            "data_params": dict(entry.data_params),
            "method_params": dict(entry.method_params),
            "seed": seed,
            "steps": entry.steps,
            "checkpoints": self.checkpoints,
            "eval_draws": self.eval_draws,
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON definition (first 16 hex digits)."""
        blob = json.dumps(self.definition(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, name: str, **changes: Any) -> Suite:
        """A copy with entry ``name`` changed (``steps=...`` or method parameters ``lr=...``), e.g.
        to plant a regression.  Unknown entry names raise KeyError."""
        if name not in {e.name for e in self.entries}:
            raise KeyError(name)
        steps = changes.pop("steps", None)
        entries = tuple(
            dataclasses.replace(
                e,
                steps=steps if steps is not None else e.steps,
                method_params=e.method_params | changes,
            )
            if e.name == name
            else e
            for e in self.entries
        )
        return dataclasses.replace(self, entries=entries)


# The metrics of an entry follow from its dataset: the KL where the evidence is exact, else the ELBO and
# the accuracy against the stored gated NUTS reference.
DATASET_METRICS: dict[str, tuple[str, ...]] = {"hier-linear": EXACT_METRICS}
SUITE_PREFIX = "regress-"  # the suite "quick" is the experiment file experiments/regress-quick.toml


def suite_from_experiment(name: str) -> Suite:
    """The suite ``name`` from its experiment file ``experiments/regress-<name>.toml``.

    Each cell of the file (expanded by :func:`hierbench.sweep.expand`; its seed is replaced by the
    gate's) is an entry named ``<dataset without "hier-">/<label>``, with the metrics of its dataset
    (:data:`DATASET_METRICS`, else :data:`REFERENCE_METRICS`).  Entries are listed dataset by dataset,
    in the order the datasets first appear (the order the baselines were written in).
    """
    from hierbench.sweep import expand, find_experiment, load_experiment

    experiment = load_experiment(find_experiment(SUITE_PREFIX + name))
    cells = expand(experiment)
    datasets = list(dict.fromkeys(c.kwargs["dataset"] for c in cells))
    cells = sorted(cells, key=lambda c: datasets.index(c.kwargs["dataset"]))  # stable
    settings = {(c.kwargs["checkpoints"], c.kwargs["eval_draws"]) for c in cells}
    extra = {k for c in cells for k in c.kwargs} - {
        *SuiteEntry.__dataclass_fields__,
        "seed",
        "checkpoints",
        "eval_draws",
    }
    if len(settings) != 1 or extra:
        raise ParamError(
            f"{experiment.path}: a regression suite has one checkpoints and eval_draws for all its entries "
            f"and no {', '.join(sorted(extra)) or 'other run keys'}; got {sorted(settings)}"
        )
    ((checkpoints, eval_draws),) = settings
    entries = tuple(
        SuiteEntry(
            f"{kw['dataset'].removeprefix('hier-')}/{c.label}",
            kw["method"],
            kw["dataset"],
            dict(kw["data_params"]),
            dict(kw["method_params"]),
            kw["steps"],
            DATASET_METRICS.get(kw["dataset"], REFERENCE_METRICS),
        )
        for c in cells
        for kw in [c.kwargs]
    )
    return Suite(name, entries, checkpoints=checkpoints, eval_draws=eval_draws)


def suite_names() -> list[str]:
    """The suites shipped as ``experiments/regress-*.toml``."""
    from hierbench.sweep import available_experiments

    return [e.removeprefix(SUITE_PREFIX) for e in available_experiments() if e.startswith(SUITE_PREFIX)]


SUITES: dict[str, Suite] = {name: suite_from_experiment(name) for name in suite_names()}
QUICK = SUITES["quick"]
TINY = SUITES["tiny"]  # small enough for the tests (seconds per seed)


def get_suite(name: str) -> Suite:
    """The registered suite ``name``; :class:`ParamError` lists the valid names otherwise."""
    if name not in SUITES:
        raise ParamError(f"unknown suite {name!r}; valid suites: {', '.join(SUITES)}")
    return SUITES[name]


def seeds(first: int, repeats: int) -> list[int]:
    """``repeats`` consecutive run seeds from ``first`` (2 ≤ repeats ≤ :data:`MAX_REPEATS`)."""
    if not isinstance(repeats, int) or not 2 <= repeats <= MAX_REPEATS:
        raise ParamError(
            f"--repeats must be an integer in 2..{MAX_REPEATS} (an SE needs 2+ seeds), got {repeats}"
        )
    return list(range(first, first + repeats))


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


# --------------------------------------------------------------------------- running
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
    from hierbench.sweep import run_cell

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


def summarize(values: pd.DataFrame) -> pd.DataFrame:
    """Per (entry, metric): runs, finite values ``n``, their mean, sd and the SE of the mean sd/√n.

    Parameters
    ----------
    values : DataFrame
        Long table with columns ``entry, metric, seed, value``.

    Returns
    -------
    DataFrame
        Columns ``entry, metric, runs, n, mean, sd, se`` in first-appearance order.
    """

    rows = []
    for (entry, metric), v in values.groupby(["entry", "metric"], sort=False)["value"]:
        finite = v.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        n = len(finite)
        sd = float(np.std(finite, ddof=1)) if n >= 2 else math.nan
        rows.append(
            {
                "entry": entry,
                "metric": metric,
                "runs": len(v),
                "n": n,
                "mean": float(np.mean(finite)) if n else math.nan,
                "sd": sd,
                "se": sd / math.sqrt(n) if n >= 2 else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["entry", "metric", "runs", "n", "mean", "sd", "se"])


# --------------------------------------------------------------------------- comparing
def combined_se(sd_b: np.ndarray, n_b: np.ndarray, sd_n: np.ndarray, n_n: np.ndarray) -> np.ndarray:
    """Standard error of ``mean_now − mean_baseline`` with the across-seed spread pooled over both sides.

    ``s² = ((n_b − 1) sd_b² + (n_n − 1) sd_n²) / (n_b + n_n − 2)`` and ``se = s √(1/n_b + 1/n_n)``:
    under the hypothesis the gate tests (unchanged code) both sides have the same spread, and pooling
    gives the SE n_b + n_n − 2 degrees of freedom instead of about min(n_b, n_n) − 1.  With n_b = n_n it
    equals √(se_b² + se_n²).  NaN where neither side has two values.
    """
    sd_b, n_b, sd_n, n_n = (np.asarray(a, dtype=float) for a in (sd_b, n_b, sd_n, n_n))
    with np.errstate(divide="ignore", invalid="ignore"):
        ss = np.where(n_b > 1, (n_b - 1) * sd_b**2, 0.0) + np.where(n_n > 1, (n_n - 1) * sd_n**2, 0.0)
        dof = np.fmax(n_b - 1, 0) + np.fmax(n_n - 1, 0)
        pooled = np.where(dof > 0, ss / dof, np.nan)
        return np.where((n_b > 0) & (n_n > 0), np.sqrt(pooled * (1 / n_b + 1 / n_n)), np.nan)


def compare(
    baseline: pd.DataFrame,
    now: pd.DataFrame,
    k: float = K_SE,
    metrics: dict[str, Metric] | None = None,
) -> pd.DataFrame:
    """Compare two summary tables (:func:`summarize`) metric by metric.  Pure: no runs, no files.

    Parameters
    ----------
    baseline, now : DataFrame
        Columns ``entry, metric, runs, n, mean, sd, se``.
    k : float
        Standard errors a change must exceed to fail.
    metrics : dict, optional
        Direction and minimum effect per metric name (default :data:`METRICS`).

    Returns
    -------
    DataFrame
        One row per (entry, metric), with ``baseline``, ``baseline_se``, ``now``, ``now_se``,
        ``worse`` (positive: now is worse), ``se`` (:func:`combined_se`), ``worse_se`` (worse / se),
        ``threshold`` = max(k·se, min effect) and ``verdict``: ``ok``, ``improved``, ``REGRESSION`` or
        ``MISSING`` (a run did not give a value).  Rows only in ``now`` are listed as ``new``.
    """
    metrics = METRICS if metrics is None else metrics
    cols = ["entry", "metric", "runs", "n", "mean", "sd", "se"]
    merged = baseline[cols].merge(now[cols], on=["entry", "metric"], how="outer", suffixes=("_b", "_n"))
    order = {key: i for i, key in enumerate(dict.fromkeys(_keys(baseline) + _keys(now)))}  # suite order
    merged = merged.iloc[np.argsort([order[key] for key in _keys(merged)], kind="stable")]
    merged = merged.reset_index(drop=True)
    unknown = sorted(set(merged["metric"]) - set(metrics))
    if unknown:
        raise ValueError(f"no direction/minimum effect for metric(s) {', '.join(unknown)}")
    sign = np.where([metrics[m].higher_is_better for m in merged["metric"]], -1.0, 1.0)
    min_effect = np.array([metrics[m].min_effect for m in merged["metric"]], dtype=float)
    worse = sign * (merged["mean_n"].to_numpy(float) - merged["mean_b"].to_numpy(float))
    se = combined_se(merged["sd_b"], merged["n_b"], merged["sd_n"], merged["n_n"])
    threshold = np.fmax(k * se, min_effect)
    with np.errstate(divide="ignore", invalid="ignore"):
        worse_se = np.where(se > 0, worse / se, np.sign(worse) * np.inf)
    in_base = merged["runs_b"].notna().to_numpy()
    complete = (
        merged["runs_n"].notna() & (merged["n_n"] == merged["runs_n"]) & (merged["n_n"] > 0)
    ).to_numpy()
    verdict = np.select(
        [~in_base, ~complete | ~np.isfinite(worse), worse > threshold, -worse > threshold],
        ["new", "MISSING", "REGRESSION", "improved"],
        default="ok",
    )
    return pd.DataFrame(
        {
            "entry": merged["entry"],
            "metric": merged["metric"],
            "better": np.where(sign < 0, "higher", "lower"),
            "baseline": merged["mean_b"],
            "baseline_se": merged["se_b"],
            "now": merged["mean_n"],
            "now_se": merged["se_n"],
            "worse": worse,
            "se": se,
            "worse_se": worse_se,
            "threshold": threshold,
            "verdict": verdict,
        }
    )


def _keys(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(table["entry"], table["metric"], strict=True))


def failed(comparison: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`compare` table that fail the gate (``REGRESSION`` or ``MISSING``)."""
    return comparison[comparison["verdict"].isin(["REGRESSION", "MISSING"])]


def format_comparison(comparison: pd.DataFrame) -> str:
    """The comparison as a plain-text pandas table (metric, baseline, now, worse in SEs, verdict)."""

    def pm(mean: float, se: float) -> str:
        if not np.isfinite(mean):
            return "-"
        return f"{mean:.4g} ± {se:.2g}" if np.isfinite(se) else f"{mean:.4g}"

    show = pd.DataFrame(
        {
            "entry": comparison["entry"],
            "metric": comparison["metric"],
            "better": comparison["better"],
            "baseline": [
                pm(m, s) for m, s in zip(comparison["baseline"], comparison["baseline_se"], strict=True)
            ],
            "now": [pm(m, s) for m, s in zip(comparison["now"], comparison["now_se"], strict=True)],
            "worse (SEs)": [f"{v:+.1f}" if np.isfinite(v) else str(v) for v in comparison["worse_se"]],
            "limit": [f"{v:.3g}" for v in comparison["threshold"]],
            "verdict": comparison["verdict"],
        }
    )
    return show.to_string(index=False)


# --------------------------------------------------------------------------- the baseline file
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


# --------------------------------------------------------------------------- the two commands
def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def baseline_update(
    suite_name: str = "quick",
    repeats: int = BASELINE_REPEATS,
    out: str | Path | None = None,
    references: str | Path | None = REFERENCES_DIR,
    log: Callable[[str], None] = _stderr,
) -> int:
    """``hierbench baseline update``: run the suite with the baseline seeds and write the baseline.

    Returns the exit code: 0 written, 1 a run did not end ``ok`` (nothing written).  Bad input
    raises :class:`ParamError` (exit 2).
    """
    suite = get_suite(suite_name)
    run_seeds = seeds(BASELINE_SEED0, repeats)
    path = Path(out) if out is not None else default_baseline_path(suite.name)
    refs = reference_notes(suite, references)
    log(f"baseline of suite {suite.name!r} ({len(suite.entries)} entries x seeds {run_seeds}) -> {path}")
    t0 = time.perf_counter()
    values, runs = run_suite(suite, run_seeds, references, log=log)
    wall_s = time.perf_counter() - t0
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        for r in bad:
            log(f"  {r['entry']} seed {r['seed']}: {r['status']} {r.get('error', '')}")
        log(f"{len(bad)} run(s) did not end ok; baseline not written")
        return 1
    doc = write_baseline(path, suite, values, runs, run_seeds, refs, wall_s)
    table = pd.DataFrame(doc["stats"])[["entry", "metric", "mean", "se"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"baseline written to {path}: {len(table)} metrics, {len(runs)} runs in {wall_s:.0f} s")
    return 0


def regress(
    suite_name: str = "quick",
    repeats: int = REGRESS_REPEATS,
    baseline: str | Path | None = None,
    references: str | Path | None = REFERENCES_DIR,
    log: Callable[[str], None] = _stderr,
) -> int:
    """``hierbench regress``: rerun the suite with the regress seeds and compare with the baseline.

    Returns the exit code: 0 no regression, 1 a regression (or a run without a value).  A missing,
    corrupt or stale baseline raises :class:`ParamError` (exit 2) before anything runs.
    """
    suite = get_suite(suite_name)
    run_seeds = seeds(REGRESS_SEED0, repeats)
    path = Path(baseline) if baseline is not None else default_baseline_path(suite.name)
    doc = load_baseline(path, suite, reference_notes(suite, references))
    rule = doc.get("rule") or {}
    if rule.get("k") != K_SE or rule.get("min_effects") != {
        m: METRICS[m].min_effect for m in suite.definition()["metrics"]
    }:
        log("note: the baseline was written under another k or minimum effects; the current ones apply")
    log(
        f"regress suite {suite.name!r} ({len(suite.entries)} entries x seeds {run_seeds}) against {path} "
        f"(seeds {doc['seeds']}, git {str(doc.get('git_sha'))[:10]}, {doc.get('created_utc')})"
    )
    t0 = time.perf_counter()
    values, runs = run_suite(suite, run_seeds, references, log=log)
    wall_s = time.perf_counter() - t0
    comparison = compare(doc["summary"], summarize(values))
    print(format_comparison(comparison))
    bad = failed(comparison)
    counts = comparison["verdict"].value_counts().to_dict()
    print(
        f"\n{len(comparison)} metrics: "
        + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        + f"; K = {K_SE:g}, fail when worse > max(K·SE, min effect); {len(runs)} runs in {wall_s:.0f} s"
    )
    if len(bad):
        print(f"REGRESSION: {len(bad)} metric(s) worse than the baseline beyond noise", flush=True)
        return 1
    print("no regression")
    return 0
