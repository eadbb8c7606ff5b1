"""Performance suite (``make perf``): pytest-benchmark timings of one VI step, ours vs numpyro.

Not part of ``make test`` (pyproject's ``testpaths`` is ``tests``).  The session measures the
machine's peaks once (:func:`hierbench.perf.floor.measure_machine`), each benchmark adds its analytic
floor to its ``extra_info``, and the end of the session prints, and writes to ``--perf-summary``
(default ``results/perf/summary.md``), the table of ours/numpyro and measured/floor ratios
(:func:`hierbench.perf.summary.summary_markdown`).  The peaks go into the ``--benchmark-json`` file
under ``machine_peaks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hierbench._jax  # noqa: F401  (float64 on before jax arrays exist)
from hierbench._io import atomic_write_text
from hierbench.perf.floor import measure_machine
from hierbench.perf.summary import PEAKS, RESULTS, summary_markdown


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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not RESULTS:
        return
    table = summary_markdown(RESULTS, PEAKS)
    terminalreporter.write_sep("=", "per-step time: ours vs numpyro, and measured / floor")
    terminalreporter.write(table)
    path = Path(config.getoption("--perf-summary"))
    atomic_write_text(path, table)
    terminalreporter.write_line(f"written to {path}")
