"""Reports: what tables and figures compute from records (records in, numbers out; nothing runs).

- :mod:`~hierbench.reports.targets`: the one time to a target ELBO every report uses;
- :mod:`~hierbench.reports.labels`: a run's label (method and distinguishing parameters);
- ``hierbench report`` of a records file: :mod:`~hierbench.reports.tables` (summary, trace,
  accuracy), :mod:`~hierbench.reports.figures` (convergence) and :mod:`~hierbench.reports.report`
  (writes them all or nothing);
- :mod:`~hierbench.reports.jax_vs_torch`: ``hierbench torch-bench``'s table and figure;
- :mod:`~hierbench.reports.paper`: every figure and table of the paper's four experiments
  (``make figures``).
"""
