"""The method contracts: what a method, a variational family and a batch source give the harness.

A method is a factory ``make(model, **params) -> Method`` returning pure functions (the shape of
blackjax's ``vi`` algorithms and optax's ``GradientTransformation``); the caller owns the loop::

    method = METHODS["branch"](model, steps=2000, batch_groups=16)
    state = method.init(key)
    data = method.batches.arrays(method.config["dtype"])    # what a step reads, put on the device once
    state, info = method.step(key, state, data)              # one Adam step on a reparameterized -ELBO
    draws = method.sample(key, state.params, model.data, 1000)  # θ, z and log q(θ, z) for scoring

``data`` is passed explicitly, so jitted loops take it as an argument instead of baking it into the
program as a constant.

A variational *family* (:class:`Family`) only says how to draw (θ, z_B) from standard normals and how
to evaluate log q, written once against the array API so that every backend evaluates the same math;
:func:`hierbench.methods.vi.make_vi` turns it into a JAX :class:`Method` (minibatches from a
:class:`~hierbench.methods.batches.Batches` source, the sticking-the-landing gradient, the optax
optimizer), and :class:`VISpec` lets another backend (torch) build its own step from the same pieces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import optax

from hierbench.datasets.base import HierModel, ParamError

Params = Any  # a pytree of arrays
Data = dict[str, Any]
Shape = tuple[int, ...]


class Infeasible(RuntimeError):
    """The method cannot run on this model within its stated limits (e.g. memory).

    ``memory_bytes``: what it would need; ``fields``: further numbers the record states (e.g. dense's
    ``covariance_bytes``)."""

    def __init__(self, reason: str, memory_bytes: float | None = None, **fields: Any):
        super().__init__(reason)
        self.memory_bytes = memory_bytes
        self.fields = fields


def refuse_full_rank(name: str, dim: int, max_dim: int, itemsize: int = 8, triangular: bool = True) -> None:
    """Refuse (:class:`Infeasible`, with the memory it would take) a full-rank Gaussian over ``dim``
    coordinates above ``max_dim``: its D×D factor, the factor's gradient and two Adam moments, each D²
    numbers (D(D+1)/2 for a ``triangular`` parameter) of ``itemsize`` bytes, and O(D²) work per draw."""
    if dim > max_dim:
        entries = dim * (dim + 1) // 2 if triangular else dim * dim
        memory = 4 * entries * itemsize
        raise Infeasible(
            f"{name} needs a {dim}x{dim} factor (~{memory / 2**20:,.0f} MiB with Adam state, O(D^2) work per "
            f"draw); dimension {dim} > max_dim={max_dim}",
            memory_bytes=memory,
        )


class Unavailable(RuntimeError):
    """The method's backend is not installed here (e.g. no CmdStan and no PyStan); the record says
    ``status="unavailable"`` with this message, which names what to install."""


class VIState(NamedTuple):
    """State of a VI run: variational parameters, optimizer state, step count."""

    params: Params
    opt_state: optax.OptState
    step: Any


class StepInfo(NamedTuple):
    """What one step reports: the minibatch Monte Carlo estimate of -ELBO it differentiated."""

    neg_elbo: Any


class Draws(NamedTuple):
    """Draws from q on the full data: θ ``(S, G)``, z ``(S, N, L)``, log q(θ, z) ``(S,)``."""

    theta: Any
    z: Any
    log_q: Any


class Family(NamedTuple):
    """A variational family over (θ, z), written once against the array API.

    Every draw takes its standard normals as an argument; the backend draws them.
    ``noise_shapes(S, B) -> [shape, ...]`` lists the normals a draw of S samples over B groups
    consumes, in order (a group-factorized family: θ's ``(S, G)`` first, then z's ``(S, B, L)``).
    ``draw(params, eps, idx, data_b) -> (θ (S, G), z (S, B, L))`` draws reparameterized from q for
    the groups ``idx`` (``None`` = all N; ``data_b`` holds those groups' rows).
    ``log_q(params, θ, z, idx, data_b) -> (log q(θ) (S,), Σ_{i∈B} log q(z_i | θ) (S,))``.  A family
    that does not factor over groups (mean-field/dense/low-rank over the joint vector) returns the
    whole log q as the first term and 0 as the second, and must be used with full data.
    ``gaussian``: q(θ, z) is jointly Gaussian (every built-in family, branch and amortized included:
    their conditionals are linear-Gaussian), so scoring can check its log density numerically
    (:func:`hierbench.scoring.log_q_check`); set False for other families.
    ``draw_global(params, eps_θ) -> θ`` and ``draw_local(params, eps_z, θ, idx, data_b) -> z``
    (optional, group-factorized families): the two halves of ``draw``, which lets scoring draw z a
    chunk of groups at a time (:attr:`Method.sample_local`).
    ``draw_log_q(params, eps, idx, data_b) -> (θ, z, log q(θ), Σ log q(z_i | θ))`` (optional): a draw
    and q's log density at it computed together, for training with the standard (non-STL) estimator
    only.  A location-scale family can give log q from its standard-normal draw ε in closed form
    (dense: −½‖ε‖² − log det L − D/2 log 2π, no triangular solve), with the same value and the same
    gradient in the parameters as ``log_q`` at the draw.  Scoring always uses ``log_q``: it evaluates
    the density at the draw numerically, which is what exposes a factor that broke down.
    ``init_params(key) -> params``: initial values from a JAX PRNG key (numpy or JAX arrays; every
    backend starts from them, cast to its training dtype).
    """

    init_params: Callable[[Any], Params]
    noise_shapes: Callable[[int, int], list[Shape]]
    draw: Callable[..., tuple[Any, Any]]
    log_q: Callable[..., tuple[Any, Any]]
    factorizes_over_groups: bool
    gaussian: bool = True
    draw_global: Callable[..., Any] | None = None
    draw_local: Callable[..., Any] | None = None
    draw_log_q: Callable[..., tuple[Any, Any, Any, Any]] | None = None


class Posterior(NamedTuple):
    """What an MCMC sampler returns: draws with the chains kept apart (for R̂/ESS), its stats, timing.

    ``theta`` ``(C, S, G)`` and ``z`` ``(C, S, N, L)`` are the model's unconstrained coordinates
    (None when the sampler only reports natural quantities, e.g. Stan); ``natural`` maps the names
    of :func:`hierbench.datasets.base.natural_draws` to ``(C, S, *shape)``.  ``stats`` holds per-draw
    sampler statistics ``(C, S)``: ``diverging`` (bool), ``energy``, ``num_steps``.
    """

    theta: Any
    z: Any
    natural: dict[str, Any]
    stats: dict[str, Any]
    compile_s: float  # tracing/compilation (numpyro) or model build (Stan), never in sample_s
    sample_s: float  # warmup + sampling wall time
    settings: dict[str, Any]  # everything needed to rerun it (sampler, chains, draws, seeds …)


class Sampler(NamedTuple):
    """An MCMC method: ``run(seed) -> Posterior``.  The sampler owns its loop (numpyro's MCMC,
    Stan), so the contract is one call; the harness scores it and gates it as a reference."""

    run: Callable[[int], Posterior]
    config: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters shared by every VI method.

    Parameters
    ----------
    steps : int
        Number of Adam steps (also the length of the learning-rate schedule).
    lr : float
        Peak Adam learning rate.
    schedule : {"cosine", "constant"}
        Cosine decay to ``lr * 1e-3`` (lets STL land at the optimum), or constant.
    num_samples : int
        Monte Carlo draws of q per step.
    stl : bool
        Sticking-the-landing (path-derivative) gradient: log q is evaluated at stopped parameters.
    dtype : {"float32", "float64"}
        Training precision (scoring is always float64).  float64 by default: float32 training
        stalls the dense family far from the optimum (measured: KL 44 vs 1e-7 nats, N=10).
    """

    steps: int = 10_000
    lr: float = 1e-2
    schedule: str = "cosine"
    num_samples: int = 8
    stl: bool = True
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ParamError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ParamError(f"num_samples must be an integer >= 1, got {self.num_samples!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ParamError(f"lr must be a positive number, got {self.lr!r}")
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        check_choice("dtype", self.dtype, ("float32", "float64"))

    def optimizer(self) -> optax.GradientTransformation:
        """Adam with the configured schedule."""
        if self.schedule == "cosine":
            lr = optax.cosine_decay_schedule(self.lr, self.steps, alpha=1e-3)
        else:
            lr = self.lr
        return optax.adam(lr)


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


class VISpec(NamedTuple):
    """What a reparameterized VI method is made of, for backends that build their own step (torch):
    the model, the family, the training hyperparameters and the batch source.  The loss they
    differentiate is :func:`hierbench.methods.objective.neg_elbo`, the same function the JAX step
    differentiates."""

    model: HierModel
    family: Family
    train: TrainConfig
    batches: Any  # a hierbench.methods.batches.Batches


class TorchLoss(NamedTuple):
    """A method's own torch objective, for the torch backend (another library's ELBO: Pyro's SVI).

    The torch backend trains it in the same timed loop as ours, with the same optimizer
    (``torch.optim.Adam`` under ``train``'s schedule) and the same draws-free contract: the library
    draws its own randomness (Pyro: torch's global generator, seeded by ``setup``).

    ``setup(seed, runtime) -> state``: the library's objects (model, guide, data on the runtime's
    device and dtype), their parameters created and initialized, the library's RNG seeded with
    ``seed``.  ``loss(state) -> 0-d tensor``: a Monte Carlo −ELBO estimate to differentiate.
    ``parameters(state) -> [tensor]``: the leaf tensors to train.  ``params(state) -> pytree of
    numpy arrays``: what :attr:`Method.sample` reads to draw q in JAX, so the same float64 scorer
    scores it.  ``train``: steps, learning rate, schedule, particles, dtype.
    """

    setup: Callable[[int, Any], Any]
    loss: Callable[[Any], Any]
    parameters: Callable[[Any], list]
    params: Callable[[Any], Any]
    train: TrainConfig


class Method(NamedTuple):
    """Pure JAX functions of a method plus its resolved configuration (recorded verbatim).

    ``batches`` is the method's data source (:class:`~hierbench.methods.batches.Batches`): its
    ``arrays(dtype)`` are the ``data`` argument of ``step``.  ``vi`` (reparameterized VI methods
    built by :func:`~hierbench.methods.vi.make_vi`) carries the family and settings, from which
    another backend builds its own step; a method without it (another library's algorithm) runs on
    JAX only, unless it brings its own torch objective (``torch``, a :class:`TorchLoss`: Pyro's
    peers, which run on torch only).

    A method whose q factorizes over groups as q(θ) ∏_i q(z_i | θ) may also give the two halves of
    ``sample`` separately, so that scoring can draw z for a chunk of groups at a time (N = 10⁵ groups
    of 100 rows do not fit at once): ``sample_global(key, params, num_draws) -> θ (S, G)`` and
    ``sample_local(key, params, θ, idx, data_b) -> (z (S, B, L), log q(θ) (S,), Σ_{i∈B} log q(z_i|θ)
    (S,))`` for the groups ``idx`` whose rows are ``data_b``.
    """

    init: Callable[[Any], VIState]
    step: Callable[[Any, VIState, Data], tuple[VIState, StepInfo]]
    sample: Callable[[Any, Params, Data, int], Draws]
    config: dict[str, Any]
    sample_global: Callable[[Any, Params, int], Any] | None = None
    sample_local: Callable[..., tuple[Any, Any, Any]] | None = None
    batches: Any = None
    vi: VISpec | None = None
    torch: TorchLoss | None = None


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise :class:`ParamError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ParamError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def train_config(params: dict[str, Any], **defaults: Any) -> TrainConfig:
    """The shared training hyperparameters a factory received as ``**train``.

    A factory names its own parameters; anything else in ``**train`` must be a :class:`TrainConfig`
    field, so an unknown name is reported here.  ``defaults`` are a family's own defaults for
    shared fields (e.g. a smaller learning rate for the dense Cholesky).
    """
    unknown = sorted(set(params) - set(TRAIN_FIELDS))
    if unknown:
        raise ParamError(f"unknown method parameter(s) {', '.join(unknown)}")
    return TrainConfig(**(defaults | params))
