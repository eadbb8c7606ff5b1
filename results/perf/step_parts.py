import sys, time, jax, jax.numpy as jnp, optax
jax.config.update("jax_enable_x64", True)
from hierbench.methods import meanfield
from hierbench.methods.objective import neg_elbo
from hierbench.methods.batches import FullData
from hierbench.methods.vi import normals
from hierbench.registry import build_model
N, n, d, S = 1000, 20, 10, 8
model = build_model("hier-linear", {"N": N, "n": n, "d": d, "seed": 0})
fam = meanfield.build_family(model)
b = FullData(model)
data = jax.tree.map(jnp.asarray, b.arrays("float64"))
params = jax.tree.map(jnp.asarray, fam.init_params(jax.random.key(0)))
opt = optax.adam(optax.cosine_decay_schedule(1e-2, 1000, alpha=1e-3))
ost = opt.init(params)
R = 10
keys = jax.random.split(jax.random.key(1), R)
def timeit(name, fn, *args):
    c = jax.jit(fn).lower(*args).compile(); jax.block_until_ready(c(*args)); ts = []
    t_end = time.perf_counter() + 1.5
    while time.perf_counter() < t_end or len(ts) < 5:
        t0 = time.perf_counter(); jax.block_until_ready(c(*args)); ts.append(time.perf_counter() - t0)
    ts.sort(); print(f"{name:50s} {1e3*ts[len(ts)//2]/R:8.3f} ms/step", flush=True)
eps0 = normals(keys[0], fam.noise_shapes(S, N), jnp.float64)
def loss(p, eps, stl=True):
    picks = b.picks(data, [])
    return neg_elbo(model, fam, stl, p, picks, [eps])
def run_fixed(stl):
    def f(keys, p, eps):
        def body(p, k):
            l, g = jax.value_and_grad(lambda q: loss(q, eps, stl))(p)
            return jax.tree.map(lambda a, b: a - 1e-6 * b, p, g), l
        return jax.lax.scan(body, p, keys)[0]
    return f
timeit("value_and_grad neg_elbo, fixed eps, STL", run_fixed(True), keys, params, eps0)
timeit("value_and_grad neg_elbo, fixed eps, no STL", run_fixed(False), keys, params, eps0)
def run_rng(keys, p):
    def body(p, k):
        eps = normals(k, fam.noise_shapes(S, N), jnp.float64)
        l, g = jax.value_and_grad(lambda q: loss(q, eps))(p)
        return jax.tree.map(lambda a, b: a - 1e-6 * b, p, g), l
    return jax.lax.scan(body, p, keys)[0]
timeit("+ rng", run_rng, keys, params)
def run_adam(keys, p, o):
    def body(c, k):
        p, o = c
        eps = normals(k, fam.noise_shapes(S, N), jnp.float64)
        l, g = jax.value_and_grad(lambda q: loss(q, eps))(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), l
    return jax.lax.scan(body, (p, o), keys)[0]
timeit("+ rng + adam (= the step)", run_adam, keys, params, ost)
def run_adam_only(keys, p, o):
    def body(c, k):
        p, o = c
        g = jax.tree.map(lambda a: a * 1e-3, p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), 0.0
    return jax.lax.scan(body, (p, o), keys)[0]
timeit("adam only", run_adam_only, keys, params, ost)
def run_barrier(keys, p, o):
    def body(c, k):
        p, o = c
        eps = jax.lax.optimization_barrier(normals(k, fam.noise_shapes(S, N), jnp.float64))
        l, g = jax.value_and_grad(lambda q: loss(q, eps))(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), l
    return jax.lax.scan(body, (p, o), keys)[0]
timeit("step with optimization_barrier(eps)", run_barrier, keys, params, ost)
def run_f32(keys, p, o):
    def body(c, k):
        p, o = c
        eps = jax.lax.optimization_barrier([e.astype(jnp.float64) for e in normals(k, fam.noise_shapes(S, N), jnp.float32)])
        l, g = jax.value_and_grad(lambda q: loss(q, eps))(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), l
    return jax.lax.scan(body, (p, o), keys)[0]
timeit("step, barrier, float32 normals", run_f32, keys, params, ost)
def rng32(k):
    def body(c, kk):
        return c + sum(e.sum() for e in normals(kk, fam.noise_shapes(S, N), jnp.float32)), None
    return jax.lax.scan(body, 0.0, k)[0]
timeit("rng float32 alone", rng32, keys)
