"""Method registry.

Adding a method is one file plus one line: write ``methods/<name>.py`` with a factory
``make(model, **params) -> Method`` (see :mod:`hierbench.methods.base`; a Gaussian family only needs a
:class:`~hierbench.methods.base.Family` and :func:`~hierbench.methods.base.make_vi`), whose
docstring's first line describes it, then add it to ``METHODS`` below.
"""

from hierbench.methods import (
    amortized,
    branch,
    dense,
    lowrank,
    meanfield,
    numpyro_peers,
    nuts,
    stan_nuts,
    stan_vi,
)
from hierbench.methods.peers import blackjax_peers, numpyro_native, pyro_peers

METHODS = {
    "meanfield": meanfield.make,
    "dense": dense.make,
    "lowrank": lowrank.make,
    "branch": branch.make,
    "amortized": amortized.make,
    "nuts": nuts.make,
    "stan-nuts": stan_nuts.make,
    # peers: other libraries' implementations, compared with ours by `make peers` (README, "Ours vs numpyro").
    # numpyro-auto*: numpyro's guides on a factor of OUR joint (guide and optimizer overhead);
    # numpyro-native-*: on the dataset's native numpyro model (what a numpyro user's model costs).
    "numpyro-autonormal": numpyro_peers.make_autonormal,
    "numpyro-automvn": numpyro_peers.make_automvn,
    "numpyro-autolowrank": numpyro_peers.make_autolowrank,
    "numpyro-native-autonormal": numpyro_native.make_autonormal,
    "numpyro-native-autolowrank": numpyro_native.make_autolowrank,
    "numpyro-native-automvn": numpyro_native.make_automvn,
    "numpyro-native-semidais": numpyro_native.make_semidais,
    "blackjax-meanfield": blackjax_peers.make_meanfield,
    "blackjax-fullrank": blackjax_peers.make_fullrank,
    "blackjax-pathfinder": blackjax_peers.make_pathfinder,
    "pyro-autonormal": pyro_peers.make_autonormal,
    "pyro-autolowrank": pyro_peers.make_autolowrank,
    "pyro-automvn": pyro_peers.make_automvn,
    "stan-advi-meanfield": stan_vi.make_advi_meanfield,
    "stan-advi-fullrank": stan_vi.make_advi_fullrank,
    "stan-pathfinder": stan_vi.make_pathfinder,
}

# Entries that wrap another library's algorithm; the default plans (`make bench`, the accuracy plan) run
# our own methods only.
PEERS = frozenset(
    {
        "numpyro-autonormal",
        "numpyro-automvn",
        "numpyro-autolowrank",
        "numpyro-native-autonormal",
        "numpyro-native-autolowrank",
        "numpyro-native-automvn",
        "numpyro-native-semidais",
        "blackjax-meanfield",
        "blackjax-fullrank",
        "blackjax-pathfinder",
        "pyro-autonormal",
        "pyro-autolowrank",
        "pyro-automvn",
        "stan-advi-meanfield",
        "stan-advi-fullrank",
        "stan-pathfinder",
    }
)
