"""The hierbench command line: one subcommand per task (`hierbench CMD --help` for each).

Exit codes: 0 success, 1 a run that did not finish ``ok`` (regress: a regression), 2 bad input
(unknown name, bad value, missing or stale baseline), with a message listing the valid choices.
``sweep`` exits 1 when a cell of the experiment has only error records, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hierbench._io import REFERENCES_DIR, REPO_ROOT, atomic_write_text, check_writable
from hierbench.datasets import DATASETS
from hierbench.datasets.base import ParamError
from hierbench.datasets.export import export
from hierbench.methods import METHODS
from hierbench.records import append_record, error_line, read_records
from hierbench.registry import build_model, describe, parameters, parse_params


def _params_line(kind: str, factory) -> str:
    return ", ".join(f"{k}={v}" for k, v in parameters(kind, factory).items())


def cmd_list(args: argparse.Namespace) -> int:
    w = max(16, *(len(name) for name in [*DATASETS, *METHODS]))
    print("Datasets (--dataset NAME --data-param key=value):")
    for name, factory in DATASETS.items():
        print(f"  {name:{w}s} {describe(factory)}\n  {'':{w}s} params: {_params_line('dataset', factory)}")
    print("\nMethods (--method NAME --method-param key=value):")
    for name, factory in METHODS.items():
        print(f"  {name:{w}s} {describe(factory)}\n  {'':{w}s} params: {_params_line('method', factory)}")
        reason = getattr(factory, "unavailable", lambda: None)()  # a backend this machine lacks
        if reason:
            print(f"  {'':{w}s} UNAVAILABLE here: {reason}")
        note = getattr(factory, "note", lambda: None)()  # how it runs here (e.g. which Stan backend)
        if note:
            print(f"  {'':{w}s} note: {note}")
    return 0


def _check_out(path: str | None, suffix: str) -> Path:
    """The ``--out`` file, refused at once (exit 2) when missing or not writable: before any work."""
    if not path:
        raise ParamError(f"--out FILE{suffix} is required")
    return check_writable(path)


def cmd_run(args: argparse.Namespace) -> int:
    from hierbench.harness import run_one
    from hierbench.harness.one import METHOD_STEPS

    out = _check_out(args.out, ".jsonl")
    # bad input is an exit-2 message before any work (run_one's check_run, raise_param_errors), not a record
    record = run_one(
        args.method,
        args.dataset,
        _pairs(args.data_param),
        _pairs(args.method_param),
        seed=args.seed,
        steps=METHOD_STEPS if args.steps is None else args.steps,
        eval_draws=args.eval_draws,
        checkpoints=args.checkpoints,
        raise_param_errors=True,
        references=_references(args.references),
        backend=args.backend,
        backend_options=_backend_options(args),
        budget_s=args.budget_s,
        save_reference=args.save_reference,
        tune=args.tune,
    )
    append_record(out, record)
    _print_result(record, out)
    if record.get("accuracy") is None and str(record.get("reference", "")).startswith("no reference stored"):
        print(
            f"hierbench run: no accuracy scores: {record['reference']} (run from the hierbench checkout, "
            "or give --references DIR)",
            file=sys.stderr,
        )
    # an MCMC run whose gate failed is not a usable result either
    return 0 if record["status"] == "ok" and record.get("gate_passed") is not False else 1


def cmd_reference(args: argparse.Namespace) -> int:
    from hierbench import reference as refstore
    from hierbench.methods import nuts

    method_params = refstore.REFERENCE_SETTINGS.get(args.dataset, {}) | parse_params(
        "method", "nuts", args.method_param
    )
    model = build_model(args.dataset, parse_params("dataset", args.dataset, args.data_param))
    if args.seed < 0:
        raise ParamError(f"--seed must be >= 0, got {args.seed}")
    if args.skip_exact and model.exact is not None:
        print(f"{args.dataset}: exact posterior, no sampling needed (drop --skip-exact to run NUTS anyway)")
        return 0
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
        atomic_write_text(summary, ref.summary().to_csv(index=False, float_format="%.6g"))
        print(f"summary ({len(ref.natural_names)} coordinates) -> {summary}")
    if not ref.accepted:
        failed = "; ".join(ref.failed_checks)
        print(f"hierbench reference: refused as ground truth: {failed}", file=sys.stderr)
        return 1
    return 0


def cmd_references(args: argparse.Namespace) -> int:
    from hierbench import reference as refstore

    if args.jobs is not None and args.jobs < 1:
        raise ParamError(f"--jobs must be >= 1, got {args.jobs}")
    failed = refstore.build_all(Path(args.references), jobs=args.jobs, rebuild=args.rebuild)
    return 1 if failed else 0


def _backend_options(args: argparse.Namespace) -> dict | None:
    """``run_one``'s backend_options from ``--torch-compile``, ``--threads`` and ``--device``."""
    options = {"compile": args.torch_compile, "threads": args.threads, "device": args.device}
    given = {k: v for k, v in options.items() if v not in (None, False)}
    if args.backend != "torch":
        if given:
            raise ParamError("--torch-compile, --threads and --device need --backend torch")
        return None
    if args.threads is not None and args.threads < 1:
        raise ParamError(f"--threads must be >= 1, got {args.threads}")
    return given


