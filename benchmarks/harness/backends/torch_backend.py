"""The PyTorch backend: what a torch step does differently from JAX's, and nothing else.

The math is shared: the models' densities, the families (:mod:`hierbench.methods._gaussian` and the
family modules) and the −ELBO estimate (:func:`hierbench.methods.objective.neg_elbo`) are array-API
code that this backend evaluates on torch tensors, from the method's
:class:`~hierbench.methods.base.VISpec`.  What differs from the JAX step
(:mod:`hierbench.methods.vi`):

- standard normals: ``jax.random.normal(key, shape)`` from split keys -> ``torch.randn(shape, generator=)``,
  drawn outside the loss in the order of the family's ``noise_shapes``;
- minibatch positions: ``choice_without_replacement`` (Floyd's) -> ``torch.randperm(generator=)[:k]``;
- gradients: ``jax.value_and_grad`` -> autograd (``loss.backward()``);
- optimizer: ``optax.adam`` under ``cosine_decay_schedule`` -> ``torch.optim.Adam`` under ``LambdaLR``
  with the same b1, b2, eps and schedule (:func:`adam`);
- compilation: ``jax.jit`` of a ``lax.scan`` over a chunk of steps -> eager, or ``torch.compile`` of
  the loss (its backward compiled by AOTAutograd); ``compile_s`` is the time of ``WARMUP_STEPS``
  throw-away steps on a copy of the state (tracing, code generation, recompilations on the next
  calls; in eager mode the one-time setup of the first call);
- device and threads: XLA's default device and thread pool -> ``device=``, ``torch.set_num_threads``
  (process-wide, restored when the run ends).

A run starts from the JAX method's own initialization (the same run key), and its parameters cross
back as numpy arrays with the JAX pytree's structure, so the same float64 JAX scorer with the same
keys scores both backends (common random numbers).

A method that brings its own torch objective (``Method.torch``, a
:class:`~hierbench.methods.base.TorchLoss`: Pyro's ELBO on a Pyro model) runs in :class:`LossRunner`:
the library gives the loss, its parameters and their numpy form for the method's JAX ``sample``; the
runner gives everything else as for ours (the Adam step under the schedule, warm-up, chunks, sync).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

# optax.adam's defaults (tests/test_torch_backend.py checks them against optax's signature).  torch's
# Adam computes the same update: m̂ / (√v̂ + eps) with both bias corrections and eps outside the root.
ADAM_B1 = 0.9
ADAM_B2 = 0.999
ADAM_EPS = 1e-8
COSINE_ALPHA = 1e-3  # TrainConfig.optimizer(): cosine decay to lr * 1e-3

Tree = Any  # nested dicts / lists / tuples of arrays (dict keys in sorted order, as JAX flattens them)


def tree_map(fn: Callable[[Any], Any], tree: Tree) -> Tree:
    """Apply ``fn`` to every array leaf of a nested dict/list/tuple; the structure is kept."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, tree[k]) for k in sorted(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return fn(tree)


def tree_leaves(tree: Tree) -> list[Any]:
    """The leaves of a nested dict/list/tuple in JAX's order (dict keys sorted)."""
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in tree_leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in tree_leaves(v)]
    return [tree]


def to_numpy(tree: Tree) -> Tree:
    """A tree of torch tensors as numpy arrays (detached, on the CPU): what the JAX scorer takes."""
    return tree_map(lambda t: t.detach().cpu().numpy(), tree)


def cosine_factor(count: int, steps: int, alpha: float = COSINE_ALPHA) -> float:
    """``optax.cosine_decay_schedule``'s factor of the peak learning rate at update ``count`` (0-based)."""
    count = min(count, steps)
    return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * count / steps)) + alpha


