"""Ours vs every peer, one table per model and family: ``hierbench peers`` (``make peers``).

The grid is ``experiments/peers.toml``, run by the sweep (:func:`hierbench.suites.sweep.run_sweep`): per
model (``hier-linear``, ``hier-logistic``; n = 20 rows per group, d = 10) and per **family**, our method
and every registered peer of it, each through :func:`hierbench.harness.run_one` (compiled and timed the
same way, scored off the clock on the same 1000-draw float64 ELBO).  The runs of one comparison follow
each other, so load on the machine hits them alike.

==============  ===================  =========================================================================
family          ours                 peers
==============  ===================  =========================================================================
mean-field      ``meanfield``        numpyro AutoNormal (factor of our joint; native model), blackjax
                                     mean-field, Pyro AutoNormal (torch), Stan ADVI mean-field
low-rank        ``lowrank``          numpyro AutoLowRank (factor; native), Pyro AutoLowRank
full-rank       ``dense``            numpyro AutoMVN (factor; native), blackjax full-rank, Pyro AutoMVN,
                                     Stan ADVI full-rank
minibatch       ``branch`` (B)       numpyro native AutoNormal (B, subsampled plate), numpyro AutoSemiDAIS (B)
==============  ===================  =========================================================================

Pathfinder (``blackjax-pathfinder``: one L-BFGS run; ``stan-pathfinder``) is shown **beside** every
full-data family at the same N (:data:`BESIDE`): it is not a member of the family (its q is its own), so
it never sets the family's target.

Each table (one per model and family; rows grouped by N, ours first) gives per method: the final ELBO ±
se; steps/s, the time to the family's common target ELBO and the compile time, each with its ratio to
ours (``× ours`` = this row ÷ ours: steps/s above 1 is faster than ours, times above 1 slower); the step
size the run used (tuned by the protocol, :mod:`hierbench.harness.tune`, or the method's default) and the
tuning grid's total cost; the status.  A run that did not end ``ok`` is a row with its status and error
and no number.

The **common target** of a (model, family, N) is the lowest final ELBO among the family's runs at that N
that ended ``ok``: every such run reaches it by its end at the latest, so every row gets a time and the
ratio compares how fast each got to a level all of them reached.  The table names the target and the run
that set it.  A run's time to it is the optimization wall time (``wall_s``, compile excluded) at its first
trace point within :data:`TARGET_SE` se of the target (:func:`hierbench.reports.targets.time_to_target`,
the one definition, with ``n_se=TARGET_SE`` and ``interpolate=False``): the resolution is one checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

from hierbench._io import atomic_write_text
from hierbench.records import read_records
from hierbench.reports.targets import time_to_target, trace_columns

EXPERIMENT = "peers"  # experiments/peers.toml
TARGET_SE = 3.0  # a trace point within this many se of the target counts as reaching it


@dataclasses.dataclass(frozen=True)
class Family:
    """One comparison: our method and its peers, in the table's order (ours first)."""

    name: str
    methods: tuple[str, ...]  # ours first
    minibatch: bool = False  # the members run with batch_groups (a full-data run is another family)

    @property
    def ours(self) -> str:
        return self.methods[0]


FAMILIES: tuple[Family, ...] = (
    Family(
        "mean-field",
        (
            "meanfield",
            "numpyro-autonormal",
            "numpyro-native-autonormal",
            "blackjax-meanfield",
            "pyro-autonormal",
            "stan-advi-meanfield",
        ),
    ),
    Family(
        "low-rank",
        ("lowrank", "numpyro-autolowrank", "numpyro-native-autolowrank", "pyro-autolowrank"),
    ),
    Family(
        "full-rank",
        (
            "dense",
            "numpyro-automvn",
            "numpyro-native-automvn",
            "blackjax-fullrank",
            "pyro-automvn",
            "stan-advi-fullrank",
        ),
    ),
    Family(
        "minibatch",
        ("branch", "numpyro-native-autonormal", "numpyro-native-semidais"),
        minibatch=True,
    ),
)
# shown beside every full-data family at the same model and N; never setting its target
BESIDE: tuple[str, ...] = ("blackjax-pathfinder", "stan-pathfinder")
SINGLE_RUN = frozenset(BESIDE)  # one optimization, not steps: steps/s has no meaning

