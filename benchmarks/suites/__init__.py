"""Suites: fixed sets of runs and what is decided from them.

- :mod:`~hierbench.suites.metrics`: the scalars a suite reads off a record, with their direction
  and minimum effect;
- :mod:`~hierbench.suites.definition`: a suite's entries (``experiments/regress-<name>.toml``), its
  digest, the registered suites;
- :mod:`~hierbench.suites.running`: running a suite over seeds, and the references it needs;
- :mod:`~hierbench.suites.stats`: per-metric summaries and the noise-aware comparison (the verdict);
- :mod:`~hierbench.suites.baseline`: the baseline file, written and read (and checked for staleness);
- :mod:`~hierbench.suites.regress`: the two commands, ``hierbench regress`` and ``hierbench baseline
  update``, and their seeds.
"""