def adam(
    params: Sequence[torch.Tensor], lr: float, steps: int, schedule: str
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``torch.optim.Adam`` with the hyperparameters and schedule of ``TrainConfig.optimizer()``.

    optax scales update t (0-based) by ``schedule(t)``; ``LambdaLR`` sets the learning rate of the
    first ``optimizer.step()`` to ``lr * factor(0)`` and advances on each ``scheduler.step()``, so
    calling ``scheduler.step()`` after every ``optimizer.step()`` gives the same sequence.

    Parameters
    ----------
    params : sequence of torch.Tensor
        Leaf tensors with ``requires_grad``.
    lr : float
        Peak learning rate.
    steps : int
        Length of the cosine schedule.
    schedule : {"cosine", "constant"}
        As :class:`~hierbench.methods.base.TrainConfig`.

    Returns
    -------
    (torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR)
    """
    # foreach=False is torch's own default for CPU tensors (the single-tensor reference update); the
    # multi-tensor path is chosen by default on CUDA only, so we pin it for the same numbers everywhere.
    opt = torch.optim.Adam(params, lr=lr, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS, foreach=False)
    if schedule == "cosine":
        factor = lambda count: cosine_factor(count, steps)  # noqa: E731
    else:
        factor = lambda count: 1.0  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclasses.dataclass
class TorchRuntime:
    """Where and how torch runs: dtype, device, threads, eager or ``torch.compile``.

    Parameters
    ----------
    dtype : {"float32", "float64"}
        Training precision (the JAX method's ``dtype``).
    device : str
        A torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …).
    threads : int, optional
        Intra-op threads (``torch.set_num_threads``, process-wide); None keeps torch's default (the
        number of physical cores).
    compile : bool
        Compile the loss and its backward with ``torch.compile`` (else eager).
    compile_mode : str, optional
        ``torch.compile``'s ``mode`` (None: its default).
    """

    dtype: str = "float64"
    device: str = "cpu"
    threads: int | None = None
    compile: bool = False
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        self.torch_dtype = {"float32": torch.float32, "float64": torch.float64}[self.dtype]
        self.torch_device = torch.device(self.device)
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} requested but torch.cuda.is_available() is False")
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def generator(self, seed: int) -> torch.Generator:
        """A generator on the device, seeded with ``seed``."""
        return torch.Generator(self.torch_device).manual_seed(int(seed))

    def normal(self, gen: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
        """Standard normals of ``shape`` in the training dtype."""
        return torch.randn(tuple(shape), generator=gen, dtype=self.torch_dtype, device=self.torch_device)

    def choice(self, gen: torch.Generator, n: int, k: int) -> torch.Tensor:
        """``k`` of ``range(n)`` without replacement (int64)."""
        return torch.randperm(n, generator=gen, device=self.torch_device)[:k]

    def tensor(self, array: Any, floating: bool | None = None) -> torch.Tensor:
        """``array`` on the device; floating arrays (or all when ``floating``) cast to the dtype."""
        a = np.asarray(array)
        cast = floating if floating is not None else np.issubdtype(a.dtype, np.floating)
        # a copy: JAX's arrays are read-only buffers, which torch.as_tensor would share (and warn about)
        return torch.tensor(a, dtype=self.torch_dtype if cast else None, device=self.torch_device)

    def parameters(self, tree: Tree) -> Tree:
        """Trainable leaf tensors (``requires_grad``) from a tree of numpy/JAX arrays."""
        return tree_map(lambda a: self.tensor(a, floating=True).requires_grad_(True), tree)

    def maybe_compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``torch.compile(fn)`` when compiling (shapes are static within a run), else ``fn``.

        Dynamo's caches are reset first: its compiled code is keyed by the function's code object, so
        the runs of a benchmark would otherwise share one cache, recompile for each new shape and, past
        ``recompile_limit``, silently fall back to eager.
        """
        if not self.compile:
            return fn
        import torch._dynamo  # torch.compile imports it on first use; reset() needs it before

        torch._dynamo.reset()
        # array_api_compat's array_namespace caches type -> namespace lookups in lru_caches, which
        # Dynamo traces through with a warning per call site; the lookups are pure, so this is safe.
        warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
        return torch.compile(fn, dynamic=False, mode=self.compile_mode)

    def sync(self) -> None:
        """Wait for queued device work (CPU ops are synchronous; CUDA is not), so timings are honest."""
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def describe(self) -> dict[str, Any]:
        """What a record states about the torch run."""
        return {
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "torch_compile": self.compile,
            "torch_compile_mode": self.compile_mode,
            "device": str(self.torch_device),
        }


