import json, sys, time
from hierbench.harness import run_one
seed = int(sys.argv[1]); mp = json.loads(sys.argv[2])
t = time.time()
r = run_one("amortized", "hier-linear", {"N": 100, "n": 20, "d": 10, "seed": 0}, {"head": "potential"} | mp, seed=seed, steps=10000, checkpoints=1)
print(json.dumps({"seed": seed, "mp": mp, "status": r["status"], "kl_per_N": r["kl"] / 100, "wall": round(time.time() - t)}), flush=True)
