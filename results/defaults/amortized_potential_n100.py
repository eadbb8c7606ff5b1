"""One amortized run on hier-linear (N groups, n = 20, d = 10, data seed 0) at the method's defaults but
the parameters given; prints a JSON line with KL/N (exact).

    python results/defaults/amortized_potential_n100.py SEED 'PARAMS' [STEPS] [N]

PARAMS is a JSON object of method parameters over {"head": "potential"} (e.g. '{"batch_groups": 64}',
'{"head": "moments"}'); STEPS defaults to 10,000 (the harness default) and N to 100.
"""

import json
import sys
import time

from hierbench.harness import run_one

seed = int(sys.argv[1])
mp = json.loads(sys.argv[2])
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
groups = int(sys.argv[4]) if len(sys.argv) > 4 else 100
t = time.time()
r = run_one(
    "amortized",
    "hier-linear",
    {"N": groups, "n": 20, "d": 10, "seed": 0},
    {"head": "potential"} | mp,
    seed=seed,
    steps=steps,
    checkpoints=1,
)
line = {
    "seed": seed,
    "N": groups,
    "mp": mp,
    "steps": steps,
    "status": r["status"],
    "kl_per_N": r["kl"] / groups,
}
print(json.dumps(line | {"wall": round(time.time() - t)}), flush=True)
