"""The metrics of the regression gate: scalars read off a run's record.

========================  ==========  ===========  ==================================================
metric                    better      min effect   what
========================  ==========  ===========  ==================================================
``elbo_per_group``        higher      0.02 nats    final float64 ELBO / N (1000 draws of q)
``kl_per_group``          lower       0.02 nats    exact log Z − ELBO, / N (``hier-linear`` only)
``global_std_mean_err``   lower       0.05 sd      |E_q θ − E_ref θ| / sd_ref, mean over θ's coordinates
``local_std_mean_err``    lower       0.05 sd      the same over every z_i coordinate
``global_sd_ratio_err``   lower       0.05         |sd_q / sd_ref − 1|, mean over θ's coordinates
``local_sd_ratio_err``    lower       0.05         the same over every z_i coordinate
========================  ==========  ===========  ==================================================

The accuracy metrics come from the record's ``accuracy`` block: against the exact posterior on
``hier-linear``, against the stored gated NUTS reference on ``hier-logistic`` (``hierbench reference``
builds it; the gate exits 2 with that command if it is missing).

The minimum effects are about the smallest change worth a look at the suites' budgets: branch and
dense reach KL ≈ 10⁻³ nats/group or less with SEs near 10⁻⁴, and a harmless 10⁻³ change must not be
an alarm (:mod:`hierbench.suites.stats` has the rule that uses them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Metric:
    """A scalar read off a run's record, with the direction that is better and the minimum effect.

    Parameters
    ----------
    higher_is_better : bool
        True for the ELBO, False for errors and KL.
    min_effect : float
        A change smaller than this never fails, however small its standard error.
    description : str
        What it is, for the docs and the printed table.
    """

    higher_is_better: bool
    min_effect: float
    description: str


METRICS: dict[str, Metric] = {
    "elbo_per_group": Metric(True, 0.02, "final ELBO / N (nats)"),
    "kl_per_group": Metric(False, 0.02, "exact log Z - ELBO, / N (nats)"),
    "global_std_mean_err": Metric(False, 0.05, "|E_q - E_ref| / sd_ref, mean over theta"),
    "local_std_mean_err": Metric(False, 0.05, "|E_q - E_ref| / sd_ref, mean over z"),
    "global_sd_ratio_err": Metric(False, 0.05, "|sd_q / sd_ref - 1|, mean over theta"),
    "local_sd_ratio_err": Metric(False, 0.05, "|sd_q / sd_ref - 1|, mean over z"),
}
ACCURACY_METRICS = ("global_std_mean_err", "local_std_mean_err", "global_sd_ratio_err", "local_sd_ratio_err")
EXACT_METRICS = ("elbo_per_group", "kl_per_group", *ACCURACY_METRICS)
REFERENCE_METRICS = ("elbo_per_group", *ACCURACY_METRICS)


def extract_metrics(record: dict[str, Any], names: Iterable[str]) -> dict[str, float]:
    """The named metrics of one record (NaN where the record has no value, e.g. a failed run)."""
    acc = record.get("accuracy") or {}  # optional: absent without a reference
    ok = record["status"] == "ok"
    elbo = record["elbo"]
    values = {
        # every record that ran has num_groups
        "elbo_per_group": elbo / record["num_groups"] if ok and elbo is not None else None,
        "kl_per_group": record["kl_per_group"] if ok else None,
    }
    for block in ("global", "local"):
        scores = acc.get(block) or {}
        values[f"{block}_std_mean_err"] = scores.get("std_mean_err_mean") if ok else None
        values[f"{block}_sd_ratio_err"] = scores.get("sd_ratio_err_mean") if ok else None
    return {name: math.nan if values.get(name) is None else float(values[name]) for name in names}
