"""NUTS reference sampler (numpyro) on the model's own log density, float64, several chains.

The potential is ``−log_joint(model, θ, z, data)``: the very function the VI methods differentiate,
so the sampler sees exactly the same posterior.  We use numpyro's functional NUTS kernel
(``numpyro.infer.hmc.hmc``: ``init_kernel`` / ``sample_kernel``, with its windowed step-size and mass
adaptation) and own the loop: chains are ``vmap``-ed, warmup and sampling are ``lax.scan``-s, and the
data is an argument of the compiled program, not a constant baked into it.

Chains start from a mean-field VI fit (``init="meanfield"``, default): each chain at its own draw of
q, the inverse mass matrix at q's variances; windowed adaptation then proceeds as in Stan.  This
spares the first adaptation window the tiny step sizes of a badly scaled posterior.  ``init="uniform"``
is Stan's default, Uniform(−2, 2) on every unconstrained coordinate.  XLA's persistent compilation
cache is switched on in a project-local folder (:func:`hierbench._jax.enable_compilation_cache`), so a
rerun does not recompile.

Compilation is timed apart from sampling: chain initialization and a chunk of ``CHUNK`` iterations
of every chain are compiled ahead of time (``compile_s``: tracing + XLA, or a persistent-cache hit);
``sample_s`` is the wall time of the mean-field fit (also reported as ``init_s``) and of calling them
(warmup + sampling; the draws of a chunk straddling the
end of warmup are split).  Vectorized chains advance in lockstep, so an iteration costs the longest
trajectory among the chains.  A progress bar (iterations, mean leapfrog steps, divergences) shows on
a terminal after 2 s.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer.hmc import hmc
from tqdm.auto import tqdm

from hierbench._jax import enable_compilation_cache
from hierbench.datasets.base import (
    HierModel,
    ParamError,
    check_positive_int,
    full_data_log_joint,
    natural_draws,
)
from hierbench.methods.base import Posterior, Sampler

CHUNK = 50  # iterations per compiled call: progress is reported between calls


def _as_jax64(tree: Any) -> Any:
    """numpy pytree -> jax arrays, floating leaves in float64 (integer indices kept)."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64 if np.issubdtype(np.asarray(a).dtype, np.floating) else None),
        tree,
    )


INITS = ("meanfield", "uniform")


