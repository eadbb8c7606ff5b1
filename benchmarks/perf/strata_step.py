"""The scale runner's training step against the number of size strata (the profile behind ``--max-strata``).

Run: ``.venv/bin/python -m hierbench.perf.strata_step [--num-users 162541] [--methods
amortized-potential] [--max-strata 3,16]``.  For each setting it builds the runner's step
(:func:`hierbench.scale.step_setup`) on the ``movielens-synth``
store, compiles a 10-step ``lax.scan`` chunk (the harness's own loop shape) and prints one JSON line:
strata, padded rows a step, compile seconds and the best of 3 timed chunks per step.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from hierbench import scale
from hierbench.datasets import movielens_synth as synth

CHUNK = 10


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring.  Prints one JSON line per (method, max_strata); exit 0."""
    parser = argparse.ArgumentParser(
        prog="python -m hierbench.perf.strata_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--num-users", type=int, default=synth.ML25M_USERS)
    parser.add_argument("--methods", default="amortized-potential")
    parser.add_argument("--max-strata", default="3,16", help="comma-separated settings")
    parser.add_argument("--batch-users", type=int, default=256)
    args = parser.parse_args(argv)
    cfg = scale.ScaleConfig(num_users=args.num_users, methods=("amortized-potential",))
    store, dataset, data_params = scale.load_store(cfg)
    model = scale.schema_model(store, dataset, data_params)
    for name in args.methods.split(","):
        for max_strata in (int(m) for m in args.max_strata.split(",")):
            step, state, data, strata = scale.step_setup(name, store, model, args.batch_users, max_strata)

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
