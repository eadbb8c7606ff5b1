"""Method registry.

Adding a method is one file plus one line: write ``methods/<name>.py`` with a factory
``make(model, **params) -> Method`` (see :mod:`hierbench.methods.base`; a Gaussian family only needs a
:class:`~hierbench.methods.base.Family` and :func:`~hierbench.methods.base.make_vi`), whose
docstring's first line describes it, then add it to ``METHODS`` below.
"""

from hierbench.methods import amortized, branch, dense, lowrank, meanfield, nuts, stan_nuts

METHODS = {
    "meanfield": meanfield.make,
    "dense": dense.make,
    "lowrank": lowrank.make,
    "branch": branch.make,
    "amortized": amortized.make,
    "nuts": nuts.make,
    "stan-nuts": stan_nuts.make,
}
