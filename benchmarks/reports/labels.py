"""Runs' labels in every report.

The rule of ``hierbench report`` (:class:`Labels`): a *configuration* is everything that sets a run up but
its run seed — the method, its parameters, the backend and a seconds budget (:func:`run_settings`) — on
one data configuration (the dataset and its parameters, :func:`data_id`).  Among the configurations
shown together, a configuration's label is its method and every setting that differs between the
configurations *of that method* (``amortized (head=potential, batch_groups=32)``); a setting each method
has with one value (a method's own default learning rate, say) is not in any label but in
:meth:`Labels.common_text`, for the title or caption, by method.  Runs that differ only in their run seed
share a label.  The same rule, over the data parameters, names a panel by what differs between the data
configurations of a figure.

:func:`variant` and :func:`label` are the older short labels (the paper's figures use them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# shown first, in this order, where they differ; then the others alphabetically
FIRST_KEYS = ("backend", "head", "rank", "batch_groups", "lr", "dtype", "steps", "budget_s")
UNSET = "unset"  # shown where a configuration lacks a setting that tells it from another


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def show(value: Any, key: str = "") -> str:
    """A setting's value as a label shows it: ``0.01``, ``1e+08``, ``potential``; ``batch_groups=None``
    (every group each step) as ``all``."""
    if value is None and key == "batch_groups":
        return "all"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return _json(value)
    return str(value)


def run_settings(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What sets a run up apart from its data and its run seed: the method parameters, the backend
    (``jax`` for records from before there was another) and the seconds budget where there was one."""
    settings = dict(rec["method_params"])
    settings["backend"] = rec.get("backend") or "jax"
    if rec.get("budget_s") is not None:
        settings["budget_s"] = rec["budget_s"]
    return settings


def config_id(rec: Mapping[str, Any]) -> str:
    """The run configuration of a record (its method and :func:`run_settings`): records that differ only
    in their seed or data have the same one."""
    return _json([rec["method"], run_settings(rec)])


def data_id(rec: Mapping[str, Any]) -> str:
    """The data configuration of a record: its dataset and data parameters."""
    return _json([rec["dataset"], rec["data_params"]])


def _order(keys: Iterable[str]) -> list[str]:
    keys = set(keys)
    return [k for k in FIRST_KEYS if k in keys] + sorted(keys - set(FIRST_KEYS))


