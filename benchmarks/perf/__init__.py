"""Performance: what one training step costs, against what it could cost (``make perf``).

- :mod:`~hierbench.perf.floor`: the analytic FLOPs and bytes of one step per family, its roofline
  floor, and the machine's measured peaks;
- :mod:`~hierbench.perf.summary`: the perf session's rows and its table (ours vs numpyro, and
  measured / floor);
- :mod:`~hierbench.perf.strata_step`: the scale runner's step against its number of size strata
  (``python -m hierbench.perf.strata_step``);
- ``conftest.py`` and ``test_step.py``: the pytest-benchmark cases ``make perf`` collects (not part of
  ``make test``: pyproject's ``testpaths`` is ``tests``).
"""
