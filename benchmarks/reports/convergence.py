"""What the convergence figure of one dataset shows, computed from its records (nothing is drawn here).

The rules of ``hierbench report``'s figure (drawn by :func:`hierbench.reports.figures.trace_figure`):

- **Panels.** One panel per data configuration (dataset parameters: N, n, d, ragged, data seed …):
  runs on different data are never on one line, and the panel's title names the data parameters that
  differ between panels; those they share are in the figure's title.
- **Lines.** One colour per run configuration (:mod:`hierbench.reports.labels`): the method, its
  parameters, backend and budget.  Its label names the settings that differ between the lines of the
  figure; the settings they share are stated in the caption.  Runs that differ only in their run seed
  share the colour, one thin line per seed (no average, which would need the seeds' trace points to
  line up in time).
- **Only ``ok`` runs are drawn.**  Every other run (``diverged``, ``error``, ``infeasible``,
  ``unavailable``), and an ``ok`` run without a trace point after 0 s, is listed in its panel's title
  and the caption as not drawn; its row, status and error are in ``summary.md``.
- **KL, never clipped silently.**  Where every drawn run of a panel has the exact log evidence, the
  y axis is KL(q‖p) per group = (log Z − ELBO) / N on a log scale, else the ELBO.  A KL estimate ≤ 0 is
  Monte Carlo noise around a converged fit: it breaks the line and is drawn as a ▽ at the panel's
  floor, a decade below its smallest positive estimate.  An estimate below −3 standard errors cannot be
  noise (the ELBO bounds log Z): it is drawn as a red ✕ there, and the caption says so.
- **Time.** Optimization wall time (compile excluded) on a log axis, so each run's first trace point
  (0 s, its initial q) is off the axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hierbench.reports.labels import Labels, data_id, data_labels, data_text, labels_for

NOISE_SE = 3.0  # a KL estimate below -NOISE_SE standard errors is not Monte Carlo noise
EMPTY_FLOOR = 1e-5  # nats/group: the floor of a KL panel without any positive estimate


@dataclass
class Curve:
    """One run's trace as drawn: ``x`` the wall times after 0 s, ``y`` the KL per group (NaN where the
    estimate is ≤ 0, which breaks the line) or the ELBO; ``noise_x`` / ``bad_x`` the times of the KL
    estimates ≤ 0 within / beyond :data:`NOISE_SE` standard errors (drawn at the floor)."""

    label: str
    seed: int
    record_id: str
    x: list[float]
    y: list[float]
    noise_x: list[float] = field(default_factory=list)
    bad_x: list[float] = field(default_factory=list)


@dataclass
class Panel:
    """One data configuration: its title, the y quantity (``kl_per_group`` or ``elbo``), the curves, the
    floor of a KL axis, and the runs not drawn as (label, why)."""

    title: str
    metric: str
    curves: list[Curve]
    left_out: list[tuple[str, str]]
    floor: float | None = None


@dataclass
class Plan:
    """The figure of one dataset: title, panels, legend labels (in order) and caption lines."""

    dataset: str
    title: str
    panels: list[Panel]
    labels: list[str]
    notes: list[str]

    @property
    def curves(self) -> list[Curve]:
        """Every drawn curve, panel by panel."""
        return [c for p in self.panels for c in p.curves]


def groups(rec: Mapping[str, Any]) -> int | None:
    """The record's number of groups: ``num_groups`` (a positive int), else none."""
    n = rec.get("num_groups")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def points(rec: Mapping[str, Any]) -> list[tuple[float, float, float | None]]:
    """The trace points a figure can show: (wall_s, ELBO, its standard error), time after 0 s, finite."""
    out = []
    for p in rec["trace"]:
        t, elbo = finite(p["wall_s"]), finite(p["elbo"])
        if t is not None and elbo is not None and t > 0:
            out.append((t, elbo, finite(p.get("elbo_se"))))
    return out


def why_not_drawn(rec: Mapping[str, Any]) -> str | None:
    """Why a record is not drawn (its status, that it is a sweep's tuning run, or that it has no trace
    point after 0 s); None: drawn."""
    if rec.get("role") == "tuning":
        return "a tuning run (its choice is in the tuned runs' records)"
    if rec["status"] != "ok":
        return rec["status"]
    if not points(rec):
        return "ok, but no trace point after 0 s"
    return None


