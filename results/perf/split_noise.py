import time, sys, statistics, jax, jax.numpy as jnp
import hierbench._jax
from hierbench.registry import build_model
from hierbench.methods import METHODS
import hierbench.methods._gaussian as g
def bench(f,*a,n=3):
    jax.block_until_ready(f(*a)); ts=[]
    for _ in range(3):
        t=time.perf_counter()
        for _ in range(n): r=f(*a)
        jax.block_until_ready(r); ts.append((time.perf_counter()-t)/n)
    return min(ts)*1e3/10
orig=g.joint_family
N=int(sys.argv[1]); n=int(sys.argv[2]); meth=sys.argv[3]
model=build_model("hier-linear",{"N":N,"n":n,"d":10,"seed":0})
cs={}
for split in (True, False):
    g.joint_family = (lambda *a, split_noise=False, _s=split: orig(*a, split_noise=_s))
    algo=METHODS[meth](model, steps=1000, num_samples=8)
    data=jax.tree.map(jnp.asarray, algo.batches.arrays("float64")); state=algo.init(jax.random.key(0))
    ks=jax.random.split(jax.random.key(1),10)
    cs[split]=(jax.jit(lambda ks,s,d,algo=algo: jax.lax.scan(lambda s,k: algo.step(k,s,d), s, ks)).lower(ks,state,data).compile(),ks,state,data)
res={True:[],False:[]}
for r in range(8):
    for split in (True, False):
        res[split].append(bench(*cs[split]))
for split in (True, False):
    v=sorted(res[split]); print(meth, N, n, "split" if split else "joint", "median %.2f min %.2f max %.2f" % (statistics.median(v), v[0], v[-1]), flush=True)
