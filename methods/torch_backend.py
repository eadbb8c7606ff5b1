"""The PyTorch side of the backend seam: what the torch twin of a VI method does differently from JAX.

JAX (``methods/base.py``, ``benchmarks/harness.py``) -> torch (this module):

- standard normals: ``jax.random.normal(key, shape)`` from split keys -> ``torch.randn(shape, generator=)``;
- minibatches of groups: ``choice_without_replacement`` (Floyd's) -> ``torch.randperm(generator=)[:k]``;
- gradients: ``jax.value_and_grad`` -> autograd (``loss.backward()``);
- optimizer: ``optax.adam`` under ``cosine_decay_schedule`` -> ``torch.optim.Adam`` under ``LambdaLR``
  with the same b1, b2, eps and schedule (:func:`adam`);
- compilation: ``jax.jit`` of a ``lax.scan`` over a chunk of steps -> eager, or ``torch.compile`` of
  the loss (its backward compiled by AOTAutograd);
- device and threads: XLA's default device and thread pool -> ``device=``, ``torch.set_num_threads``.

Everything else is shared: the model densities are array-API code evaluated unchanged on torch tensors,
and the families' math is a line-by-line twin (:mod:`hierbench.methods.torch_families`).  Parameters
cross the seam as nested dicts/lists of arrays with the same structure on both sides (a JAX pytree),
so a torch fit can be scored by the JAX float64 scorer (:func:`to_numpy`).
"""

from __future__ import annotations

import dataclasses
import math
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
