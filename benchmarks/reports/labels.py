"""A run's label in every report: the method, and the method parameters that tell its runs apart."""

from __future__ import annotations

from typing import Any


def variant(rec: dict[str, Any]) -> str:
    """Short label for the method parameters that distinguish runs of one method."""
    mp = rec["method_params"]
    parts = []
    if mp.get("batch_groups") not in (None, rec.get("num_groups")):  # no num_groups: a run that never started
        parts.append(f"B={mp['batch_groups']}")
    if "head" in mp:
        parts.append(mp["head"])
    if "rank" in mp:
        parts.append(f"r={mp['rank']}")
    if mp.get("condition_on_theta") is False:
        parts.append("no-theta")  # q(z_i | θ) = q(z_i)
    return ",".join(parts)


def label(rec: dict[str, Any]) -> str:
    """``method (variant)``, or the method alone when it has no variant: ``amortized (B=32,potential)``."""
    v = variant(rec)
    return f"{rec['method']} ({v})" if v else rec["method"]
