"""The perf session's results and its table: ms per step, ours vs numpyro (on our joint and native),
each against its floor.

``test_step.py`` appends one row per benchmark to :data:`RESULTS`; ``conftest.py`` measures the
machine's peaks into :data:`PEAKS` once per session and, at its end, prints and writes
:func:`summary_markdown`.  The state lives here, in a module of the package, so that both files
share it however pytest imports them.
"""

from __future__ import annotations

from typing import Any

RESULTS: list[dict[str, Any]] = []  # one row per benchmark, filled by test_step.py
IMPLS = ("ours", "numpyro", "numpyro-native")  # the table's columns, in order
PEAKS: dict[str, float] = {}  # the machine's peaks (hierbench.perf.floor.measure_machine)


def summary_markdown(rows: list[dict[str, Any]], peaks: dict[str, float]) -> str:
    """ms per step of ours and numpyro's (on our joint; native) per family and size, the ratios of
    ours to each, and each against the floor.

    Parameters
    ----------
    rows : list of dict
        One per benchmark: ``family``, ``impl`` (one of :data:`IMPLS`), ``N``, ``n``, ``S``,
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
        "| family | N | n | S | ours ms/step | numpyro ms/step | native numpyro ms/step | ours / numpyro "
        "| ours / native | floor ms | ours / floor | numpyro / floor | native / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda x, f: "–" if x is None else format(x, f)  # noqa: E731
    for (family, N, n, S), by_impl in sorted(paired.items()):
        ms = {impl: by_impl[impl]["step_s"] * 1e3 if impl in by_impl else None for impl in IMPLS}
        floor_ms = next(iter(by_impl.values()))["floor_s"] * 1e3
        ours, peer, native = (ms[impl] for impl in IMPLS)
        ratio = lambda a, b: a / b if a and b else None  # noqa: E731
        lines.append(
            f"| {family} | {N:,} | {n} | {S} | {fmt(ours, '.3f')} | {fmt(peer, '.3f')} "
            f"| {fmt(native, '.3f')} "
            f"| {fmt(ratio(ours, peer), '.2f')} | {fmt(ratio(ours, native), '.2f')} | {floor_ms:.4f} "
            f"| {fmt(ratio(ours, floor_ms), '.1f')} | {fmt(ratio(peer, floor_ms), '.1f')} "
            f"| {fmt(ratio(native, floor_ms), '.1f')} |"
        )
    return "\n".join(lines) + "\n"
