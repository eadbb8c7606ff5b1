"""Performance suite (``make perf``): pytest-benchmark timings of one VI step, ours vs numpyro.

Not part of ``make test`` (pyproject's ``testpaths`` is ``tests``).  The session measures the
machine's peaks once (:func:`perf_floor.measure_machine`), each benchmark adds its analytic floor to
its ``extra_info``, and the end of the session prints, and writes to ``--perf-summary``
(default ``results/perf/summary.md``), the table of ours/numpyro and measured/floor ratios.  The
peaks go into the ``--benchmark-json`` file under ``machine_peaks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from perf_floor import measure_machine

import hierbench._jax  # noqa: F401  (float64 on before jax arrays exist)

RESULTS: list[dict[str, Any]] = []  # one row per benchmark, filled by test_step.py
PEAKS: dict[str, float] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--perf-summary", default="results/perf/summary.md", help="markdown table output")


@pytest.fixture(scope="session")
def machine() -> dict[str, float]:
    """The machine's float64 matmul GFLOP/s and streaming GB/s, measured once per session."""
    if not PEAKS:
        PEAKS.update(measure_machine())
    return PEAKS


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    output_json["machine_peaks"] = dict(PEAKS)


def summary_markdown(rows: list[dict[str, Any]], peaks: dict[str, float]) -> str:
    """ms per step of ours and numpyro per family and size, their ratio, and each against the floor."""
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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not RESULTS:
        return
    table = summary_markdown(RESULTS, PEAKS)
    terminalreporter.write_sep("=", "per-step time: ours vs numpyro, and measured / floor")
    terminalreporter.write(table)
    path = Path(config.getoption("--perf-summary"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table, encoding="utf-8")
    terminalreporter.write_line(f"written to {path}")
