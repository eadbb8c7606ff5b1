"""Ours vs numpyro, side by side in one process: ``hierbench peers`` (``make peers``).

The grid is ``experiments/peers.toml``, run by the sweep (:func:`hierbench.suites.sweep.run_sweep`).  Each
pair is one of our families and its numpyro autoguide (:mod:`hierbench.methods.numpyro_peers`) on the same
model and data, with the same settings (optimizer, schedule, learning rate, particles, steps, float64,
seed), both through :func:`hierbench.harness.run_one`: compiled and timed the same way, scored off the
clock on the same 1000-draw float64 ELBO.  The two runs of a pair follow each other, so load on the
machine hits both alike.

For every pair the table gives the final ELBO ± se of each, steps/s, the time to a common target
ELBO and the compile time, the last three as ratios ours/numpyro (< 1: ours takes less time; for
steps/s, > 1: ours is faster).  The **common target** is the lower of the two final ELBOs: the worse
run reaches it at its end at the latest.  A run's time to it is the optimization wall time
(``wall_s``, compile excluded) at its first trace point whose ELBO is within :data:`TARGET_SE` se of
the target (:func:`hierbench.reports.targets.time_to_target` with ``n_se=TARGET_SE`` and
``interpolate=False``): time resolution is one checkpoint (``steps / checkpoints`` steps).

Families: ``meanfield`` vs ``numpyro-autonormal`` and ``lowrank`` (rank 5) vs
``numpyro-autolowrank`` at N ∈ {100, 1000}; ``dense`` vs ``numpyro-automvn`` at N = 10 (D = 110, to
convergence) and at N = 1000 (D = 10,010, 20 steps: the per-step speed of a 10⁸-entry factor).  Models:
``hier-linear`` and ``hier-logistic`` with n = 20 rows per group, d = 10.  Ours trains with
sticking-the-landing gradients (its default), numpyro's ``Trace_ELBO`` with the standard estimator
(it has no STL); everything else is equal.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from hierbench.records import read_records
from hierbench.reports.targets import time_to_target, trace_columns

EXPERIMENT = "peers"  # experiments/peers.toml
TARGET_SE = 3.0  # a trace point within this many se of the target counts as reaching it
# our family -> its numpyro peer, in the table's order
PEER_OF: dict[str, str] = {
    "meanfield": "numpyro-autonormal",
    "lowrank": "numpyro-autolowrank",
    "dense": "numpyro-automvn",
}


def time_to_common_target(record: dict[str, Any], target: float) -> float | None:
    """Optimization seconds until the first trace point within :data:`TARGET_SE` se of ``target``."""
    times, elbos, ses = trace_columns(record)
    return time_to_target(times, elbos, target, ses=ses, n_se=TARGET_SE, interpolate=False)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, N, family): both runs' scores, timings and the ratios ours/numpyro."""
    # num_groups: every record whose model was built has it; one that failed before cannot be paired
    by_key = {(r["dataset"], r.get("num_groups"), r["method"]): r for r in records}
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        for ours, peer in PEER_OF.items():
            sizes = sorted({k[1] for k in by_key if k[0] == dataset and k[2] == ours})
            for num_groups in sizes:
                a, b = by_key.get((dataset, num_groups, ours)), by_key.get((dataset, num_groups, peer))
                if a is None or b is None:
                    continue
                row = {"dataset": dataset, "N": num_groups, "ours": ours, "numpyro": peer}
                row |= {"status": f"{a['status']} / {b['status']}"}
                ok = a["status"] == b["status"] == "ok"
                target = min(a["elbo"], b["elbo"]) if ok else None
                tt_a = time_to_common_target(a, target) if ok else None
                tt_b = time_to_common_target(b, target) if ok else None
                row |= {  # records are validated (hierbench.records.read_records): REQUIRED fields are there
                    "elbo_ours": a["elbo"],
                    "se_ours": a["elbo_se"],
                    "elbo_numpyro": b["elbo"],
                    "se_numpyro": b["elbo_se"],
                    "steps": a["steps"],
                    "steps_per_s_ours": a.get("steps_per_s"),
                    "steps_per_s_numpyro": b.get("steps_per_s"),
                    "steps_per_s_ratio": _ratio(a.get("steps_per_s"), b.get("steps_per_s")),
                    "target_elbo": target,
                    "tt_target_ours": tt_a,
                    "tt_target_numpyro": tt_b,
                    "tt_target_ratio": _ratio(tt_a, tt_b),
                    "compile_s_ours": a["compile_s"],
                    "compile_s_numpyro": b["compile_s"],
                    "compile_s_ratio": _ratio(a["compile_s"], b["compile_s"]),
                }
                rows.append(row)
    return rows


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table: ELBOs with se, then steps/s, time to the common target and compile_s as
    ``ours / numpyro = ratio``."""
    head = (
        "| model | N | ours vs numpyro | steps | final ELBO ours | final ELBO numpyro "
        "| steps/s ours / numpyro = ratio | time to target s: ours / numpyro = ratio "
        "| compile s: ours / numpyro = ratio |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        family = f"{r['ours']} vs {r['numpyro'].removeprefix('numpyro-')}"
        elbo = lambda e, s: f"{e:,.2f} ± {s:.2f}"  # noqa: E731
        cell = lambda a, b, ratio, f: f"{_num(a, f)} / {_num(b, f)} = {_num(ratio, '.2f')}"  # noqa: E731
        # a run that did not end ok shows its status for its ELBO; its steps/s and compile time
        # are still measurements of the same steps
        ours_status, peer_status = r["status"].split(" / ")
        elbo_ours = elbo(r["elbo_ours"], r["se_ours"]) if ours_status == "ok" else ours_status
        elbo_peer = elbo(r["elbo_numpyro"], r["se_numpyro"]) if peer_status == "ok" else peer_status
        lines.append(
            f"| {r['dataset']} | {r['N']:,} | {family} | {r['steps']:,} "
            f"| {elbo_ours} | {elbo_peer} "
            f"| {cell(r['steps_per_s_ours'], r['steps_per_s_numpyro'], r['steps_per_s_ratio'], ',.0f')} "
            f"| {cell(r['tt_target_ours'], r['tt_target_numpyro'], r['tt_target_ratio'], '.2f')} "
            f"| {cell(r['compile_s_ours'], r['compile_s_numpyro'], r['compile_s_ratio'], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def run_peers(
    out: str | Path = "results/peers",
    quick: bool = False,
    report_only: bool = False,
    jobs: int = 1,
    progress: bool | None = None,
) -> int:
    """Run the comparison (or re-tabulate existing records) and write ``records.jsonl`` + ``summary.md``.

    Parameters
    ----------
    out : path
        The output folder.
    quick : bool
        The experiment's ``--quick`` grid (every pair at N = 10, 200 steps: a smoke test in seconds).
    report_only : bool
        Only rebuild the table from the existing records.
    jobs : int
        The sweep's worker processes (1: one at a time, so that the two runs of a pair see alike load).
    progress : bool, optional
        The sweep's progress bar.

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
        records_file.unlink(missing_ok=True)  # one comparison per file: both sides of a pair, one run
        start = time.perf_counter()
        result = run_sweep(EXPERIMENT, records_file, quick=quick, jobs=jobs, progress=progress)
        failed = bool(result.failed)
        print(f"comparison: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    table = markdown(compare(read_records([records_file])))
    (out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return 1 if failed else 0