# --- the runner ---------------------------------------------------------------------------------------

NAME = "torch"
WARMUP_STEPS = 3  # the first call compiles; the next two catch recompilations (e.g. guards on new values)


class TorchState:
    """Parameters (a tree of leaf tensors), their Adam optimizer and schedule."""

    def __init__(self, params: Tree, train: Any):
        self.params = params
        self.opt, self.sched = adam(tree_leaves(params), train.lr, train.steps, train.schedule)


class TorchRunner:
    """One run on torch, from the method's :class:`~hierbench.methods.base.VISpec`."""

    def __init__(self, method: Any, seed: int, chunk: int, backend: TorchBackend):
        import jax

        from hierbench.datasets.base import ParamError

        if method.vi is None:
            raise ParamError(
                "backend torch runs the reparameterized VI methods (meanfield, dense, lowrank, branch, "
                "amortized) and the Pyro peers (pyro-*); this method has no torch step"
            )
        self.threads_before = torch.get_num_threads()
        self.spec, self.chunk = method.vi, chunk
        train = self.spec.train
        self.rt = TorchRuntime(
            train.dtype, backend.device, backend.threads, backend.compile, backend.compile_mode
        )
        # The JAX method's own initialization from the same run key as a JAX run.
        key_init = jax.random.split(jax.random.key(seed), 3)[0]
        self.init_params = tree_map(np.asarray, method.init(key_init).params)
        self.seed_run, self.seed_warm = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
        self.data = tree_map(self.rt.tensor, self.spec.batches.arrays(train.dtype))
        self.loss_fn = self.rt.maybe_compile(self.neg_elbo)
        self.state: TorchState | None = None
        self._losses: list[torch.Tensor] = []

    def neg_elbo(
        self, params: Tree, positions: list[torch.Tensor], noise: list[list[torch.Tensor]]
    ) -> torch.Tensor:
        """:func:`~hierbench.methods.objective.neg_elbo` on the picks of ``positions``."""
        from hierbench.methods.objective import neg_elbo

        spec = self.spec
        picks = spec.batches.picks(self.data, positions)
        return neg_elbo(spec.model, spec.family, spec.train.stl, params, picks, noise)

    def draw(self, gen: torch.Generator) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """One step's minibatch positions (per stratum) and standard normals (per pick) from ``gen``."""
        rt, spec = self.rt, self.spec
        positions = [rt.choice(gen, s.size, s.alloc) for s in spec.batches.strata]
        shapes = spec.family.noise_shapes
        noise = [
            [rt.normal(gen, s) for s in shapes(spec.train.num_samples, b)]
            for b in spec.batches.groups_per_pick
        ]
        return positions, noise

    def step(self, state: TorchState, gen: torch.Generator) -> torch.Tensor:
        """One Adam step on a fresh draw's −ELBO estimate; updates ``state`` in place, returns the loss."""
        return self.step_on(state, *self.draw(gen))

    def step_on(
        self, state: TorchState, positions: list[torch.Tensor], noise: list[list[torch.Tensor]]
    ) -> torch.Tensor:
        """One Adam step on the −ELBO estimate of the given positions and normals."""
        state.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(state.params, positions, noise)
        loss.backward()
        state.opt.step()
        state.sched.step()
        return loss.detach()

    def new_state(self) -> TorchState:
        return TorchState(self.rt.parameters(self.init_params), self.spec.train)

    def compile(self) -> float:
        warm = self.new_state()  # a throw-away copy: the run starts from the untouched initialization
        gen = self.rt.generator(self.seed_warm)
        t0 = time.perf_counter()
        for _ in range(WARMUP_STEPS):
            self.step(warm, gen)
        self.rt.sync()
        compile_s = time.perf_counter() - t0
        self.state, self.gen = self.new_state(), self.rt.generator(self.seed_run)
        return compile_s

    def run_chunk(self, c: int) -> None:
        self._losses = [self.step(self.state, self.gen) for _ in range(self.chunk)]

    def sync(self) -> None:
        self.rt.sync()

    def losses(self) -> np.ndarray:
        return torch.stack(self._losses).cpu().numpy()

    def params(self) -> Tree:
        return to_numpy(self.state.params)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in tree_leaves(self.state.params))

    def describe(self) -> dict[str, Any]:
        return self.rt.describe() | {"warmup_steps": WARMUP_STEPS}

    def close(self) -> None:
        torch.set_num_threads(self.threads_before)  # threads are process-wide: do not leak into later runs