@dataclass
class Labels:
    """Labels of a set of runs by what differs between their configurations (the module's rule).

    ``differing`` maps a method to the settings in its labels; ``common`` holds the settings every
    configuration has with one value; ``by_method`` the others that are constant within each method
    that has them (setting -> value -> methods); ``extra`` the settings added to the labels of
    configurations that would otherwise share one.
    """

    differing: dict[str, list[str]]
    common: dict[str, Any] = field(default_factory=dict)
    by_method: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    extra: dict[str, list[str]] = field(default_factory=dict)  # config_id -> keys against a label clash

    def params(self, rec: Mapping[str, Any]) -> str:
        """The differing settings of ``rec`` as ``k=v, k=v`` (empty when nothing differs)."""
        return self._text(rec["method"], run_settings(rec), self.extra.get(config_id(rec), ()))

    def __call__(self, rec: Mapping[str, Any]) -> str:
        """``method (k=v, …)``, or the method alone where no setting differs."""
        params = self.params(rec)
        return f"{rec['method']} ({params})" if params else rec["method"]

    def _text(self, method: str, settings: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
        # its differing settings, and those that tell it from a configuration it would share a label with
        keys = [k for k in _order([*self.differing.get(method, ()), *extra]) if k in settings or k in extra]
        return ", ".join(f"{k}={show(settings[k], k) if k in settings else UNSET}" for k in keys)

    def common_text(self) -> str:
        """The shared settings, for a title or caption: ``backend=jax, lr=0.01; dense: lr=0.003``."""
        parts = [", ".join(f"{k}={show(self.common[k], k)}" for k in _order(self.common))]
        by_holders: dict[tuple[str, ...], list[str]] = {}  # settings some methods share, by those methods
        for k in _order(self.by_method):
            for value, have in self.by_method[k].items():
                by_holders.setdefault(tuple(have), []).append(f"{k}={show(json.loads(value), k)}")
        for have, kvs in sorted(by_holders.items(), key=lambda item: -len(item[0])):
            parts.append(f"{', '.join(have)}: {', '.join(kvs)}")
        return "; ".join(p for p in parts if p)


def _unresolved(settings: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``settings`` (of a run that did not end ok) are another configuration's before its defaults
    were filled in: fewer settings, each with the other's value."""
    return any(
        set(settings) < set(o) and all(_json(o[k]) == _json(v) for k, v in settings.items()) for o in others
    )


def labels_for(records: Iterable[Mapping[str, Any]]) -> Labels:
    """The :class:`Labels` of ``records``: a setting is in a method's labels when two of that method's
    configurations that have it give it different values (a configuration without it, often a run that
    failed before its defaults were filled in, does not count).  Configurations that would still share
    a label also name the settings that tell them apart, ``unset`` where one lacks it."""
    configs: dict[str, tuple[str, dict[str, Any]]] = {}
    ran: set[str] = set()  # configurations with a run that got as far as building its method
    for rec in records:
        configs.setdefault(config_id(rec), (rec["method"], run_settings(rec)))
        if rec.get("status") == "ok":
            ran.add(config_id(rec))
    per_method: dict[str, dict[str, set[str]]] = {}  # method -> setting -> values
    for method, settings in configs.values():
        for k, v in settings.items():
            per_method.setdefault(method, {}).setdefault(k, set()).add(_json(v))
    differing = {m: [k for k in _order(vals) if len(vals[k]) > 1] for m, vals in per_method.items()}
    constant: dict[str, dict[str, list[str]]] = {}  # setting -> value -> methods that have it so
    for method, vals in per_method.items():
        for k in _order(vals):
            if k not in differing[method]:
                constant.setdefault(k, {}).setdefault(next(iter(vals[k])), []).append(method)
    common, by_method = {}, {}
    for k, by_value in constant.items():
        everyone = len(by_value) == 1 and all(
            k in vals and k not in differing[m] for m, vals in per_method.items()
        )
        if everyone:
            common[k] = json.loads(next(iter(by_value)))
        else:
            by_method[k] = by_value
    labels = Labels(differing, common, by_method)
    clash: dict[tuple[str, str], list[str]] = {}
    for cid, (method, settings) in configs.items():
        if cid not in ran and _unresolved(
            settings, [s for c, (m, s) in configs.items() if m == method and c in ran]
        ):
            continue  # failed before its defaults were filled in: every setting "unset" would say nothing
        clash.setdefault((method, labels._text(method, settings)), []).append(cid)
    for cids in (c for c in clash.values() if len(c) > 1):
        sets = [configs[c][1] for c in cids]
        keys = [
            k for k in _order({k for s in sets for k in s}) if len({_json(s.get(k, UNSET)) for s in sets}) > 1
        ]
        labels.extra.update({c: keys for c in cids})
    return labels


def data_labels(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The data parameters that differ between the records' data configurations (in the order first
    seen), and those they share (name -> value).  A parameter some records lack counts as differing."""
    params = [rec["data_params"] for rec in records]
    keys = list(dict.fromkeys(k for p in params for k in p))
    differing = [k for k in keys if len({_json(p.get(k, UNSET)) for p in params}) > 1]
    return differing, {k: params[0][k] for k in keys if k not in differing}


def data_text(data_params: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``N=100, n=20`` of the given data parameters (``unset`` where the record has none)."""
    return ", ".join(f"{k}={show(data_params[k]) if k in data_params else UNSET}" for k in keys)


def variant(rec: dict[str, Any]) -> str:
    """Short label for the method parameters that distinguish runs of one method (the paper's)."""
    mp = rec["method_params"]
    parts = []
    if mp.get("batch_groups") not in (None, rec.get("num_groups")):  # no num_groups: a run that never started
        parts.append(f"B={mp['batch_groups']}")
    if "head" in mp:
        parts.append(mp["head"])
    if "rank" in mp:
        parts.append(f"r={mp['rank']}")
    if mp.get("condition_on_theta") is False:
        parts.append("no-theta")  # q(z_i | θ) = q(z_i)
    return ",".join(parts)


def label(rec: dict[str, Any]) -> str:
    """``method (variant)``, or the method alone when it has no variant: ``amortized (B=32,potential)``
    (the paper's; ``hierbench report`` labels by :func:`labels_for`)."""
    v = variant(rec)
    return f"{rec['method']} ({v})" if v else rec["method"]
