"""The few operations the families need that the array API standard does not have.

The families' math (:mod:`hierbench.methods._gaussian` and the family modules) is written once against
the array API (``array_api_compat.array_namespace``), so JAX and torch evaluate the same functions, as
the models' densities already do.  The standard (2023.12) lacks four things they use; each is here,
dispatched on the array's library, calling exactly what each library offers for it:

- :func:`solve_triangular` and :func:`cho_solve`: triangular solves are not in the standard's
  ``linalg`` extension (``jax.lax.linalg.triangular_solve`` / ``torch.linalg.solve_triangular``);
- :func:`einsum`: not in the standard (``jnp.einsum`` / ``torch.einsum``; numpy's for tests);
- :func:`stop_gradient`: a gradient concept the standard does not know (``jax.lax.stop_gradient``
  / ``Tensor.detach``), used by the sticking-the-landing estimator.

Everything else (``tril``, ``linalg.cholesky``, ``logaddexp``, ``take`` …) is plain array API.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_jax_array, is_torch_array

Array = Any


def namespace(*arrays: Array) -> Any:
    """The array-API namespace of ``arrays`` (jax.numpy, array_api_compat.torch or numpy)."""
    return array_namespace(*arrays)


def device(x: Array) -> Any:
    """The device to create arrays like ``x`` on: torch's tensor device; None (the default device)
    for JAX, whose traced arrays have no device, and numpy."""
    return x.device if is_torch_array(x) else None


def softplus(x: Array) -> Array:
    """log(1 + eˣ) = logaddexp(x, 0), stable for large |x| (``jax.nn.softplus``'s definition)."""
    xp = array_namespace(x)
    return xp.logaddexp(x, xp.zeros_like(x))


def einsum(subscripts: str, *operands: Array) -> Array:
    """``einsum`` of the operands' library."""
    first = operands[0]
    if is_jax_array(first):
        import jax.numpy as jnp

        return jnp.einsum(subscripts, *operands)
    if is_torch_array(first):
        import torch

        return torch.einsum(subscripts, *operands)
    import numpy as np

    return np.einsum(subscripts, *operands)


def solve_triangular(a: Array, b: Array, *, lower: bool = True, transpose: bool = False) -> Array:
    """x with ``op(a) x = b`` for lower/upper-triangular ``a (..., D, D)`` and ``b (..., D, K)``;
    ``op(a) = aᵀ`` when ``transpose``.  Batched over leading axes."""
    if is_jax_array(a):
        import jax

        return jax.lax.linalg.triangular_solve(a, b, left_side=True, lower=lower, transpose_a=transpose)
    if is_torch_array(a):
        import torch

        if transpose:
            return torch.linalg.solve_triangular(a.mT, b, upper=lower)
        return torch.linalg.solve_triangular(a, b, upper=not lower)
    import numpy as np
    import scipy.linalg

    a, b = np.asarray(a), np.asarray(b)
    solve = lambda a2, b2: scipy.linalg.solve_triangular(a2, b2, lower=lower, trans=int(transpose))  # noqa: E731
    if a.ndim == 2:
        return solve(a, b)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = np.broadcast_to(a, shape + a.shape[-2:]), np.broadcast_to(b, shape + b.shape[-2:])
    pairs = zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), strict=True)
    out = [solve(ai, bi) for ai, bi in pairs]
    return np.stack(out).reshape(shape + b.shape[-2:])


def cho_solve(chol: Array, b: Array) -> Array:
    """x with ``(L Lᵀ) x = b`` for a lower Cholesky factor ``chol (..., D, D)`` and ``b (..., D, K)``."""
    if is_jax_array(chol):
        import jax.scipy.linalg

        return jax.scipy.linalg.cho_solve((chol, True), b)
    if is_torch_array(chol):
        import torch

        return torch.cholesky_solve(b, chol, upper=False)
    return solve_triangular(chol, solve_triangular(chol, b, lower=True), lower=True, transpose=True)


def stop_gradient(tree: Any) -> Any:
    """``tree`` (a dict/list pytree of arrays) with its gradient stopped: the same values, treated as
    constants by the backend's differentiation."""
    if isinstance(tree, dict):
        return {k: stop_gradient(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(stop_gradient(v) for v in tree)
    if is_jax_array(tree):
        import jax

        return jax.lax.stop_gradient(tree)
    if is_torch_array(tree):
        return tree.detach()
    return tree