def make(
    model: HierModel,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    target_accept: float = 0.9,
    dense_mass: bool = False,
    max_tree_depth: int = 10,
    warmup_tree_depth: int | None = None,
    init: str = "meanfield",
    init_steps: int = 2000,
    init_radius: float = 2.0,
) -> Sampler:
    """NUTS reference sampler (numpyro), float64, several chains, on the model's own log density.

    Parameters
    ----------
    model : HierModel
        The model; the sampler targets p(θ, z | y) in its unconstrained coordinates.
    chains, warmup, draws : int
        Number of chains, warmup (adaptation) iterations and kept draws per chain.
    target_accept : float
        Step-size adaptation target, in (0, 1).
    dense_mass : bool
        Adapt a dense mass matrix (O(D²) memory) instead of a diagonal one.
    max_tree_depth : int
        Maximum NUTS tree depth (at most 2^depth leapfrog steps per draw).
    warmup_tree_depth : int, optional
        A smaller maximum depth during warmup only (numpyro's ``(warmup, sampling)`` depth pair).
        Early adaptation windows run on a poor mass matrix, where NUTS would build its longest
        trajectories; capping them only shortens warmup — the kept draws use ``max_tree_depth`` and
        the gate judges them as usual.  None: ``max_tree_depth`` throughout (Stan's behaviour).
    init : {"meanfield", "uniform"}
        "meanfield": fit mean-field VI (``init_steps`` Adam steps), start each chain at its own draw
        from it and the (inverse) mass matrix at its variances — warmup then adapts as usual, but
        does not spend its first window at tree depth 10 on a badly scaled posterior (Chem97: θ's
        posterior sds ~0.004 next to unit-scale school effects).  "uniform": Stan's default,
        Uniform(−r, r) on every coordinate with an identity mass matrix.
    init_steps : int
        Mean-field steps for ``init="meanfield"``.
    init_radius : float
        r for ``init="uniform"``.
    """
    chains = check_positive_int("chains", chains)
    warmup = check_positive_int("warmup", warmup)
    draws = check_positive_int("draws", draws)
    max_tree_depth = check_positive_int("max_tree_depth", max_tree_depth)
    if warmup_tree_depth is not None:
        warmup_tree_depth = check_positive_int("warmup_tree_depth", warmup_tree_depth)
    init_steps = check_positive_int("init_steps", init_steps)
    if init not in INITS:
        raise ParamError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if not 0.0 < float(target_accept) < 1.0:
        raise ParamError(f"target_accept must be in (0, 1), got {target_accept!r}")
    if not float(init_radius) > 0.0:
        raise ParamError(f"init_radius must be > 0, got {init_radius!r}")
    if dense_mass not in (True, False):
        raise ParamError(f"dense_mass must be true or false, got {dense_mass!r}")
    config: dict[str, Any] = {
        "sampler": "numpyro-nuts",
        "chains": chains,
        "warmup": warmup,
        "draws": draws,
        "target_accept": float(target_accept),
        "dense_mass": bool(dense_mass),
        "max_tree_depth": max_tree_depth,
        "init": init,
        "init_steps": init_steps if init == "meanfield" else None,
        "init_radius": float(init_radius) if init == "uniform" else None,
        "dtype": "float64",
    }
    if warmup_tree_depth is not None:  # only when set, so existing reference keys stay valid
        config["warmup_tree_depth"] = warmup_tree_depth
    G, N, L = model.dim_global, model.num_groups, model.dim_local
    D = G + N * L
    # U(w) = −log p(θ, z, y) at w = (θ, vec z): the joint the VI methods use, on size-bucketed groups
    # where padding is wasteful (cost ∝ observations, not N·n_max).
    joint, packed = full_data_log_joint(model)

    def potential_fn_gen(data):
        return lambda w: -joint(w[:G], w[G:].reshape(N, L), data)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def init_chains(positions: jax.Array, inv_mass: jax.Array, key: jax.Array, data: dict[str, jax.Array]):
        # Eager, one chain at a time: numpyro's functional kernel keeps what init_kernel builds in
        # closures that sample_kernel reuses, so tracing init under jit/vmap would leak tracers.
        states = [
            init_kernel(
                position,
                warmup,
                inverse_mass_matrix=jnp.diag(inv_mass) if config["dense_mass"] else inv_mass,
                dense_mass=config["dense_mass"],
                target_accept_prob=config["target_accept"],
                max_tree_depth=max_tree_depth
                if warmup_tree_depth is None
                else (warmup_tree_depth, max_tree_depth),
                find_heuristic_step_size=True,
                model_args=(data,),
                rng_key=jax.random.key_data(k),  # numpyro wants a raw uint32 key
            )
            for position, k in zip(positions, jax.random.split(key, chains), strict=True)
        ]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    def starting_points(key: jax.Array) -> tuple[jax.Array, jax.Array, float, float]:
        """(positions (C, D), inverse mass (D,), compile_s, run_s) for the chosen ``init``."""
        if init == "uniform":
            r = config["init_radius"]
            return jax.random.uniform(key, (chains, D), jnp.float64, -r, r), jnp.ones(D), 0.0, 0.0
        from hierbench.methods import meanfield  # here: methods/__init__ imports this module

        vi = meanfield.make(model, steps=init_steps)
        data = {k: jnp.asarray(v, jnp.float64) for k, v in model.data.items()}
        train_data = jax.tree.map(jnp.asarray, vi.batches.arrays("float64"))
        key_init, key_run, key_draw = jax.random.split(key, 3)
        state = vi.init(key_init)

        def fit(state, key, data):
            state, _ = jax.lax.scan(
                lambda s, k: vi.step(k, s, data), state, jax.random.split(key, init_steps)
            )
            return state

        t0 = time.perf_counter()
        fit_c = jax.jit(fit).lower(state, key_run, train_data).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        state = jax.block_until_ready(fit_c(state, key_run, train_data))
        q = vi.sample(key_draw, state.params, data, 1000 + chains)
        w = jnp.concatenate([q.theta, q.z.reshape(q.z.shape[0], -1)], axis=1)
        inv_mass = jnp.var(w[chains:], axis=0)
        ok = bool(jnp.all(jnp.isfinite(w))) and bool(jnp.all(inv_mass > 0))
        if not ok:  # a failed fit must not poison the sampler: fall back to Stan's start
            return (*starting_points_uniform(key), compile_s, time.perf_counter() - t0)
        return w[:chains], inv_mass, compile_s, time.perf_counter() - t0

    def starting_points_uniform(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.random.uniform(key, (chains, D), jnp.float64, -2.0, 2.0), jnp.ones(D)

    def advance(states, data: dict[str, jax.Array]):
        """CHUNK iterations of every chain (warmup adaptation is inside the kernel's state)."""

        def step(state, _):
            state = sample_kernel(state, model_args=(data,))
            return state, (state.z, state.diverging, state.energy, state.num_steps)

        return jax.vmap(lambda st: jax.lax.scan(step, st, None, length=CHUNK))(states)

    def run(seed: int) -> Posterior:
        enable_compilation_cache()
        data = _as_jax64(packed)
        key_start, key_chains = jax.random.split(jax.random.key(seed))
        positions, inv_mass, init_compile_s, init_s = starting_points(key_start)
        t0 = time.perf_counter()
        states = jax.block_until_ready(init_chains(positions, inv_mass, key_chains, data))
        init_s += time.perf_counter() - t0  # includes numpyro's heuristic step-size search
        # AOT-compiled, then called through jit: numpyro's kernel closes over arrays that JAX hoists as
        # constant arguments, which a Compiled object rejects on call; jit's first call then loads the
        # program from the persistent compilation cache this compile just filled (or the in-memory one).
        advance_c = jax.jit(advance)
        t0 = time.perf_counter()
        advance_c.lower(states, data).compile()
        compile_s = init_compile_s + time.perf_counter() - t0

        total = warmup + draws
        outs, warm_div = [], 0
        warm_steps, warm_s = 0, 0.0  # warmup leapfrog steps and wall time
        bar = tqdm(
            total=total,
            desc=f"nuts on {model.name}",
            unit="it",
            delay=2.0,
            leave=False,
            disable=not sys.stderr.isatty(),  # a live bar on a terminal; nothing in logs
        )
        t0 = time.perf_counter()
        with bar:
            for start in range(0, total, CHUNK):
                t_chunk = time.perf_counter()
                states, out = advance_c(states, data)
                out = jax.device_get(out)
                keep = np.arange(start, start + CHUNK)
                warm_div += int(out[1][:, keep < warmup].sum())
                warm_steps += int(out[3][:, keep < warmup].sum())
                warm_s += (time.perf_counter() - t_chunk) * float(np.mean(keep < warmup))
                if (keep >= warmup).any():
                    outs.append(jax.tree.map(lambda a, k=keep: a[:, k >= warmup], out))
                bar.update(min(CHUNK, total - start))
                bar.set_postfix(steps=f"{out[3].mean():.0f}", divergent=int(out[1].sum()))
        sample_s = init_s + time.perf_counter() - t0
        w, diverging, energy, num_steps = jax.tree.map(lambda *a: np.concatenate(a, axis=1)[:, :draws], *outs)
        warmup_divergences = warm_div

        theta = np.asarray(w[..., :G])  # (C, S, G)
        z = np.asarray(w[..., G:]).reshape(chains, draws, N, L)
        stats = {
            "diverging": np.asarray(diverging),
            "energy": np.asarray(energy),
            "num_steps": np.asarray(num_steps),
        }
        flat = natural_draws(model, theta.reshape(-1, theta.shape[-1]), z.reshape(-1, *z.shape[2:]))
        natural = {k: v.reshape(chains, draws, *v.shape[1:]) for k, v in flat.items()}
        steps = np.asarray(num_steps, np.float64)
        settings = config | {
            "seed": seed,
            "numpyro": numpyro.__version__,
            "warmup_divergences": warmup_divergences,
            "init_s": init_s,
            "warmup_s": warm_s,
            "sampling_s": sample_s - init_s - warm_s,
            "warmup_leapfrog_steps": warm_steps / (chains * warmup),
            # vmapped chains advance in lockstep: an iteration costs its longest trajectory
            "lockstep_efficiency": float(steps.mean() / steps.max(axis=0).mean()),
        }
        return Posterior(theta, z, natural, stats, compile_s, sample_s, settings)

    return Sampler(run=run, config=config)
