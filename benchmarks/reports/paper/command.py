"""Every figure and table of the paper's four experiments, from stored sweep records only.

The command line ``hierbench figures`` (``make figures``), described in :mod:`hierbench.reports.paper`.
"""

from __future__ import annotations

import argparse
import os
import sys

from hierbench.reports.paper.experiments import EXPERIMENTS
from hierbench.reports.paper.make import COMMAND, DEFAULT_OUT, DEFAULT_OUT_QUICK, make_paper
from hierbench.reports.paper.scaling import headline_sentence
from hierbench.reports.paper.sources import DEFAULT_RECORDS_ROOT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``hierbench figures``' options."""
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


def run(args: argparse.Namespace) -> int:
    """Make the figures and tables (see :mod:`hierbench.reports.paper`); exit 0, also when experiments
    have no records."""
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


def main(argv: list[str] | None = None) -> int:
    """``hierbench figures`` as a function (tests, notebooks)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
