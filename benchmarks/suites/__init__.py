"""Suites: grids of runs (experiment files and sweeps over them), and the regression gate.

Experiments and sweeps (``hierbench sweep``):

- :mod:`~hierbench.suites.experiment`: the experiment file format (``experiments/*.toml``, its
  schema in the module docstring) and the cells an experiment expands to;
- :mod:`~hierbench.suites.validate`: checking every cell before anything runs;
- :mod:`~hierbench.suites.executors`: running cells (in process, local worker processes with a
  no-progress watchdog, or Dask);
- :mod:`~hierbench.suites.sweep`: :func:`~hierbench.suites.sweep.run_sweep`, resumable, with its
  records file, lock and progress lines.

The regression gate (``hierbench regress``), fixed sets of runs and what is decided from them:

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
