"""The one home of hierbench's JAX configuration.

Importing this module switches on float64 (scoring is always float64, whatever the training dtype);
every hierbench module that uses JAX imports it first, so the switch happens once, before any array
is made.  :func:`enable_compilation_cache` turns on JAX's persistent compilation cache.
"""

from __future__ import annotations

from pathlib import Path

import jax

from hierbench._io import cache_dir

jax.config.update("jax_enable_x64", True)  # float64 must be available for off-clock scoring


def enable_compilation_cache() -> Path:
    """Turn on JAX's persistent compilation cache in ``cache_dir()/jax`` (idempotent)."""
    path = cache_dir() / "jax"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
