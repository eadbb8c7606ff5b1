"""Reproduction C of the jaxlib 0.10 deadlock (results/jaxlib/README.md), seconds to run when it passes.

K independent batched factorizations in one compiled program: each a Cholesky of B small SPD matrices
(d x d, the shape of branch's and the moments head's per-group factors) and a triangular solve with it.
jaxlib 0.10 splits each batched LAPACK call over XLA:CPU's worker pool and waits for its chunks; when
as many independent calls as the pool has threads run at once, every thread waits and none is left to
run a chunk.  ``python repro_c.py lapack`` uses jnp.linalg.cholesky and solve_triangular (LAPACK);
``python repro_c.py jnp`` the same factorization written in element-wise jnp ops (no LAPACK call).
REPRO_K sets K (default 8).
"""

import os
import sys
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
K = int(os.environ.get("REPRO_K", "8"))
B, D = 1024, 10
IMPL = sys.argv[1] if len(sys.argv) > 1 else "lapack"


def cholesky_jnp(a):
    """Column-by-column Cholesky of a batch of small SPD matrices, element-wise ops only."""
    n = a.shape[-1]
    chol = jnp.zeros_like(a)
    for j in range(n):
        row = chol[..., j, :j]
        ljj = jnp.sqrt(a[..., j, j] - jnp.sum(row * row, -1))
        col = (a[..., j + 1 :, j] - jnp.einsum("...ik,...k->...i", chol[..., j + 1 :, :j], row)) / ljj[..., None]
        chol = chol.at[..., j, j].set(ljj).at[..., j + 1 :, j].set(col)
    return chol


def solve_lower_jnp(chol, b):
    """Forward substitution L x = b for a batch of lower-triangular L, element-wise ops only."""
    n = chol.shape[-1]
    x = jnp.zeros_like(b)
    for i in range(n):
        x = x.at[..., i].set((b[..., i] - jnp.sum(chol[..., i, :i] * x[..., :i], -1)) / chol[..., i, i])
    return x


if IMPL == "lapack":
    chol_fn = jnp.linalg.cholesky

    def solve_fn(c, b):
        return jax.scipy.linalg.solve_triangular(c, b[..., None], lower=True)[..., 0]
else:
    chol_fn, solve_fn = cholesky_jnp, solve_lower_jnp

x = jax.random.normal(jax.random.key(0), (K, B, D, D))
a = x @ jnp.swapaxes(x, -1, -2) + D * jnp.eye(D)
rhs = jax.random.normal(jax.random.key(1), (K, B, D))


def program(a, rhs, t):
    total = 0.0
    for k in range(K):  # K independent calls: nothing orders them, so XLA may run them at once
        c = chol_fn(a[k] * (1.0 + t * k))
        total = total + jnp.sum(solve_fn(c, rhs[k]))
    return total


compiled = jax.jit(program).lower(a, rhs, 0.1).compile()
t0 = time.perf_counter()
out = jax.block_until_ready(compiled(a, rhs, 0.1))
print(f"ok {IMPL} K={K} jax {jax.__version__}: {time.perf_counter() - t0:.3f} s, {float(out):.6g}")