def _pairs(pairs: list[str] | None) -> dict[str, str]:
    """``--data-param k=v`` strings as a dict; a key given twice is refused."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"parameter {pair!r} must be written key=value")
        if key.strip() in out:
            raise ParamError(f"parameter {key.strip()!r} is given twice")
        out[key.strip()] = value.strip()
    return out


def _print_result(rec: dict, out: Path | None = None) -> None:
    backend = f" [{rec['backend']}]" if rec.get("backend", "jax") != "jax" else ""
    parts = [f"{rec['method']} on {rec['dataset']} (N={rec.get('num_groups')}){backend}: {rec['status']}"]
    ok = rec["status"] == "ok"  # a diverged run's last scores stay in its record, not in this line
    if not ok and error_line(rec):
        parts.append(error_line(rec))
    if ok and rec.get("elbo") is not None:
        parts.append(f"ELBO {rec['elbo']:.3f} ± {rec['elbo_se']:.3f}")
    if ok and rec.get("kl") is not None:
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
    tuning = rec.get("tuning")
    if tuning:
        parts.append(
            f"tuned {tuning['param']}={tuning['chosen']:g} of {len(tuning['grid'])} "
            f"(the grid: {tuning['total_steps']} steps in {tuning['total_wall_s']:.2f}s "
            f"+{tuning['total_compile_s']:.2f}s compile)"
        )
    if rec.get("error"):
        parts.append(rec["error"])
    print("; ".join(parts) + (f" -> {out}" if out else ""))


def cmd_export(args: argparse.Namespace) -> int:
    out = _check_out(args.out, ".npz")
    params = parse_params("dataset", args.dataset, args.data_param)
    if args.seed is not None:
        params["seed"] = args.seed
    model = build_model(args.dataset, params)
    paths = export(model, args.dataset, out)
    print(f"wrote {out}: {model.num_obs} observations in {model.num_groups} groups")
    if "stan_json" in paths:
        print(f"wrote {paths['stan_json']}: the data of {paths['stan']} (CmdStan JSON)")
    else:
        print(f"{args.dataset} has no Stan program: no Stan data written")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hierbench.reports.report import write_report

    missing = [f for f in args.records if not Path(f).is_file()]
    if missing:
        raise ParamError(f"no such records file: {', '.join(missing)}")
    check_writable(args.out, folder=True)
    records = read_records(args.records, warn=False)  # validated; bad lines are counted, said below
    if records.skipped:
        print(f"warning: skipped {len(records.skipped)} unreadable record line(s):", file=sys.stderr)
        for file, line, why in records.skipped:
            print(f"  {file}:{line}: {why}", file=sys.stderr)
    if not records:
        raise ParamError(
            f"the records files hold no readable record ({len(records.skipped)} line(s) skipped)"
        )
    paths = write_report(records, args.out, sources=args.records)  # all outputs or none
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"{len(records)} record(s) reported; {len(records.skipped)} unreadable line(s) skipped")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hierbench.bench import run_bench

    sizes = tuple(args.sizes) if args.sizes else None
    check_writable(args.out, folder=True)
    return run_bench(args.plan, args.out, sizes, jobs=args.jobs, progress=args.progress)


def cmd_peers(args: argparse.Namespace) -> int:
    from hierbench.peers import run_peers

    check_writable(args.out, folder=True)
    return run_peers(
        args.out, quick=args.quick, report_only=args.report_only, progress=args.progress, fresh=args.fresh
    )


def cmd_torch_bench(args: argparse.Namespace) -> int:
    from hierbench.torch_bench import run_torch_bench

    check_writable(args.out, folder=True)
    return run_torch_bench(
        args.out,
        sizes=tuple(args.sizes) if args.sizes else None,
        families=tuple(args.families) if args.families else None,
        engines=tuple(args.engines) if args.engines else None,
        steps=args.steps,
        device=args.device,
        report_only=args.report_only,
        progress=args.progress,
    )


def cmd_baseline(args: argparse.Namespace) -> int:
    from hierbench.suites.regress import baseline_update

    return baseline_update(args.suite, args.repeats, args.out, _store(args.references))


def cmd_regress(args: argparse.Namespace) -> int:
    from hierbench.suites.regress import regress

    return regress(args.suite, args.repeats, args.baseline, _store(args.references))


def _references(path: str) -> str | None:
    """The reference store to read: ``none`` for none; the default ``results/references`` is relative to
    the current folder, and falls back to the checkout's own store when run from elsewhere."""
    if path in ("", "none"):
        return None
    if path == os.fspath(REFERENCES_DIR) and not Path(path).is_dir() and (REPO_ROOT / path).is_dir():
        return os.fspath(REPO_ROOT / path)
    return path


