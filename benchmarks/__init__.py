"""hierbench: a benchmark suite for approximate inference on hierarchical Bayesian models.

Data flows one way: dataset (:mod:`hierbench.datasets`) → model → method (:mod:`hierbench.methods`)
→ harness (:mod:`hierbench.harness`) → record (:mod:`hierbench.records`) → report
(:mod:`hierbench.report`).
"""

__version__ = "0.1.0"
