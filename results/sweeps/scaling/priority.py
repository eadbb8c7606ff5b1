"""Run the scaling sweep's cells in priority order, into its usual records file (resumable).

How the 2026-12-06 records were made (their ``argv`` says ``/tmp/prio.py``: this file's phases, run as
two scripts): the headline's cells first, then every N <= 1000, then dense where it is infeasible
and mean-field at N = 10^4; the session stopped there.  ``make sweep EXP=scaling`` runs whatever is
left in the experiment's own order.  ``python results/sweeps/scaling/priority.py``
"""

import os
import sys

from hierbench._io import REFERENCES_DIR
from hierbench.cli import _references
from hierbench.suites.experiment import expand, find_experiment, load_experiment
from hierbench.suites.sweep import run_sweep


def size(cell) -> int:
    return cell.kwargs["data_params"]["N"]


HEADLINE = ("branch (full data)", "amortized (potential)")
PHASES = [
    # 2026-12-06 afternoon: the amortized runs re-tuned at their own steps and budget (the records
    # tuned at 30 s are in records-amortized-tuned-30s.jsonl), and branch (B=32)'s last seed at 10^4
    (
        "headline N=1e4, amortized re-tuned",
        lambda c: size(c) == 10_000 and c.label in ("amortized (potential)", "branch (B=32)"),
    ),
    ("amortized N <= 1e4", lambda c: size(c) <= 10_000 and c.label.startswith("amortized")),
    # then branch (B=32) re-tuned at its cells' own budget (its 30 s-tuned records:
    # records-branch-b32-tuned-30s.jsonl)
    ("branch (B=32) re-tuned", lambda c: c.label == "branch (B=32)" and size(c) <= 10_000),
    (
        "headline N=1e4",
        lambda c: size(c) == 10_000 and c.label in ("branch (full data)", "amortized (potential)"),
    ),
    ("N <= 1000", lambda c: size(c) <= 1000),
    ("dense where infeasible", lambda c: c.label == "dense" and size(c) == 10_000),
    ("meanfield N=1e4", lambda c: c.label == "meanfield" and size(c) == 10_000),
    ("N = 1e4, the rest", lambda c: size(c) == 10_000),
    ("N = 1e5", lambda c: size(c) == 100_000),
]


def main(only: list[str]) -> None:
    """Every phase in order, or only the phases named (``python priority.py "N <= 1000" ...``)."""
    experiment = load_experiment(find_experiment("scaling"))
    cells = expand(experiment)
    done: set[str] = set()
    for name, pick in PHASES:
        if only and name not in only:
            continue
        subset = [c for c in cells if pick(c) and c.cell_id not in done]
        done |= {c.cell_id for c in subset}
        print(f"=== phase {name}: {len(subset)} cells", flush=True)
        result = run_sweep(
            experiment,
            None,
            jobs=2,
            references=_references(os.fspath(REFERENCES_DIR)),
            progress=False,
            cells=subset,
        )
        print(f"=== phase {name}: ran {dict(result.ran)}, skipped {result.skipped}", flush=True)


if __name__ == "__main__":  # the sweep's worker processes import this file
    main(sys.argv[1:])
