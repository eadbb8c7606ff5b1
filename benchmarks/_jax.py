"""The one home of hierbench's JAX configuration.

Importing this module switches on float64 (scoring is always float64, whatever the training dtype);
every hierbench module that uses JAX imports it first, so the switch happens once, before any array
is made.  :func:`enable_compilation_cache` turns on JAX's persistent compilation cache.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path

import jax

from hierbench._io import cache_dir

jax.config.update("jax_enable_x64", True)  # float64 must be available for off-clock scoring


@functools.cache
def machine_key() -> str:
    """A short hash of what compiled XLA:CPU code depends on: the CPU (model and instruction-set
    flags), the architecture and the jaxlib version.  A cache compiled on another CPU may use
    instructions this one lacks (JAX warns it "could lead to SIGILL"), so each machine gets its own."""
    parts = [platform.machine(), jax.__version__, getattr(jax.lib, "__version__", "")]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                parts.append(line.split(":", 1)[1].strip())
                if len(parts) >= 5:
                    break
    except OSError:
        parts.append(platform.processor())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def enable_compilation_cache() -> Path:
    """Turn on JAX's persistent compilation cache in ``cache_dir()/jax/<machine_key()>`` (idempotent):
    one folder per machine kind, so a cache made on another CPU is never loaded."""
    path = cache_dir() / "jax" / machine_key()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
