"""The store's minibatch step against the number of size strata (the profile behind ``max_strata``).

Run: ``.venv/bin/python -m hierbench.perf.strata_step [--num-users 162541] [--methods
amortized-potential,branch] [--max-strata 3,16]``.  For each setting it builds the registered method's
step on ``movielens-synth`` with its ratings kept in a store (``layout=store``: rows gathered per step,
:mod:`hierbench.methods.store_batches`), as a run of ``experiments/scale.toml`` builds it, compiles a
10-step ``lax.scan`` chunk (the harness's own loop shape) and prints one JSON line: strata, padded
rows a step, compile seconds and the best of 3 timed chunks per step.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from hierbench.datasets import movielens_synth as synth
from hierbench.methods import METHODS
from hierbench.registry import build_model

CHUNK = 10
# --methods names: the registered method and its parameters
VARIANTS = {
    "amortized-potential": ("amortized", {"head": "potential"}),
    "amortized-moments": ("amortized", {"head": "moments"}),
    "branch": ("branch", {}),
}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring.  Prints one JSON line per (method, max_strata); exit 0."""
    parser = argparse.ArgumentParser(
        prog="python -m hierbench.perf.strata_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--num-users", type=int, default=synth.ML25M_USERS)
    parser.add_argument("--methods", default="amortized-potential", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--max-strata", default="3,16", help="comma-separated settings")
    parser.add_argument("--batch-users", type=int, default=256)
    args = parser.parse_args(argv)
    model = build_model("movielens-synth", {"num_users": args.num_users, "layout": "store"})
    for name in args.methods.split(","):
        method_name, params = VARIANTS[name]
        for max_strata in (int(m) for m in args.max_strata.split(",")):
            method = METHODS[method_name](
                model, batch_groups=args.batch_users, max_strata=max_strata, steps=10_000, **params
            )
            state = method.init(jax.random.key(0))
            data = jax.tree.map(jnp.asarray, method.batches.arrays(method.config["dtype"]))
            strata, step = method.batches.plan, method.step

            def run_chunk(key, state, data, step=step):
                return jax.lax.scan(lambda st, k: step(k, st, data), state, jax.random.split(key, CHUNK))

            t0 = time.perf_counter()
            compiled = jax.jit(run_chunk).lower(jax.random.key(1), state, data).compile()
            compile_s = time.perf_counter() - t0
            jax.block_until_ready(compiled(jax.random.key(1), state, data))  # warm
            times = []
            for r in range(3):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(jax.random.key(2 + r), state, data))
                times.append((time.perf_counter() - t0) / CHUNK)
            line = {
                "method": name,
                "max_strata": max_strata,
                "strata": len(strata),
                "rows_padded": sum(s.alloc * s.width for s in strata),
                "compile_s": round(compile_s, 1),
                "ms_per_step": round(1e3 * min(times), 1),
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
