"""The ``hierbench`` command line: list | run | reference | export | report | bench.

Exit codes: 0 success, 1 a run that did not finish ``ok``, 2 bad input (unknown name, bad value),
with a message listing the valid choices.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from hierbench.datasets import DATASETS
from hierbench.datasets.base import ParamError, flatten_groups
from hierbench.methods import METHODS
from hierbench.records import append_record, read_records
from hierbench.registry import build_model, describe, parameters, parse_params


def _params_line(kind: str, factory) -> str:
    return ", ".join(f"{k}={v}" for k, v in parameters(kind, factory).items())


def cmd_list(args: argparse.Namespace) -> int:
    print("Datasets (--dataset NAME --data-param key=value):")
    for name, factory in DATASETS.items():
        print(f"  {name:16s} {describe(factory)}\n  {'':16s} params: {_params_line('dataset', factory)}")
    print("\nMethods (--method NAME --method-param key=value):")
    for name, factory in METHODS.items():
        print(f"  {name:16s} {describe(factory)}\n  {'':16s} params: {_params_line('method', factory)}")
    return 0


def _check_out(path: str | None, suffix: str) -> Path:
    if not path:
        raise ParamError(f"--out FILE{suffix} is required")
    return Path(path)


def cmd_run(args: argparse.Namespace) -> int:
    from hierbench.harness import run_one

    out = _check_out(args.out, ".jsonl")
    # validate names and parameters up front so bad input is an exit-2 message, not a record
    parse_params("method", args.method, args.method_param)
    build_model(args.dataset, parse_params("dataset", args.dataset, args.data_param))
    if args.steps < 1:
        raise ParamError(f"--steps must be >= 1, got {args.steps}")
    record = run_one(
        args.method,
        args.dataset,
        _pairs(args.data_param),
        _pairs(args.method_param),
        seed=args.seed,
        steps=args.steps,
        eval_draws=args.eval_draws,
        checkpoints=args.checkpoints,
        raise_param_errors=True,
        references=None if args.references in ("", "none") else args.references,
    )
    append_record(out, record)
    _print_result(record, out)
    return 0 if record["status"] == "ok" else 1


def cmd_reference(args: argparse.Namespace) -> int:
    from hierbench import reference as refstore
    from hierbench.methods import nuts

    method_params = refstore.REFERENCE_SETTINGS.get(args.dataset, {}) | parse_params(
        "method", "nuts", args.method_param
    )
    model = build_model(args.dataset, parse_params("dataset", args.dataset, args.data_param))
    if args.seed < 0:
        raise ParamError(f"--seed must be >= 0, got {args.seed}")
    sampler = nuts.make(model, **method_params)
    ref, path, built = refstore.get_or_build(
        args.dataset,
        model,
        sampler,
        args.seed,
        method_params,
        root=Path(args.references),
        rebuild=args.rebuild,
        log=lambda msg: print(f"hierbench reference: {msg}", file=sys.stderr),
    )
    meta = ref.meta
    how = "built" if built else "loaded"
    settings = meta["settings"]
    print(
        f"{args.dataset}: reference {how} ({path}); NUTS {settings['chains']} chains × {settings['draws']} "
        f"draws, sampling {meta['sample_s']:.1f} s, compile {meta['compile_s']:.1f} s"
    )
    for check in meta["checks_made"]:
        verdict = "pass" if check["passed"] else "FAIL"
        print(f"  {verdict}  {check['check']:12s} {check['value']:.5g} ({check['rule']})")
    if args.summary:
        summary = Path(args.summary)
        summary.parent.mkdir(parents=True, exist_ok=True)
        ref.summary().to_csv(summary, index=False, float_format="%.6g")
        print(f"summary ({len(ref.natural_names)} coordinates) -> {summary}")
    if not ref.accepted:
        failed = "; ".join(ref.failed_checks)
        print(f"hierbench reference: refused as ground truth: {failed}", file=sys.stderr)
        return 1
    return 0


def _pairs(pairs: list[str] | None) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs or [])


def _print_result(rec: dict, out: Path | None = None) -> None:
    parts = [f"{rec['method']} on {rec['dataset']} (N={rec.get('num_groups')}): {rec['status']}"]
    if rec.get("elbo") is not None:
        parts.append(f"ELBO {rec['elbo']:.3f} ± {rec['elbo_se']:.3f}")
    if rec.get("kl") is not None:
        parts.append(f"KL {rec['kl']:.4g} ({rec['kl_per_group']:.3g}/group)")
    if rec.get("gate_passed") is not None:
        gate = "gate passed" if rec["gate_passed"] else "gate FAILED: " + "; ".join(rec["failed_checks"])
        parts.append(gate)
    acc = rec.get("accuracy")
    if acc:
        parts.append(
            f"std. mean error global {acc['global']['std_mean_err_mean']:.3g} / "
            f"local {acc['local']['std_mean_err_mean']:.3g} vs {acc['reference']}"
        )
    if rec.get("compile_s") is not None:
        parts.append(f"{rec['steps']} steps in {rec['wall_s']:.2f}s (+{rec['compile_s']:.2f}s compile)")
    if rec.get("error"):
        parts.append(rec["error"])
    print("; ".join(parts) + (f" -> {out}" if out else ""))


def cmd_export(args: argparse.Namespace) -> int:
    out = _check_out(args.out, ".npz")
    params = parse_params("dataset", args.dataset, args.data_param)
    if args.seed is not None:
        params["seed"] = args.seed
    model = build_model(args.dataset, params)
    if not {"x", "y", "mask"} <= set(model.data):
        raise ParamError(f"dataset {args.dataset!r} has no (x, y) rows to export")
    flat = flatten_groups(model.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        **flat,
        num_groups=model.num_groups,
        data_params=json.dumps({"dataset": args.dataset} | model.params),
    )
    print(f"wrote {out}: {len(flat['y'])} observations in {model.num_groups} groups")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hierbench.report import write_report

    missing = [f for f in args.records if not Path(f).is_file()]
    if missing:
        raise ParamError(f"no such records file: {', '.join(missing)}")
    records = read_records(args.records)
    if not records:
        raise ParamError("the records files hold no records")
    paths = write_report(records, args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hierbench.bench import accuracy_plan, plan
    from hierbench.harness import run_one
    from hierbench.report import write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    if records_path.exists():  # keep the previous run rather than lose it
        shutil.move(records_path, out / "records.prev.jsonl")
    runs = plan(tuple(args.sizes)) if args.plan == "default" else accuracy_plan()
    t0 = time.perf_counter()
    for i, spec in enumerate(runs, 1):
        size = spec["data_params"].get("N", "default")
        what = f"{spec['method']} {spec['method_params']} {spec['dataset']} N={size}"
        print(f"[{i}/{len(runs)}] {what}", flush=True)
        record = run_one(**spec, progress=args.progress)
        append_record(records_path, record)
        _print_result(record)
    write_report(read_records([records_path]), out)
    print(
        f"bench finished in {time.perf_counter() - t0:.0f}s; records: {records_path}; "
        f"summary: {out / 'summary.md'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hierbench", description=__doc__.splitlines()[0])
    commands = "{list,run,reference,export,report,bench}"
    sub = parser.add_subparsers(dest="command", required=True, metavar=commands)
    sub.add_parser("list", help="methods and datasets with their parameters").set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run one method on one dataset; append a record to --out")
    run.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    run.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    run.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset parameter")
    run.add_argument("--method-param", action="append", metavar="KEY=VALUE", help="method parameter")
    run.add_argument("--seed", type=int, default=0, help="seed of the run (data seed: --data-param seed=S)")
    run.add_argument("--steps", type=int, default=10_000)
    run.add_argument("--eval-draws", type=int, default=1000, help="draws of q per float64 ELBO estimate")
    run.add_argument("--checkpoints", type=int, default=20, help="trace points (timed chunks)")
    run.add_argument("--out", help="records file (JSON lines), appended")
    run.add_argument(
        "--references",
        default="results/references",
        help="reference store: accuracy vs an accepted reference; MCMC runs are stored here ('none': off)",
    )
    run.set_defaults(func=cmd_run)

    ref = sub.add_parser("reference", help="build (or load) the gated NUTS reference of a dataset")
    ref.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    ref.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset parameter")
    ref.add_argument("--method-param", action="append", metavar="KEY=VALUE", help="nuts parameter")
    ref.add_argument("--seed", type=int, default=0, help="seed of the NUTS run")
    ref.add_argument("--summary", metavar="FILE.csv", help="write name, mean, sd, mcse_mean per coordinate")
    ref.add_argument("--references", default="results/references", help="reference store folder")
    ref.add_argument("--rebuild", action="store_true", help="rerun NUTS even if a valid reference is stored")
    ref.set_defaults(func=cmd_reference)

    exp = sub.add_parser("export", help="write a dataset as arrays x, y, group to an .npz")
    exp.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    exp.add_argument("--data-param", action="append", metavar="KEY=VALUE")
    exp.add_argument("--seed", type=int, default=None, help="data seed (same as --data-param seed=S)")
    exp.add_argument("--out", help="output .npz")
    exp.set_defaults(func=cmd_export)

    rep = sub.add_parser("report", help="tables (md, csv) and figures from records")
    rep.add_argument("records", nargs="+", help="records files (JSON lines)")
    rep.add_argument("--out", required=True, help="output folder")
    rep.set_defaults(func=cmd_report)

    bench = sub.add_parser("bench", help="the default benchmark (what `make bench` runs)")
    bench.add_argument("--out", default="results/bench")
    bench.add_argument(
        "--plan",
        choices=("default", "accuracy"),
        default="default",
        help="default: five families on hier-linear at --sizes; accuracy: every VI method on every dataset",
    )
    bench.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="numbers of groups N")
    bench.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ParamError as err:
        print(f"hierbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
