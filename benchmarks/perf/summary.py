"""The perf session's results and its table: ms per step, ours vs numpyro, each against its floor.

``test_step.py`` appends one row per benchmark to :data:`RESULTS`; ``conftest.py`` measures the
machine's peaks into :data:`PEAKS` once per session and, at its end, prints and writes
:func:`summary_markdown`.  The state lives here, in a module of the package, so that both files
share it however pytest imports them.
"""

from __future__ import annotations

from typing import Any

RESULTS: list[dict[str, Any]] = []  # one row per benchmark, filled by test_step.py
PEAKS: dict[str, float] = {}  # the machine's peaks (hierbench.perf.floor.measure_machine)


def summary_markdown(rows: list[dict[str, Any]], peaks: dict[str, float]) -> str:
    """ms per step of ours and numpyro per family and size, their ratio, and each against the floor.

    Parameters
    ----------
    rows : list of dict
        One per benchmark: ``family``, ``impl`` (``ours`` or ``numpyro``), ``N``, ``n``, ``S``,
        ``step_s`` (median seconds per step) and ``floor_s`` (the step's floor in seconds).
    peaks : dict
        ``matmul_gflops`` and ``bandwidth_gbs`` measured in the same session.

    Returns
    -------
    str
        The markdown table, a line on the peaks above it.
    """
    paired: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in rows:
        paired.setdefault((row["family"], row["N"], row["n"], row["S"]), {})[row["impl"]] = row
    lines = [
        f"Machine peaks measured in this run: float64 matmul {peaks.get('matmul_gflops', float('nan')):.1f} "
        f"GFLOP/s, streaming {peaks.get('bandwidth_gbs', float('nan')):.1f} GB/s.",
        "",
        "| family | N | n | S | ours ms/step | numpyro ms/step | ours / numpyro | floor ms "
        "| ours / floor | numpyro / floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda x, f: "–" if x is None else format(x, f)  # noqa: E731
    for (family, N, n, S), pair in sorted(paired.items()):
        ours, peer = pair.get("ours"), pair.get("numpyro")
        floor_ms = (ours or peer)["floor_s"] * 1e3
        t_ours = ours["step_s"] * 1e3 if ours else None
        t_peer = peer["step_s"] * 1e3 if peer else None
        ratio = t_ours / t_peer if t_ours and t_peer else None
        lines.append(
            f"| {family} | {N:,} | {n} | {S} | {fmt(t_ours, '.3f')} | {fmt(t_peer, '.3f')} "
            f"| {fmt(ratio, '.2f')} | {floor_ms:.4f} | {fmt(t_ours and t_ours / floor_ms, '.1f')} "
            f"| {fmt(t_peer and t_peer / floor_ms, '.1f')} |"
        )
    return "\n".join(lines) + "\n"