def _store(path: str) -> str | None:
    return None if path in ("", "none") else path


def cmd_sweep(args: argparse.Namespace) -> int:
    from hierbench.suites.sweep import run_sweep

    try:
        result = run_sweep(
            args.experiment,
            args.out,
            quick=args.quick,
            jobs=args.jobs,
            executor=args.executor,
            scheduler=args.scheduler,
            retry_failed=args.retry_failed,
            dry_run=args.dry_run,
            references=_references(args.references),
            compilation_cache=args.compilation_cache,
            progress=args.progress,
            isolate=args.isolate,
            stall_s=args.stall_s,
        )
    except KeyboardInterrupt:
        print("hierbench sweep: interrupted; finished cells are recorded, rerun to resume", file=sys.stderr)
        return 130
    print(result.summary())
    if result.failed:
        print(f"{len(result.failed)} cell(s) failed; --retry-failed runs them again", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_scale(args: argparse.Namespace) -> int:
    from hierbench.scale import run_scale

    try:
        return run_scale(
            args.out,
            quick=args.quick,
            jobs=args.jobs,
            retry_failed=args.retry_failed,
            report_only=args.report_only,
            progress=args.progress,
        )
    except KeyboardInterrupt:
        print("hierbench scale: interrupted; finished cells are recorded, rerun to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hierbench", description=__doc__.splitlines()[0])
    commands = (
        "{list,run,reference,references,export,report,figures,bench,peers,torch-bench,baseline,regress,"
        "sweep,scale}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar=commands)
    sub.add_parser("list", help="methods and datasets with their parameters").set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run one method on one dataset; append a record to --out")
    run.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    run.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    run.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset parameter")
    run.add_argument("--method-param", action="append", metavar="KEY=VALUE", help="method parameter")
    run.add_argument("--seed", type=int, default=0, help="seed of the run (data seed: --data-param seed=S)")
    run.add_argument(
        "--steps",
        type=int,
        help="optimization steps (default: the method's own, 10,000; amortized: 30,000)",
    )
    run.add_argument(
        "--budget-s",
        type=float,
        help="seconds of optimization: min(steps, budget x measured steps/s) steps (VI, jax backend)",
    )
    run.add_argument("--eval-draws", type=int, default=1000, help="draws of q per float64 ELBO estimate")
    run.add_argument("--checkpoints", type=int, default=20, help="trace points (timed chunks)")
    run.add_argument("--out", help="records file (JSON lines), appended")
    run.add_argument(
        "--references",
        default="results/references",
        help="reference store read for accuracy scores ('none': off)",
    )
    run.add_argument(
        "--tune",
        choices=("lr",),
        help="tune the step size: one run per value of 0.1/4^k, k=0..4, the best by a held-apart ELBO "
        "(the record keeps the grid and its total cost)",
    )
    run.add_argument(
        "--save-reference",
        metavar="DIR",
        help="MCMC methods: store the run's gated reference here (default: .cache/hierbench/references; "
        "`hierbench reference` builds the committed store)",
    )
    run.add_argument(
        "--backend", choices=("jax", "torch"), default="jax", help="train with JAX (jit) or the PyTorch twin"
    )
    run.add_argument("--torch-compile", action="store_true", help="torch: compile the loss (else eager)")
    run.add_argument("--threads", type=int, help="torch: torch.set_num_threads (default: physical cores)")
    run.add_argument("--device", help="torch: a torch device, e.g. cpu (default) or cuda")
    run.set_defaults(func=cmd_run)

    ref = sub.add_parser("reference", help="build (or load) the gated NUTS reference of a dataset")
    ref.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    ref.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset parameter")
    ref.add_argument("--method-param", action="append", metavar="KEY=VALUE", help="nuts parameter")
    ref.add_argument("--seed", type=int, default=0, help="seed of the NUTS run")
    ref.add_argument("--summary", metavar="FILE.csv", help="write name, mean, sd, mcse_mean per coordinate")
    ref.add_argument("--references", default="results/references", help="reference store folder")
    ref.add_argument("--rebuild", action="store_true", help="rerun NUTS even if a valid reference is stored")
    ref.add_argument("--skip-exact", action="store_true", help="do nothing where the posterior is exact")
    ref.set_defaults(func=cmd_reference)

    refs = sub.add_parser("references", help="every dataset's reference at its default size, longest first")
    refs.add_argument("--references", default="results/references", help="reference store folder")
    refs.add_argument("--jobs", type=int, default=1, help="parallel builds, each pinned to cores/jobs cores")
    refs.add_argument("--rebuild", action="store_true", help="rerun NUTS even if a valid reference is stored")
    refs.set_defaults(func=cmd_references)

    exp = sub.add_parser(
        "export",
        help="write a dataset as flat rows (.npz) and its Stan data (.stan.json, beside the program)",
    )
    exp.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    exp.add_argument("--data-param", action="append", metavar="KEY=VALUE")
    exp.add_argument("--seed", type=int, default=None, help="data seed (same as --data-param seed=S)")
    exp.add_argument("--out", help="output .npz")
    exp.set_defaults(func=cmd_export)

    rep = sub.add_parser("report", help="tables (md, csv) and figures from records")
    rep.add_argument("records", nargs="+", help="records files (JSON lines)")
    rep.add_argument("--out", required=True, help="output folder")
    rep.set_defaults(func=cmd_report)

    from hierbench.reports.paper import command as figures

    fig = sub.add_parser(
        "figures", help="the paper's figures and tables from the sweeps' records (make figures)"
    )
    figures.add_arguments(fig)
    fig.set_defaults(func=figures.run)

    bench = sub.add_parser("bench", help="the default benchmark (what `make bench` runs)")
    bench.add_argument("--out", default="results/bench")
    bench.add_argument(
        "--plan",
        choices=("default", "accuracy"),
        default="default",
        help="default: five families on hier-linear at --sizes; accuracy: every VI method on every dataset",
    )
    bench.add_argument(
        "--sizes", type=int, nargs="+", help="only these numbers of groups N of the plan (default: all)"
    )
    bench.add_argument("--jobs", type=int, default=1, help="worker processes (0: run in this process)")
    bench.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    bench.set_defaults(func=cmd_bench)

    peers = sub.add_parser(
        "peers", help="ours vs every peer, one table per model and family (what `make peers` runs)"
    )
    peers.add_argument("--out", default="results/peers", help="folder for records.jsonl and summary.md")
    peers.add_argument("--quick", action="store_true", help="N=10, 200 steps: a smoke test in seconds")
    peers.add_argument("--report-only", action="store_true", help="re-tabulate the existing records")
    peers.add_argument(
        "--fresh", action="store_true", help="start over (the default resumes a stopped comparison)"
    )
    peers.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    peers.set_defaults(func=cmd_peers)

    from hierbench.torch_bench import ENGINES

    tbench = sub.add_parser("torch-bench", help="JAX jit vs torch eager vs torch.compile (make torch-bench)")
    tbench.add_argument("--out", default="results/torch")
    tbench.add_argument("--sizes", type=int, nargs="+", help="numbers of groups N (default: all)")
    tbench.add_argument(
        "--families", nargs="+", help="run labels of experiments/torch-bench.toml (default: all)"
    )
    tbench.add_argument("--engines", nargs="+", choices=list(ENGINES), help="default: all")
    tbench.add_argument("--steps", type=int, help="one budget for every N (default: the experiment's per N)")
    tbench.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="torch's device")
    tbench.add_argument(
        "--report-only", action="store_true", help="rebuild the table and figure from records"
    )
    tbench.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    tbench.set_defaults(func=cmd_torch_bench)

    suites = "quick (the gate) or tiny (tests): experiments/regress-SUITE.toml"
    base = sub.add_parser("baseline", help="the regression gate's baseline (results/baselines/)")
    base_sub = base.add_subparsers(dest="action", required=True, metavar="{update}")
    upd = base_sub.add_parser("update", help="run the suite with the baseline seeds; write its baseline")
    upd.add_argument("--suite", default="quick", help=suites)
    upd.add_argument("--repeats", type=int, default=5, help="seeds per entry (2..100)")
    upd.add_argument("--out", help="baseline file (default results/baselines/SUITE.json)")
    upd.add_argument("--references", default="results/references", help="reference store folder")
    upd.set_defaults(func=cmd_baseline)

    reg = sub.add_parser("regress", help="rerun the quick suite; exit 1 on a regression beyond noise")
    reg.add_argument("--suite", default="quick", help=suites)
    reg.add_argument("--repeats", type=int, default=3, help="seeds per entry (2..100)")
    reg.add_argument("--baseline", help="baseline file (default results/baselines/SUITE.json)")
    reg.add_argument("--references", default="results/references", help="reference store folder")
    reg.set_defaults(func=cmd_regress)

    from hierbench.suites.experiment import available_experiments

    swp = sub.add_parser("sweep", help="run an experiment file's grid; resumable, survives failed cells")
    swp.add_argument(
        "experiment",
        help=f"a TOML file, or one of benchmarks/experiments/: {', '.join(available_experiments())}",
    )
    swp.add_argument("--out", help="records file (default results/sweeps/EXPERIMENT[-quick]/records.jsonl)")
    swp.add_argument("--jobs", type=int, default=1, help="local worker processes (0: run in this process)")
    swp.add_argument("--executor", choices=("local", "dask"), default="local", help="where cells run")
    swp.add_argument("--scheduler", help="Dask scheduler address for --executor dask, e.g. tcp://host:8786")
    swp.add_argument("--quick", action="store_true", help="the experiment's [quick] sizes (minutes)")
    swp.add_argument("--retry-failed", action="store_true", help="rerun cells whose only records are errors")
    swp.add_argument("--dry-run", action="store_true", help="validate and list the cells; run nothing")
    swp.add_argument("--references", default="results/references", help="reference store ('none': off)")
    swp.add_argument(
        "--compilation-cache",
        action="store_true",
        help="JAX's persistent compilation cache: same-shaped cells compile once (compile_s: load time)",
    )
    swp.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a fresh worker process per cell (default: the experiment's [experiment] isolate)",
    )
    swp.add_argument(
        "--stall-s",
        type=float,
        help="kill a worker silent this many seconds; its cell is an error (default: the experiment's)",
    )
    swp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    swp.set_defaults(func=cmd_sweep)

    scl = sub.add_parser(
        "scale",
        help="`hierbench sweep scale` (MovieLens-25M-shaped data, never padded) + its summary (make scale)",
    )
    scl.add_argument("--quick", action="store_true", help="the smoke check: 2,000 users, 40 steps (~35 s)")
    scl.add_argument("--out", help="folder (default results/scale; --quick: results/sweeps/scale-quick)")
    scl.add_argument("--jobs", type=int, default=1, help="local worker processes (one fresh per cell)")
    scl.add_argument("--retry-failed", action="store_true", help="rerun cells whose only records are errors")
    scl.add_argument("--report-only", action="store_true", help="rebuild summary.md and scale.png only")
    scl.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    scl.set_defaults(func=cmd_scale)
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
