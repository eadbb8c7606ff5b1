"""Ours vs numpyro, side by side in one process: ``python -m hierbench.peers`` (``make peers``).

Each pair is one of our families and its numpyro autoguide (:mod:`hierbench.methods.numpyro_peers`)
on the same model and data, with the same settings (optimizer, schedule, learning rate, particles,
steps, float64, seed), both through :func:`hierbench.harness.run_one`: compiled and timed the same
way, scored off the clock on the same 1000-draw float64 ELBO.  The two runs of a pair follow each
other, so load on the machine hits both alike.

For every pair the table gives the final ELBO ± se of each, steps/s, the time to a common target
ELBO and the compile time, the last three as ratios ours/numpyro (< 1: ours takes less time; for
steps/s, > 1: ours is faster).  The **common target** is the lower of the two final ELBOs: the worse
run reaches it at its end at the latest.  A run's time to it is the optimization wall time
(``wall_s``, compile excluded) at its first trace point whose ELBO is within 3 se of the target.
Time resolution is one checkpoint (``steps / checkpoints`` steps).

Families: ``meanfield`` vs ``numpyro-autonormal`` and ``lowrank`` (rank 5) vs
``numpyro-autolowrank`` at N ∈ {100, 1000}; ``dense`` vs ``numpyro-automvn`` at N = 10 (D = 110, to
convergence) and at N = 1000 (D = 10,010, 20 steps: the per-step speed of a 10⁸-entry factor).  Models:
``hier-linear`` and ``hier-logistic`` with n = 20 rows per group, d = 10.  Ours trains with
sticking-the-landing gradients (its default), numpyro's ``Trace_ELBO`` with the standard estimator
(it has no STL); everything else is equal.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from hierbench.harness import run_one
from hierbench.records import append_record, read_records

DATASETS = ("hier-linear", "hier-logistic")
DATA = {"n": 20, "d": 10, "seed": 0}
CHECKPOINTS = 10  # trace points of a run, at most one every MIN_CHECKPOINT_STEPS steps
MIN_CHECKPOINT_STEPS = 10
TARGET_SE = 3.0  # a trace point within this many se of the target counts as reaching it

# (our method, numpyro's, method params, {N: steps}); budgets keep the whole comparison near 13 minutes
# on 2 cores
PAIRS: list[tuple[str, str, dict[str, Any], dict[int, int]]] = [
    ("meanfield", "numpyro-autonormal", {}, {100: 3_000, 1000: 1_500}),
    ("lowrank", "numpyro-autolowrank", {"rank": 5}, {100: 3_000, 1000: 1_500}),
    ("dense", "numpyro-automvn", {}, {10: 5_000}),
    # per-step speed at N = 1000 (D = 10,010: a 10⁸-entry factor, ~3 GiB with Adam state on each
    # side): 20 steps of 3-9 s each, far from converged; the steps/s column is the comparison here
    ("dense", "numpyro-automvn", {"max_dim": 20_000}, {1000: 20}),
]
QUICK = {"sizes": (10,), "steps": 200}  # --quick: seconds, for a smoke test


def plan(quick: bool = False) -> list[dict[str, Any]]:
    """The comparison's runs as keyword arguments of :func:`~hierbench.harness.run_one`, in pairs."""
    runs = []
    for dataset in DATASETS:
        for ours, peer, params, budgets in PAIRS:
            sizes = dict.fromkeys(QUICK["sizes"], QUICK["steps"]) if quick else budgets
            for num_groups, steps in sizes.items():
                for method in (ours, peer):
                    runs.append(
                        {
                            "method": method,
                            "dataset": dataset,
                            "data_params": DATA | {"N": num_groups},
                            "method_params": dict(params),
                            "steps": steps,
                            "seed": 0,
                            "checkpoints": max(1, min(CHECKPOINTS, steps // MIN_CHECKPOINT_STEPS)),
                        }
                    )
    return runs


def time_to_target(record: dict[str, Any], target: float) -> float | None:
    """Optimization seconds until the first trace point within ``TARGET_SE`` se of ``target``."""
    for point in record.get("trace") or []:
        elbo, se = point.get("elbo"), point.get("elbo_se") or 0.0
        if elbo is not None and elbo + TARGET_SE * se >= target:
            return float(point["wall_s"])
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, N, family): both runs' scores, timings and the ratios ours/numpyro."""
    # num_groups: every record whose model was built has it; one that failed before cannot be paired
    by_key = {(r["dataset"], r.get("num_groups"), r["method"]): r for r in records}
    rows = []
    for dataset in DATASETS:
        for ours, peer in dict.fromkeys((ours, peer) for ours, peer, _, _ in PAIRS):
            sizes = sorted({k[1] for k in by_key if k[0] == dataset and k[2] == ours})
            for num_groups in sizes:
                a, b = by_key.get((dataset, num_groups, ours)), by_key.get((dataset, num_groups, peer))
                if a is None or b is None:
                    continue
                row = {"dataset": dataset, "N": num_groups, "ours": ours, "numpyro": peer}
                row |= {"status": f"{a['status']} / {b['status']}"}
                ok = a["status"] == b["status"] == "ok"
                target = min(a["elbo"], b["elbo"]) if ok else None
                tt_a = time_to_target(a, target) if ok else None
                tt_b = time_to_target(b, target) if ok else None
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


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or re-tabulate existing records) and write records.jsonl + summary.md."""
    parser = argparse.ArgumentParser(prog="python -m hierbench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/peers", help="folder for records.jsonl and summary.md")
    parser.add_argument("--quick", action="store_true", help="N=10, 200 steps: a smoke test in seconds")
    parser.add_argument("--report-only", action="store_true", help="re-tabulate the existing records")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records_file = out / "records.jsonl"
    if not args.report_only:
        records_file.unlink(missing_ok=True)  # one comparison per file: both sides of a pair, one run
        start = time.perf_counter()
        runs = plan(args.quick)
        for i, kwargs in enumerate(runs, 1):
            record = run_one(**kwargs, progress=False)
            append_record(records_file, record)
            print(
                f"[{i}/{len(runs)} {time.perf_counter() - start:6.0f}s] {kwargs['method']:20s} "
                f"{kwargs['dataset']} N={kwargs['data_params']['N']}: {record['status']} "
                f"elbo={_num(record.get('elbo'), '.2f')} steps/s={_num(record.get('steps_per_s'), '.0f')}",
                file=sys.stderr,
                flush=True,
            )
        print(f"comparison: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    table = markdown(compare(read_records([records_file])))
    (out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
