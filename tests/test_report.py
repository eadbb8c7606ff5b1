"""`hierbench report`: only comparable runs share a figure's line, every line is labelled by what differs,
failures are table rows (never curves), KL ≤ 0 is marked rather than clipped, unreadable lines are
skipped and counted, and the outputs are replaced as one set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hierbench._io import replace_files


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_replace_files_puts_everything_back_when_a_removal_fails(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("old a")
    (tmp_path / "gone").write_text("old gone")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name == "gone":
            raise PermissionError("locked")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        replace_files({tmp_path / "a": "new a", tmp_path / "b": b"new b"}, remove=[tmp_path / "gone"])
    monkeypatch.undo()
    assert snapshot(tmp_path) == {"a": b"old a", "gone": b"old gone"}
    replace_files({tmp_path / "a": "new a", tmp_path / "b": b"new b"}, remove=[tmp_path / "gone"])
    assert snapshot(tmp_path) == {"a": b"new a", "b": b"new b"}