LIBRARY: dict[str, str] = {
    "meanfield": "hierbench (JAX)",
    "lowrank": "hierbench (JAX)",
    "dense": "hierbench (JAX)",
    "branch": "hierbench (JAX)",
    "numpyro-autonormal": "numpyro, factor of our joint",
    "numpyro-autolowrank": "numpyro, factor of our joint",
    "numpyro-automvn": "numpyro, factor of our joint",
    "numpyro-native-autonormal": "numpyro, native model",
    "numpyro-native-autolowrank": "numpyro, native model",
    "numpyro-native-automvn": "numpyro, native model",
    "numpyro-native-semidais": "numpyro, native model",
    "blackjax-meanfield": "blackjax",
    "blackjax-fullrank": "blackjax",
    "blackjax-pathfinder": "blackjax",
    "pyro-autonormal": "Pyro (torch)",
    "pyro-autolowrank": "Pyro (torch)",
    "pyro-automvn": "Pyro (torch)",
    "stan-advi-meanfield": "Stan (CmdStan)",
    "stan-advi-fullrank": "Stan (CmdStan)",
    "stan-pathfinder": "Stan (CmdStan)",
}
# why a method has no step size to tune (the lr column says so)
NO_STEP_SIZE: dict[str, str] = {
    "blackjax-pathfinder": "none (L-BFGS)",
    "stan-pathfinder": "none (L-BFGS)",
    "stan-advi-meanfield": "Stan's own (eta adaptation)",
    "stan-advi-fullrank": "Stan's own (eta adaptation)",
}


def time_to_common_target(record: dict[str, Any], target: float) -> float | None:
    """Optimization seconds until the first trace point within :data:`TARGET_SE` se of ``target``.

    None where the run's initial q (its step-0 trace point) already reaches it: then the target says
    nothing about speed (the full-rank speed rows at N = 1000, five steps from far away), and a 0 s
    would read as a win.
    """
    times, elbos, ses = trace_columns(record)
    t = time_to_target(times, elbos, target, ses=ses, n_se=TARGET_SE, interpolate=False)
    steps = [p.get("step") for p in record.get("trace") or []]
    if t is not None and steps and steps[0] == 0 and t == times[0]:
        return None
    return t


def num_groups(record: dict[str, Any]) -> int | None:
    """A record's N: its model's, or (a run that failed before building it) the requested one."""
    n = record.get("num_groups")
    return n if n is not None else (record.get("data_params") or {}).get("N")


def is_minibatch(record: dict[str, Any]) -> bool:
    """Whether the run saw a minibatch of groups a step (``batch_groups`` set)."""
    for params in ((record.get("cell") or {}).get("method_params"), record.get("method_params")):
        if params and params.get("batch_groups") is not None:
            return True
    return False


def family_of(record: dict[str, Any]) -> Family | None:
    """The family a record compares in (None: a Pathfinder run, beside the families, or no family)."""
    for family in FAMILIES:
        if record["method"] in family.methods and is_minibatch(record) == family.minibatch:
            return family
    return None


