"""hierbench._jax: float64 on, and a compilation cache that is never shared between machine kinds."""

from __future__ import annotations

import jax

from hierbench import _jax


def test_float64_is_on():
    assert jax.config.jax_enable_x64


def test_compilation_cache_is_keyed_by_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("HIERBENCH_CACHE_DIR", str(tmp_path))
    key = _jax.machine_key()
    assert len(key) == 12 and int(key, 16) >= 0 and _jax.machine_key() == key
    try:
        path = _jax.enable_compilation_cache()
        assert path == tmp_path / "jax" / key and path.is_dir()
        # another CPU (here: another architecture name) gets another folder
        _jax.machine_key.cache_clear()
        monkeypatch.setattr(_jax.platform, "machine", lambda: "some-other-cpu")
        assert _jax.machine_key() != key
    finally:
        _jax.machine_key.cache_clear()
        jax.config.update("jax_compilation_cache_dir", None)
