"""Time 88,080 float32 standard normals a step (mean-field N=1000, n=20, S=8) by PRNG impl, in a scan of 10."""
import time, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
SHAPES = [(8, 10), (8, 11000)]

def draw_threefry(key):
    ks = jax.random.split(key, 2)
    return [jax.random.normal(k, s, jnp.float32) for k, s in zip(ks, SHAPES)]

def make_impl(impl):
    def draw(key):
        k = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl=impl)
        ks = jax.random.split(k, 2)
        return [jax.random.normal(kk, s, jnp.float32) for kk, s in zip(ks, SHAPES)]
    return draw

def bench(draw):
    @jax.jit
    def run(key):
        def body(c, k):
            a, b = draw(k)
            return c + a.sum() + b.sum(), None
        return jax.lax.scan(body, jnp.zeros((), jnp.float32), jax.random.split(key, 10))[0]
    run(jax.random.key(0)).block_until_ready()
    ts = []
    for i in range(30):
        t = time.perf_counter(); run(jax.random.key(i)).block_until_ready(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts) // 2] / 10 * 1e3

for name, d in [("threefry", draw_threefry), ("rbg", make_impl("rbg")), ("unsafe_rbg", make_impl("unsafe_rbg"))]:
    print(f"{name:10s} {bench(d):.3f} ms/step", flush=True)

def draw_bits(key):
    ks = jax.random.split(key, 2)
    return [jax.random.bits(k, s, jnp.uint32).astype(jnp.float32) for k, s in zip(ks, SHAPES)]

def draw_uniform(key):
    ks = jax.random.split(key, 2)
    return [jax.random.uniform(k, s, jnp.float32) for k, s in zip(ks, SHAPES)]

def draw_boxmuller(key):
    out = []
    for k, s in zip(jax.random.split(key, 2), SHAPES):
        half = (s[0], (s[1] + 1) // 2)
        u = jax.random.uniform(k, (2,) + half, jnp.float32, minval=jnp.finfo(jnp.float32).tiny)
        r = jnp.sqrt(-2 * jnp.log(u[0])); a = 2 * jnp.pi * u[1]
        out.append(jnp.concatenate([r * jnp.cos(a), r * jnp.sin(a)], -1)[:, : s[1]])
    return out

for name, d in [("bits", draw_bits), ("uniform", draw_uniform), ("boxmuller", draw_boxmuller)]:
    print(f"{name:10s} {bench(d):.3f} ms/step", flush=True)
