"""Other libraries' inference algorithms as peers of ours, on the same harness.

- :mod:`.numpyro_models`: every dataset as a native numpyro model (plates, flat rows);
- :mod:`.numpyro_native`: numpyro's autoguides and AutoSemiDAIS on those models;
- :mod:`.blackjax_peers`: blackjax's mean-field and full-rank VI and Pathfinder on our log joint;
- :mod:`.pyro_peers`: Pyro's autoguides on native Pyro models (torch backend).

(The factor-based numpyro peers, :mod:`hierbench.methods.numpyro_peers`, and Stan's,
:mod:`hierbench.methods.stan_vi`, predate this package.)
"""
