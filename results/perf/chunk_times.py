"""Mean-field's training step at N = 1000, n = 100 (S = 8), chunk by chunk: 4 runs of 15 chunks of 20
steps, each run compiled afresh, ms a step per chunk.  `python results/perf/chunk_times.py [method]`.
chunk_times.txt has its output before (150babf: one joint draw sliced into θ and z) and after (1cfb62e:
global and local parameter blocks)."""

import sys
import time

import jax

from hierbench.harness.backends import jax_backend
from hierbench.registry import build_model, lookup

jax.config.update("jax_enable_x64", True)
method = sys.argv[1] if len(sys.argv) > 1 else "meanfield"
model = build_model("hier-linear", {"N": 1000, "n": 100, "d": 10})
backend = jax_backend.make()
for rep in range(4):
    runner = backend.runner(model, lookup("method", method)(model, steps=2000), 0, 20)
    runner.compile()
    times = []
    for c in range(15):
        t = time.perf_counter()
        runner.run_chunk(c)
        runner.sync()
        times.append((time.perf_counter() - t) / 20 * 1e3)
    print(method, rep, "ms/step per chunk:", " ".join(f"{x:.1f}" for x in times), flush=True)