class LossRunner(TorchRunner):
    """A run of a method that brings its own torch objective (:class:`~hierbench.methods.base.TorchLoss`,
    e.g. Pyro's ELBO): the library computes the loss, this runner does the rest as for ours (the Adam
    step under the schedule, warm-up steps as ``compile_s``, chunks, sync, parameters to numpy)."""

    def __init__(self, method: Any, seed: int, chunk: int, backend: TorchBackend):
        from hierbench.datasets.base import ParamError

        if backend.compile:
            raise ParamError("--torch-compile: a method with its own torch objective (Pyro) runs eager only")
        self.threads_before = torch.get_num_threads()
        self.spec, self.chunk = method.torch, chunk
        train = self.spec.train
        self.rt = TorchRuntime(train.dtype, backend.device, backend.threads, False, None)
        self.seed_run, self.seed_warm = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
        self.state: Any = None
        self._losses: list[torch.Tensor] = []

    def new_state(self, seed: int) -> Any:
        state = self.spec.setup(seed, self.rt)
        train = self.spec.train
        state.opt, state.sched = adam(self.spec.parameters(state), train.lr, train.steps, train.schedule)
        return state

    def step(self, state: Any, gen: Any = None) -> torch.Tensor:
        state.opt.zero_grad(set_to_none=True)
        loss = self.spec.loss(state)
        loss.backward()
        state.opt.step()
        state.sched.step()
        return loss.detach()

    def compile(self) -> float:
        warm = self.new_state(self.seed_warm)  # a throw-away state: the run starts untouched
        t0 = time.perf_counter()
        for _ in range(WARMUP_STEPS):
            self.step(warm)
        self.rt.sync()
        compile_s = time.perf_counter() - t0
        self.state, self.gen = self.new_state(self.seed_run), None
        return compile_s

    def params(self) -> Tree:
        return self.spec.params(self.state)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.spec.parameters(self.state))

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"torch_step": "the method's own loss"}


@dataclasses.dataclass(frozen=True)
class TorchBackend:
    """PyTorch, eager or ``torch.compile``, on ``device`` with ``threads`` intra-op threads."""

    compile: bool = False
    threads: int | None = None
    device: str = "cpu"
    compile_mode: str | None = None
    name: str = NAME

    def runner(self, model: Any, method: Any, seed: int, chunk: int) -> TorchRunner:
        if getattr(method, "torch", None) is not None:  # another library's objective (Pyro)
            return LossRunner(method, seed, chunk, self)
        return TorchRunner(method, seed, chunk, self)


def make(
    compile: bool = False, threads: int | None = None, device: str = "cpu", compile_mode: str | None = None
) -> TorchBackend:
    """The torch backend with its options (``hierbench run --backend torch --torch-compile --threads``),
    checked before any work: :class:`~hierbench.datasets.base.ParamError` for a device torch does not
    know or does not have here, or a thread count below 1."""
    from hierbench.datasets.base import ParamError

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ParamError(f"threads must be an integer >= 1, got {threads!r}")
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ParamError(
            f"device {device!r} is not a torch device (cpu, cuda, cuda:1, mps …): {err}"
        ) from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ParamError(
            f"device {device!r}: this torch has no CUDA device here (torch.cuda.is_available() is False)"
        )
    return TorchBackend(bool(compile), threads, device, compile_mode)