def _ok(record: dict[str, Any] | None) -> bool:
    return record is not None and record["status"] == "ok"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if _finite(a) and _finite(b) and b != 0 else None


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table per (dataset, family): rows grouped by N, ours first, then the peers, then Pathfinder.

    Tuning runs (``role = "tuning"``) are left out: their cost is in the tuned runs' ``tuning`` block.
    Where a (dataset, N, method, family) has several records, the last counts.

    Returns
    -------
    list of dict
        ``{"dataset", "family", "groups": [{"N", "steps", "target", "target_by", "rows": [...]}]}``;
        each row has ``method``, ``library``, ``status``, ``error``, ``steps``, ``elbo``, ``elbo_se``,
        ``steps_per_s``, ``tt_target``, ``compile_s`` (None unless the run ended ok), the three ratios to
        ours (``*_x_ours``), ``lr``, ``tuned`` and ``tuning_s``.
    """
    runs = [r for r in records if r.get("role") != "tuning"]
    by_key: dict[tuple, dict[str, Any]] = {}
    for rec in runs:
        family = family_of(rec)
        by_key[(rec["dataset"], num_groups(rec), rec["method"], family.name if family else None)] = rec
    tables = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        for family in FAMILIES:
            sizes = sorted({k[1] for k in by_key if k[0] == dataset and k[3] == family.name and k[1]})
            groups = []
            for n in sizes:
                members = [by_key.get((dataset, n, m, family.name)) for m in family.methods]
                beside = [] if family.minibatch else [by_key.get((dataset, n, m, None)) for m in BESIDE]
                groups.append(_group(n, family, [r for r in members if r], [r for r in beside if r]))
            if groups:
                tables.append({"dataset": dataset, "family": family.name, "groups": groups})
    return tables


def _group(n: int, family: Family, members: list[dict], beside: list[dict]) -> dict[str, Any]:
    scored = [r for r in members if _ok(r) and _finite(r.get("elbo"))]
    setter = min(scored, key=lambda r: r["elbo"]) if scored else None
    target = setter["elbo"] if setter else None
    ours = next((r for r in members if r["method"] == family.ours), None)
    ours_row = _row(ours, target) if ours is not None else None
    rows = [_row(r, target, ours_row) for r in members + beside]
    steps = sorted({r["steps"] for r in members if _ok(r) and r.get("steps")})
    return {
        "N": n,
        "steps": steps,
        "target": target,
        "target_by": setter["method"] if setter else None,
        "rows": rows,
    }


def _row(rec: dict[str, Any], target: float | None, ours: dict[str, Any] | None = None) -> dict[str, Any]:
    ok = _ok(rec)
    method = rec["method"]
    tuning = rec.get("tuning") or {}
    params = rec.get("method_params") or {}
    row: dict[str, Any] = {
        "method": method,
        "library": LIBRARY.get(method, method.split("-", 1)[0]),
        "status": rec["status"],
        "error": None if ok else (rec.get("error") or ""),
        "steps": rec.get("steps") if ok else None,
        "elbo": rec.get("elbo") if ok else None,
        "elbo_se": rec.get("elbo_se") if ok else None,
        "steps_per_s": rec.get("steps_per_s") if ok and method not in SINGLE_RUN else None,
        "tt_target": time_to_common_target(rec, target) if ok and target is not None else None,
        "compile_s": rec.get("compile_s") if ok else None,
        "lr": (tuning.get("chosen") if tuning.get("param") == "lr" else params.get("lr")) if ok else None,
        "tuned": bool(tuning) and ok,
        "tuning_s": _tuning_cost(tuning) if ok else None,
        "tuning_runs": len(tuning.get("points") or []) if ok else None,
    }
    for key in ("steps_per_s", "tt_target", "compile_s"):
        row[f"{key}_x_ours"] = _ratio(row[key], ours[key]) if ours is not None else None
    return row


def _tuning_cost(tuning: dict[str, Any]) -> float | None:
    """The tuning grid's total time: every point's optimization plus compile seconds."""
    if not tuning:
        return None
    return float(tuning.get("total_wall_s") or 0.0) + float(tuning.get("total_compile_s") or 0.0)


# ---------------------------------------------------------------------------------------------------
# Markdown


def _num(x: float | None, fmt: str) -> str:
    return format(x, fmt) if _finite(x) else "–"


def _with_ratio(value: float | None, ratio: float | None, fmt: str) -> str:
    if not _finite(value):
        return "–"
    return f"{format(value, fmt)} ({_num(ratio, '.2f')}×)" if _finite(ratio) else format(value, fmt)


def _lr(row: dict[str, Any]) -> str:
    if row["method"] in NO_STEP_SIZE:
        return NO_STEP_SIZE[row["method"]]
    if not _finite(row["lr"]):
        return "–"
    return f"{row['lr']:.3g}" + (" tuned" if row["tuned"] else " (default)")


def _status(row: dict[str, Any]) -> str:
    if row["status"] == "ok":
        return "ok"
    error = " ".join(str(row["error"] or "").split()).replace("|", "\\|")
    return f"**{row['status']}**: {error[:160]}{'…' if len(error) > 160 else ''}"


HEADER = (
    "| N | method | library | steps | final ELBO ± se | steps/s (× ours) | time to target s (× ours) "
    "| compile s (× ours) | lr | tuning grid s | status |"
)


def markdown(tables: list[dict[str, Any]]) -> str:
    """Every table, under a heading per model and family, with its targets above it."""
    out: list[str] = [
        "Ratios (in parentheses) are this row ÷ ours: steps/s above 1× is faster than ours, times above 1× "
        "slower. Target: the lowest final ELBO among the family's runs at that N that ended ok (Pathfinder "
        f"beside, not setting it); time to it: the first trace point within {TARGET_SE:g} se. lr: the peak "
        "step size used, chosen by the tuning protocol (`tuned`) or the method's default; tuning grid s: "
        "the optimization and compile seconds of the protocol's runs (scoring excluded). A run that did not "
        "end ok shows its status and error, no number.",
        "",
    ]
    for table in tables:
        out += [f"## {table['dataset']}: {table['family']}", ""]
        for group in table["groups"]:
            steps = "/".join(f"{s:,}" for s in group["steps"]) or "–"
            target = (
                f"target ELBO {group['target']:,.2f} (set by {group['target_by']})"
                if group["target"] is not None
                else "no target (no run ended ok)"
            )
            at_init = group["target"] is not None and not any(_finite(r["tt_target"]) for r in group["rows"])
            note = " (every run's initial q reaches it: no time to target)" if at_init else ""
            out.append(f"- N = {group['N']:,}: {steps} steps; {target}{note}")
        out += ["", HEADER, "|" + "---|" * 11]
        for group in table["groups"]:
            for r in group["rows"]:
                elbo = f"{r['elbo']:,.2f} ± {r['elbo_se']:.2f}" if _finite(r["elbo"]) else "–"
                tuning = f"{r['tuning_s']:.1f} ({r['tuning_runs']} runs)" if _finite(r["tuning_s"]) else "–"
                out.append(
                    f"| {group['N']:,} | `{r['method']}` | {r['library']} | {_num(r['steps'], ',')} | {elbo} "
                    f"| {_with_ratio(r['steps_per_s'], r['steps_per_s_x_ours'], ',.1f')} "
                    f"| {_with_ratio(r['tt_target'], r['tt_target_x_ours'], '.2f')} "
                    f"| {_with_ratio(r['compile_s'], r['compile_s_x_ours'], '.2f')} "
                    f"| {_lr(r)} | {tuning} | {_status(r)} |"
                )
        out.append("")
    return "\n".join(out)


def run_peers(
    out: str | Path = "results/peers",
    quick: bool = False,
    report_only: bool = False,
    jobs: int = 1,
    progress: bool | None = None,
    fresh: bool = False,
) -> int:
    """Run the comparison (or re-tabulate existing records) and write ``records.jsonl`` + ``summary.md``.

    Parameters
    ----------
    out : path
        The output folder.
    quick : bool
        The experiment's ``--quick`` grid (every comparison at small N and few steps: a smoke test).
    report_only : bool
        Only rebuild the table from the existing records.
    jobs : int
        The sweep's worker processes (1: one at a time, so that the runs of a comparison see alike load).
    progress : bool, optional
        The sweep's progress bar.
    fresh : bool
        Start over: set the existing records aside (``records.prev.jsonl``) instead of resuming them.
        A stopped comparison resumes by default: the sweep skips the cells already recorded.

    Returns
    -------
    int
        0, or 1 when a cell raised or its worker died.
    """
    from hierbench.suites.sweep import run_sweep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records_file = out / "records.jsonl"
    failed = False
    if not report_only:
        if fresh and records_file.exists():  # keep the previous comparison rather than lose it
            records_file.replace(out / "records.prev.jsonl")
        elif records_file.exists():
            print(f"resuming {records_file} (--fresh starts over)", file=sys.stderr)
        start = time.perf_counter()
        result = run_sweep(EXPERIMENT, records_file, quick=quick, jobs=jobs, progress=progress)
        failed = bool(result.failed)
        print(f"comparison: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    table = markdown(compare(read_records([records_file])))
    atomic_write_text(out / "summary.md", table)
    print(table)
    return 1 if failed else 0