def convergence_plan(records: Sequence[Mapping[str, Any]]) -> Plan:
    """What the convergence figure of one dataset's records shows (the module's rules).

    Parameters
    ----------
    records : sequence of dict
        Validated records of one dataset, every status.

    Returns
    -------
    Plan
        Its panels (one per data configuration, ordered by number of groups), curves and notes; a plan
        without curves is not worth a figure.
    """
    dataset = records[0]["dataset"]
    drawn = [r for r in records if why_not_drawn(r) is None]
    labels = labels_for(drawn)
    data_keys, data_common = data_labels(records)
    panel_recs: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        panel_recs.setdefault(data_id(rec), []).append(rec)
    order = sorted(
        panel_recs, key=lambda k: (min((groups(r) or 0) for r in panel_recs[k]), list(panel_recs).index(k))
    )
    every = labels_for(records)  # the summary table's labels, for the runs not drawn
    panels = [
        _panel(
            data_text(panel_recs[k][0]["data_params"], data_keys),
            panel_recs[k],
            labels,
            every,
            "N" in data_keys,
        )
        for k in order
    ]

    seeds = sorted({r["seed"] for r in drawn})
    title = f"{dataset}: convergence"
    if data_common:
        title += f" — data {data_text(data_common, data_common)}"
    notes = [
        "Only runs that ended ok are drawn; one colour per run configuration, labelled by the settings "
        "that differ between the lines."
    ]
    common = labels.common_text()
    if common:
        notes.append(f"Shared by every line: {common}.")
    if len(seeds) > 1:
        notes.append(
            f"Run seeds {', '.join(map(str, seeds))}: runs that differ only in their seed share a colour, "
            "one thin line per seed."
        )
    elif seeds:
        notes.append(f"Run seed {seeds[0]}.")
    curves = [c for p in panels for c in p.curves]
    if any(p.metric == "kl_per_group" for p in panels):
        notes.append("KL(q‖p) per group = (exact log Z − ELBO) / N, log scale.")
    if any(c.noise_x for c in curves):
        notes[-1] += (
            "  ▽ at a panel's floor: a KL estimate ≤ 0, Monte Carlo noise around a converged fit (the floor "
            "is a decade below the panel's smallest positive estimate; the line breaks there)."
        )
    if any(c.bad_x for c in curves):
        notes.append(
            f"Red ✕ at the floor: an ELBO above the exact log Z by more than {NOISE_SE:g} standard errors, "
            "which a valid q cannot give: check that run."
        )
    if any(p.metric == "elbo" for p in panels):
        notes.append(
            "A panel without the exact log evidence for every drawn run shows the ELBO (higher is better)."
        )
    notes.append(
        "Wall time is optimization only (compile excluded); each run's initial point (0 s) is off the "
        "log axis."
    )
    left = [(p.title if len(panels) > 1 else "", lab, why) for p in panels for lab, why in p.left_out]
    if left:
        listed = "; ".join(
            f"{lab} at {where}: {why}" if where else f"{lab}: {why}" for where, lab, why in left[:12]
        )
        more = f"; and {len(left) - 12} more" if len(left) > 12 else ""
        notes.append(
            f"Not drawn, {len(left)} run(s) (rows of summary.md, with their errors): {listed}{more}."
        )
    legend = list(dict.fromkeys(c.label for c in curves))
    return Plan(dataset, title, panels, legend, notes)


def _panel(title: str, recs: list[Mapping[str, Any]], labels: Labels, every: Labels, named_n: bool) -> Panel:
    drawn = [r for r in recs if why_not_drawn(r) is None]
    sizes = sorted({n for n in (groups(r) for r in recs) if n is not None})
    if sizes and not named_n:
        title = ", ".join(filter(None, [title, f"{'/'.join(map(str, sizes))} groups"]))
    exact = bool(drawn) and all(finite(r["log_evidence"]) is not None and groups(r) for r in drawn)
    curves = [_curve(r, labels(r), exact) for r in drawn]
    floor = None
    if exact:
        positive = [y for c in curves for y in c.y if y > 0]
        floor = 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else EMPTY_FLOOR
    left_out = [(every(r), why) for r in recs if (why := why_not_drawn(r)) is not None]
    return Panel(title, "kl_per_group" if exact else "elbo", curves, left_out, floor)


def _curve(rec: Mapping[str, Any], label: str, exact: bool) -> Curve:
    curve = Curve(label, rec["seed"], str(rec["record_id"]), [], [])
    for t, elbo, se in points(rec):
        if not exact:
            curve.x.append(t)
            curve.y.append(elbo)
            continue
        gap = rec["log_evidence"] - elbo
        curve.x.append(t)
        curve.y.append(gap / groups(rec) if gap > 0 else math.nan)
        if gap <= 0:
            (curve.bad_x if se is not None and gap < -NOISE_SE * se else curve.noise_x).append(t)
    return curve
