"""Reference posteriors: a gated NUTS run (or the exact posterior) stored with its provenance.

A reference is per-coordinate summaries of p(θ, z | y), in the model's unconstrained coordinates
(what q approximates; used for the accuracy block of every record) and in its natural parameters
(Stan/posteriordb names; what ``hierbench reference --summary`` writes):

* mean, sd and the Monte Carlo standard error of the mean (ArviZ), and
* ``QUANTILE_LEVELS`` marginal quantiles (for the marginal 1-Wasserstein distance),
* the draws themselves (float32) when they are small (≤ ``MAX_STORED_FLOATS`` numbers).

**The gate** (pre-registered; stored with the reference and applied before it is used):
split rank-normalized R̂ < 1.01 and bulk and tail ESS ≥ 400 for every coordinate (ArviZ), no
divergent transition after warmup, and E-BFMI ≥ 0.2 in every chain.  A reference that fails is
stored with its diagnostics but refused as ground truth (:class:`RefusedReference` names the checks
that failed).

**The store**: ``results/references/<dataset>/<key>.json`` (provenance, diagnostics, checks made, the
command that regenerates it, the sha256 of the arrays file) and ``<key>.npz`` (arrays; loaded with
``allow_pickle=False``).  ``key`` hashes everything the reference depends on: dataset, data params, a
fingerprint of the data arrays, sampler settings, seed and this format's version.  A file whose
hash or key does not match is reported stale/corrupt and rebuilt, never used.  ``index.json`` maps
each dataset name to its references (key, data params, seed, sampler params, files), as posteriordb
names its posteriors; :func:`save` rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shlex
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.stats

from hierbench._io import REFERENCES_DIR, atomic_write, atomic_write_text, file_lock
from hierbench.datasets.base import HierModel, flat_names
from hierbench.methods.base import Posterior, Sampler
from hierbench.records import env_info, to_jsonable

with warnings.catch_warnings():  # ArviZ 0.x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

FORMAT_VERSION = 1
DEFAULT_ROOT = REFERENCES_DIR  # the store's default folder (hierbench._io.REFERENCES_DIR)
QUANTILE_LEVELS = (np.arange(100) + 0.5) / 100
MAX_STORED_FLOATS = 2_000_000
# Sampler settings `hierbench reference` (and `make references`) uses per dataset, on top of the nuts
# defaults (4 chains × 1000 warmup + 1000 draws).  Only the sampling budget changes; the gate never
# does.  Each entry says what the default run measured.
REFERENCE_SETTINGS: dict[str, dict[str, Any]] = {
    # 1000 draws: split R-hat 1.012 on log σ_b (the county slope scale, weakly identified near 0).
    "radon": {"warmup": 2000, "draws": 2000, "target_accept": 0.95},
    # The first adaptation windows (inverse mass at mean-field variances) built depth-10 trees:
    # 750 s. Warmup trees capped at depth 7 (kept draws at 10): 45 leapfrog steps per warmup
    # iteration, ~450 s, gate passed (R-hat 1.0084, bulk ESS 1102).  movielens-small gains nothing
    # from the cap (its warmup averages 50 steps) and keeps the defaults.
    "chem97": {"warmup_tree_depth": 7},
}
GATE = {
    "rhat_max": 1.01,
    "ess_bulk_min": 400.0,
    "ess_tail_min": 400.0,
    "divergences_max": 0,
    "ebfmi_min": 0.2,
}


class RefusedReference(RuntimeError):
    """A stored reference failed its gate and must not be used as ground truth."""


class Reference(NamedTuple):
    """Per-coordinate posterior summaries (see the module docstring); ``local_*`` are ``(N, L)``."""

    source: str  # "exact" or the sampler's name
    global_mean: np.ndarray
    global_sd: np.ndarray
    global_mcse: np.ndarray
    global_q: np.ndarray  # (Q, G)
    local_mean: np.ndarray
    local_sd: np.ndarray
    local_mcse: np.ndarray
    local_q: np.ndarray  # (Q, N, L)
    natural_names: list[str]
    natural_mean: np.ndarray
    natural_sd: np.ndarray
    natural_mcse: np.ndarray
    accepted: bool
    failed_checks: list[str]
    meta: dict[str, Any]

    def summary(self) -> pd.DataFrame:
        """One row per natural coordinate: ``name, mean, sd, mcse_mean`` (posteriordb style)."""
        return pd.DataFrame(
            {
                "name": self.natural_names,
                "mean": self.natural_mean,
                "sd": self.natural_sd,
                "mcse_mean": self.natural_mcse,
            }
        )

    def require_accepted(self) -> Reference:
        """Return self if it passed its gate, else raise :class:`RefusedReference`."""
        if not self.accepted:
            raise RefusedReference(
                f"reference {self.meta.get('key', '?')[:16]} failed its gate and is refused as ground "
                f"truth: {'; '.join(self.failed_checks)}"
            )
        return self


# --------------------------------------------------------------------------- keys and provenance
def data_fingerprint(model: HierModel) -> str:
    """sha256 over the model's data arrays (names, dtypes, shapes, bytes); for a model whose ratings
    are kept in a store (``data`` empty), over the store's arrays too."""
    h = hashlib.sha256()
    arrays = dict(model.data)
    if model.store is not None:
        arrays |= {f"store.{name}": getattr(model.store, name) for name in model.store.ARRAYS}
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def reference_key(dataset: str, model: HierModel, settings: dict[str, Any], seed: int) -> str:
    """Hash of everything a reference depends on."""
    return _key(dataset, model.params, data_fingerprint(model), settings, seed)


def _key(dataset: str, data_params: dict, data_sha256: str, settings: dict[str, Any], seed: int) -> str:
    blob = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "data_params": to_jsonable(data_params),
        "data_sha256": data_sha256,
        "settings": to_jsonable({k: v for k, v in settings.items() if k != "seed"}),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# What a sampler adds to its configuration in ``Posterior.settings`` (the run's own outcome, not an
# input): left out when a stored reference's key is recomputed from its metadata.
RUN_OUTCOMES = frozenset(
    {
        "seed",
        "numpyro",
        "warmup_divergences",
        "init_s",
        "warmup_s",
        "sampling_s",
        "warmup_leapfrog_steps",
        "lockstep_efficiency",
    }
)


def key_of_meta(meta: dict[str, Any]) -> str:
    """The key a stored reference's own inputs hash to (its metadata's ``key_settings`` where stored,
    else its settings less :data:`RUN_OUTCOMES`); a reference whose ``key`` differs was edited."""
    settings = meta.get("settings") or {}
    inputs = meta.get("key_settings") or {k: v for k, v in settings.items() if k not in RUN_OUTCOMES}
    return _key(meta["dataset"], meta["data_params"], meta["data_sha256"], inputs, settings.get("seed"))


def regenerate_command(dataset: str, data_params: dict[str, Any], seed: int, method_params: dict) -> str:
    """The CLI command that rebuilds this reference."""
    parts = ["hierbench", "reference", "--dataset", dataset]
    for k, v in sorted(data_params.items()):
        parts += ["--data-param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    for k, v in sorted(method_params.items()):
        parts += ["--method-param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    parts += ["--seed", str(seed)]
    return shlex.join(parts)


# --------------------------------------------------------------------------- building
def exact_reference(model: HierModel) -> Reference:
    """The exact Gaussian posterior of a conjugate model as a Reference (MCSE 0, always accepted)."""
    ex = model.exact
    if ex is None:
        raise ValueError(f"{model.name} has no exact posterior")
    g_sd = np.sqrt(np.diag(ex.global_cov))
    l_mean, l_cov = ex.local_marginals()
    l_sd = np.sqrt(np.diagonal(l_cov, axis1=-2, axis2=-1))
    zq = scipy.stats.norm.ppf(QUANTILE_LEVELS)
    empty = np.zeros(0)
    return Reference(
        source="exact",
        global_mean=ex.global_mean,
        global_sd=g_sd,
        global_mcse=np.zeros_like(g_sd),
        global_q=ex.global_mean + zq[:, None] * g_sd,
        local_mean=l_mean,
        local_sd=l_sd,
        local_mcse=np.zeros_like(l_sd),
        local_q=l_mean + zq[:, None, None] * l_sd,
        natural_names=[],
        natural_mean=empty,
        natural_sd=empty,
        natural_mcse=empty,
        accepted=True,
        failed_checks=[],
        meta={"source": "exact", "log_evidence": float(ex.log_evidence)},
    )


PARALLEL_DIAGNOSTICS_MIN = 2000  # coordinates; fewer are faster in one process than spawning workers


def _diagnostics_serial(draws: np.ndarray) -> dict[str, np.ndarray]:
    ds = az.convert_to_dataset({"x": draws})
    out = {
        "rhat": az.rhat(ds, method="rank")["x"].values,
        "ess_bulk": az.ess(ds, method="bulk")["x"].values,
        "ess_tail": az.ess(ds, method="tail")["x"].values,
        "mcse_mean": az.mcse(ds, method="mean")["x"].values,
    }
    return {k: np.asarray(v, np.float64).reshape(draws.shape[-1]) for k, v in out.items()}


def _diagnostics(draws: np.ndarray) -> dict[str, np.ndarray]:
    """R̂ (rank, split), bulk/tail ESS and MCSE of the mean per coordinate of ``draws (C, S, P)``.

    ArviZ computes them one coordinate at a time (~8 ms each: 80 s for Chem97's 9,650), so many
    coordinates are split over worker processes, one per core.
    """
    num_coords = draws.shape[-1]
    workers = min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8
    )
    if num_coords < PARALLEL_DIAGNOSTICS_MIN or workers < 2:
        return _diagnostics_serial(draws)
    chunks = [draws[..., c] for c in np.array_split(np.arange(num_coords), workers)]
    try:
        # spawn, never fork: JAX is multithreaded in this process
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_diagnostics_serial, chunks))
    except (BrokenProcessPool, OSError, RuntimeError) as err:
        # e.g. a script without an ``if __name__ == "__main__"`` guard cannot spawn workers
        warnings.warn(f"diagnostics in one process ({err.__class__.__name__}: {err})", stacklevel=2)
        return _diagnostics_serial(draws)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def apply_gate(diag: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The gate's checks on summarized diagnostics: (checks made, messages of the failed ones)."""
    checks = [
        ("split R-hat", "rhat_max", "<", GATE["rhat_max"], diag["rhat_max"], diag["rhat_argmax"]),
        (
            "bulk ESS",
            "ess_bulk_min",
            ">=",
            GATE["ess_bulk_min"],
            diag["ess_bulk_min"],
            diag["ess_bulk_argmin"],
        ),
        (
            "tail ESS",
            "ess_tail_min",
            ">=",
            GATE["ess_tail_min"],
            diag["ess_tail_min"],
            diag["ess_tail_argmin"],
        ),
        ("divergences", "divergences", "<=", GATE["divergences_max"], diag["divergences"], None),
        ("E-BFMI", "ebfmi_min", ">=", GATE["ebfmi_min"], diag["ebfmi_min"], diag["ebfmi_argmin"]),
    ]
    made, failed = [], []
    for label, stat, op, threshold, value, where in checks:
        ok = (
            bool(np.isfinite(value))
            and {"<": value < threshold, ">=": value >= threshold, "<=": value <= threshold}[op]
        )
        made.append(
            {"check": label, "statistic": stat, "rule": f"{op} {threshold}", "value": value, "passed": ok}
        )
        if not ok:
            at = f" (at {where})" if where is not None else ""
            failed.append(f"{label} = {value:.5g}{at} violates {op} {threshold}")
    return made, failed


def summarize_diagnostics(
    per_coord: dict[str, np.ndarray], names: list[str], stats: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The gate's statistics from per-coordinate R̂/ESS (:func:`_diagnostics`) and the sampler's
    per-draw stats ``(C, S)`` (``diverging``, ``energy``, ``num_steps``): worst values and where."""
    rhat, ess_b, ess_t = per_coord["rhat"], per_coord["ess_bulk"], per_coord["ess_tail"]
    ebfmi = np.asarray(az.bfmi(stats["energy"]), np.float64)
    nan_max = lambda a: int(np.nanargmax(a)) if np.isfinite(a).any() else 0  # noqa: E731
    nan_min = lambda a: int(np.nanargmin(a)) if np.isfinite(a).any() else 0  # noqa: E731
    return {
        "rhat_max": float(np.max(rhat)) if np.isfinite(rhat).all() else float("nan"),
        "rhat_argmax": names[nan_max(rhat)],
        "ess_bulk_min": float(np.min(ess_b)) if np.isfinite(ess_b).all() else float("nan"),
        "ess_bulk_argmin": names[nan_min(ess_b)],
        "ess_tail_min": float(np.min(ess_t)) if np.isfinite(ess_t).all() else float("nan"),
        "ess_tail_argmin": names[nan_min(ess_t)],
        "divergences": int(np.sum(stats["diverging"])),
        "ebfmi_min": float(np.min(ebfmi)),
        "ebfmi_argmin": f"chain {int(np.argmin(ebfmi))}",
        "ebfmi": ebfmi.tolist(),
        "mean_leapfrog_steps": float(np.mean(stats["num_steps"])),
    }


def natural_summary(post: Posterior) -> dict[str, Any]:
    """Moments, diagnostics and the gate of a sampler that reports natural quantities only (Stan):
    ``natural_mean``/``natural_sd``/``natural_mcse`` by Stan name, and, where the sampler gives its
    per-draw stats (NUTS), ``diagnostics``, ``checks_made`` and ``failed_checks`` as
    :func:`from_posterior` makes them."""
    first = next(iter(post.natural.values()))
    C, S = np.shape(first)[:2]
    names, nat = flat_names({k: np.reshape(v, (C * S, *np.shape(v)[2:])) for k, v in post.natural.items()})
    out: dict[str, Any] = {
        "natural_mean": dict(zip(names, nat.mean(axis=0).tolist(), strict=True)),
        "natural_sd": dict(zip(names, nat.std(axis=0, ddof=1).tolist(), strict=True)),
    }
    if not {"diverging", "energy", "num_steps"} <= set(post.stats) or C * S < 4:
        return out  # an optimizer (ADVI, Pathfinder): no chains to diagnose
    per_coord = _diagnostics(nat.reshape(C, S, -1))
    diag = summarize_diagnostics(per_coord, names, post.stats)
    checks, failed = apply_gate(diag)
    out["natural_mcse"] = dict(zip(names, per_coord["mcse_mean"].tolist(), strict=True))
    return out | {"diagnostics": diag, "checks_made": checks, "failed_checks": failed}


def from_posterior(
    dataset: str, model: HierModel, post: Posterior, key: str, command: str
) -> tuple[Reference, np.ndarray | None]:
    """Summarize, diagnose and gate a sampler's output.  Returns the reference and the draws
    ``(C·S, G + N·L)`` float32 to store (None when too large)."""
    C, S = post.theta.shape[:2]
    G, N, L = model.dim_global, model.num_groups, model.dim_local
    w = np.concatenate([post.theta, post.z.reshape(C, S, N * L)], axis=-1)  # (C, S, D)
    nat_names, nat = flat_names({k: v.reshape(C * S, *v.shape[2:]) for k, v in post.natural.items()})
    nat = nat.reshape(C, S, -1)
    unc_names = [f"theta_u[{k + 1}]" for k in range(G)] + [
        f"z_u[{i + 1},{k + 1}]" for i in range(N) for k in range(L)
    ]
    names = unc_names + nat_names
    both = _diagnostics(np.concatenate([w, nat], axis=-1))
    d_unc = {k: v[: w.shape[-1]] for k, v in both.items()}
    d_nat = {k: v[w.shape[-1] :] for k, v in both.items()}
    diag = summarize_diagnostics(both, names, post.stats)
    checks, failed = apply_gate(diag)
    draws_made = int(C * S)
    flat = w.reshape(C * S, -1)
    q = np.quantile(flat, QUANTILE_LEVELS, axis=0)
    mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    nat_flat = nat.reshape(C * S, -1)
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "dataset": dataset,
        "data_params": model.params,
        "data_sha256": data_fingerprint(model),
        "source": post.settings.get("sampler", "mcmc"),
        "settings": post.settings,
        "key_settings": {k: v for k, v in post.settings.items() if k not in RUN_OUTCOMES},
        "draws_made": draws_made,
        "compile_s": post.compile_s,
        "sample_s": post.sample_s,
        "diagnostics": diag,
        "gate": GATE,
        "checks_made": checks,
        "accepted": not failed,
        "failed_checks": failed,
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "env": env_info("float64"),
    }
    ref = Reference(
        source=meta["source"],
        global_mean=mean[:G],
        global_sd=sd[:G],
        global_mcse=d_unc["mcse_mean"][:G],
        global_q=q[:, :G],
        local_mean=mean[G:].reshape(N, L),
        local_sd=sd[G:].reshape(N, L),
        local_mcse=d_unc["mcse_mean"][G:].reshape(N, L),
        local_q=q[:, G:].reshape(-1, N, L),
        natural_names=nat_names,
        natural_mean=nat_flat.mean(axis=0),
        natural_sd=nat_flat.std(axis=0, ddof=1),
        natural_mcse=d_nat["mcse_mean"],
        accepted=not failed,
        failed_checks=failed,
        meta=meta,
    )
    draws = flat.astype(np.float32) if flat.size <= MAX_STORED_FLOATS else None
    return ref, draws


# --------------------------------------------------------------------------- the store
_ARRAYS = (
    "global_mean global_sd global_mcse global_q local_mean local_sd local_mcse local_q "
    "natural_mean natural_sd natural_mcse"
).split()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def paths(root: Path, dataset: str, key: str) -> tuple[Path, Path]:
    """The (json, npz) files of a reference."""
    base = Path(root) / dataset / key[:16]
    return base.with_suffix(".json"), base.with_suffix(".npz")


def save(ref: Reference, draws: np.ndarray | None, root: Path = DEFAULT_ROOT) -> Path:
    """Write the arrays, then the JSON that vouches for them (both atomically)."""
    meta_path, npz_path = paths(root, ref.meta["dataset"], ref.meta["key"])
    arrays = {name: np.asarray(getattr(ref, name)) for name in _ARRAYS}
    arrays["quantile_levels"] = QUANTILE_LEVELS
    if draws is not None:
        arrays["draws"] = draws
    atomic_write(npz_path, lambda fh: np.savez_compressed(fh, **arrays))
    meta = dict(ref.meta) | {
        "natural_names": ref.natural_names,
        "npz_file": npz_path.name,
        "npz_sha256": _sha256(npz_path),
        "has_draws": draws is not None,
    }
    text = json.dumps(to_jsonable(meta), indent=1, allow_nan=False) + "\n"
    atomic_write_text(meta_path, text)
    write_index(root)
    return meta_path


INDEX_FILE = "index.json"


def _command_params(command: str, flag: str) -> dict[str, Any]:
    """The ``flag k=v`` pairs of a :func:`regenerate_command` (values JSON-decoded where they parse)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return {}
    out = {}
    for flag_word, pair in zip(words, words[1:], strict=False):
        if flag_word == flag and "=" in pair:
            key, value = pair.split("=", 1)
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def index_entries(root: Path = DEFAULT_ROOT) -> dict[str, list[dict[str, Any]]]:
    """Every stored reference under ``root`` by dataset name, as posteriordb names its posteriors.

    Each entry gives the ``key``, the ``data_params`` and ``seed`` it was built for, the ``method``
    and the ``method_params`` given on its regenerate command, whether it passed its gate
    (``accepted``), when it was made and its ``files`` relative to ``root``.  Unreadable JSON files
    are left out (:func:`load` reports them).
    """
    root = Path(root)
    index: dict[str, list[dict[str, Any]]] = {}
    for meta_path in sorted(root.glob("*/*.json")):
        try:
            meta = json.loads(meta_path.read_text())
            dataset, key = meta["dataset"], meta["key"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue
        settings = meta.get("settings") or {}
        command = meta.get("command", "")
        folder = meta_path.parent.name
        index.setdefault(dataset, []).append(
            {
                "key": key,
                "data_params": meta.get("data_params", {}),
                "seed": settings.get("seed"),
                "method": "nuts" if command.startswith("hierbench reference") else meta.get("source"),
                "method_params": _command_params(command, "--method-param"),
                "source": meta.get("source"),
                "accepted": bool(meta.get("accepted")),
                "created": meta.get("created"),
                "files": {"meta": f"{folder}/{meta_path.name}", "arrays": f"{folder}/{meta.get('npz_file')}"},
            }
        )
    for entries in index.values():
        entries.sort(key=lambda e: (json.dumps(e["data_params"], sort_keys=True), str(e["seed"]), e["key"]))
    return dict(sorted(index.items()))


def write_index(root: Path = DEFAULT_ROOT) -> Path:
    """Rewrite ``root/index.json`` from the stored metadata (:func:`index_entries`), atomically.

    Called by :func:`save`, so the index is always current; the lock makes concurrent builds
    (``hierbench references --jobs K``) write it one at a time, each from a fresh scan.
    """
    root = Path(root)
    with file_lock(root / f"{INDEX_FILE}.lock"):
        text = json.dumps(to_jsonable(index_entries(root)), indent=1, allow_nan=False) + "\n"
        return atomic_write_text(root / INDEX_FILE, text)


def load(meta_path: Path, expect_key: str | None = None, model: HierModel | None = None) -> Reference:
    """Load a stored reference, re-checking everything it vouches for.

    Every load verifies that the key is the hash of the reference's own inputs (and its file name),
    that it is ``expect_key`` and built on ``model``'s data where given, and the arrays' sha256; then
    it re-applies the gate to the stored diagnostics (:func:`apply_gate`), so an edited verdict or
    edited diagnostics never let a reference through: ``accepted``, ``checks_made`` and
    ``failed_checks`` are the gate's, not the file's.

    Raises
    ------
    ValueError
        If the file is unreadable, corrupt (hash mismatch), edited (key not its inputs' hash) or stale
        (key or data mismatch).
    """
    meta_path = Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable reference {meta_path}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"reference {meta_path} has format {found!r}, expected {FORMAT_VERSION}")
    try:
        own_key = key_of_meta(meta)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"corrupt reference {meta_path}: its inputs are incomplete ({err})") from err
    if meta.get("key") != own_key or meta_path.stem != str(meta.get("key"))[:16]:
        raise ValueError(
            f"corrupt reference {meta_path}: its key is not the hash of its inputs (the file was edited)"
        )
    if expect_key is not None and meta["key"] != expect_key:
        raise ValueError(f"stale reference {meta_path}: its inputs changed (key mismatch)")
    if model is not None and meta["data_sha256"] != data_fingerprint(model):
        raise ValueError(f"stale reference {meta_path}: built on other data than this model's")
    npz_path = meta_path.with_name(meta.get("npz_file", ""))
    if not npz_path.is_file() or _sha256(npz_path) != meta.get("npz_sha256"):
        raise ValueError(f"corrupt reference {meta_path}: {npz_path.name} is missing or its sha256 differs")
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in _ARRAYS}
    meta.pop("npz_sha256")
    checks, failed = regate(meta)
    meta |= {"checks_made": checks, "failed_checks": failed, "accepted": not failed}
    return Reference(
        source=meta["source"],
        natural_names=list(meta.pop("natural_names")),
        accepted=not failed,
        failed_checks=failed,
        meta=meta,
        **arrays,
    )


def regate(meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The gate re-applied to a stored reference's diagnostics; also fails a verdict the file states
    against its own diagnostics, and ESS beyond what its draws allow."""
    diag = meta.get("diagnostics") or {}
    try:
        checks, failed = apply_gate(diag)
    except (KeyError, TypeError) as err:
        return [], [f"diagnostics missing or malformed ({err})"]
    settings = meta.get("settings") or {}
    draws = meta.get("draws_made") or (settings.get("chains") or 0) * (settings.get("draws") or 0)
    # antithetic chains can exceed the number of draws a little; ten times cannot happen
    if draws and max(diag.get("ess_bulk_min") or 0, diag.get("ess_tail_min") or 0) > 10 * draws:
        failed.append(f"ESS above 10× the {draws} draws made: the diagnostics do not fit the run")
    if bool(meta.get("accepted")) and failed:
        failed.append("the stored verdict said accepted: the file disagrees with its own diagnostics")
    return checks, failed


def load_draws(meta_path: Path) -> np.ndarray | None:
    """The stored float32 draws ``(C·S, G + N·L)`` of a reference, if it kept them."""
    meta = json.loads(Path(meta_path).read_text())
    with np.load(Path(meta_path).with_name(meta["npz_file"]), allow_pickle=False) as z:
        return z["draws"] if "draws" in z else None


def get_or_build(
    dataset: str,
    model: HierModel,
    sampler: Sampler,
    seed: int,
    method_params: dict[str, Any],
    root: Path = DEFAULT_ROOT,
    rebuild: bool = False,
    log=print,
) -> tuple[Reference, Path, bool]:
    """The stored reference for these inputs, or a new NUTS run stored first.

    Returns (reference, its JSON path, whether it was built now).  A corrupt or stale file is reported
    through ``log`` and rebuilt.
    """
    key = reference_key(dataset, model, sampler.config, seed)
    meta_path, _ = paths(root, dataset, key)
    if meta_path.exists() and not rebuild:
        try:
            return load(meta_path, expect_key=key), meta_path, False
        except ValueError as err:
            log(f"{err}; rebuilding it")
    post = sampler.run(seed)
    command = regenerate_command(dataset, model.params, seed, method_params)
    ref, draws = from_posterior(dataset, model, post, key, command)
    save(ref, draws, root)
    return ref, meta_path, True


def find_accepted(dataset: str, model: HierModel, root: Path = DEFAULT_ROOT) -> tuple[Reference | None, str]:
    """The ground truth for scoring ``model``: its exact posterior, else an accepted stored reference
    for the same data (the one with the largest minimum bulk ESS).  Returns (reference, note)."""
    if model.exact is not None:
        return exact_reference(model), "exact posterior"
    folder = Path(root) / dataset
    if not folder.is_dir():
        return None, f"no reference stored under {folder}"
    fingerprint = data_fingerprint(model)
    best, best_ess, notes = None, -1.0, []
    for meta_path in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            notes.append(f"{meta_path.name}: unreadable")
            continue
        if not isinstance(meta, dict) or meta.get("data_sha256") != fingerprint:
            continue
        try:
            ref = load(meta_path, model=model)  # re-checks the key, the arrays and the gate
        except ValueError as err:
            notes.append(str(err))
            continue
        if not ref.accepted:
            notes.append(f"{meta_path.name}: refused ({'; '.join(ref.failed_checks)})")
            continue
        ess = float(ref.meta["diagnostics"].get("ess_bulk_min") or 0.0)
        if ess > best_ess:
            best, best_ess = ref, ess
    if best is None:
        return None, "no accepted reference for these data" + (f" ({'; '.join(notes)})" if notes else "")
    return best, f"{best.meta['source']} reference {best.meta['key'][:16]}"


# --------------------------------------------------------------------------- every dataset at once
# Datasets without a reference at their default size: `make references` skips them (movielens-synth:
# 500 users are 10,040 coordinates, far beyond the 20-minute NUTS budget; it exists for the scale runs).
NO_REFERENCE = frozenset({"movielens-synth"})


def reference_datasets() -> list[str]:
    """The registered datasets whose default instance gets a reference (all but :data:`NO_REFERENCE`)."""
    from hierbench.datasets import DATASETS

    return [name for name in DATASETS if name not in NO_REFERENCE]


# Rough single-core costs (s) on the reference machine, to start the longest builds first; a dataset
# missing here (e.g. one a user added) is scheduled first, as if it were the longest.
BUILD_COST_HINT_S = {
    "chem97": 700,
    "movielens-small": 450,
    "radon": 110,
    "hier-logistic": 100,
    "eight-schools": 15,
    "hier-linear": 5,  # exact posterior: nothing to sample
}


def build_all(
    root: Path = DEFAULT_ROOT,
    datasets: list[str] | None = None,
    jobs: int | None = None,
    rebuild: bool = False,
    log=print,
) -> int:
    """Build (or load) the reference of every dataset (:func:`reference_datasets`) at its default
    size, ``jobs`` at a time.

    Each build is a ``hierbench reference --skip-exact`` subprocess, longest first
    (:data:`BUILD_COST_HINT_S`); with ``jobs > 1`` each is pinned to an equal share of the cores.
    One at a time is the default: on two cores XLA's intra-op threads already use both, and two
    builds pinned to one core each were slower overall (measured: movielens-small 738 s on one core
    against about 330 s on two; chem97 over 1,100 s against about 550 s).  Each build's output goes
    to ``root/<dataset>.log`` and its summary CSV to ``root/<dataset>.summary.csv``.  Returns the
    number of datasets refused or failed.
    """
    import subprocess
    import sys
    import time

    names = list(datasets or reference_datasets())
    names.sort(key=lambda n: -BUILD_COST_HINT_S.get(n, float("inf")))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    jobs = max(1, min(jobs or 1, len(names)))
    share = max(1, len(cpus) // jobs)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(names), {}, []
    free = list(range(jobs))
    t0 = time.perf_counter()
    while pending or running:
        while pending and free:
            name, slot = pending.pop(0), free.pop(0)
            cmd = [sys.executable, "-m", "hierbench.cli", "reference", "--dataset", name, "--skip-exact"]
            cmd += ["--references", str(root), "--summary", str(root / f"{name}.summary.csv")]
            cmd += ["--rebuild"] if rebuild else []
            cpu = set(cpus[slot * share : (slot + 1) * share]) if jobs > 1 and len(cpus) >= jobs else None
            pin = (lambda c=cpu: os.sched_setaffinity(0, c)) if cpu else None
            logfile = open(root / f"{name}.log", "w")  # noqa: SIM115 (closed when the build ends)
            proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, preexec_fn=pin)
            running[proc] = (name, slot, logfile, time.perf_counter())
            where = f" on cpus {sorted(cpu)}" if cpu else ""
            log(f"[{time.perf_counter() - t0:5.0f}s] {name}: started{where} (log: {root / f'{name}.log'})")
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            name, slot, logfile, started = running.pop(proc)
            logfile.close()
            free.append(slot)
            verdict = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            if proc.returncode != 0:
                failed.append(name)
            last = (root / f"{name}.log").read_text().strip().splitlines()
            headline = next((line for line in last if line.startswith(f"{name}:")), "")
            took = time.perf_counter() - started
            log(f"[{time.perf_counter() - t0:5.0f}s] {name}: {verdict} in {took:.0f}s")
            if headline:
                log(f"        {headline}")
    log(f"references: {len(names)} datasets in {time.perf_counter() - t0:.0f}s with {jobs} worker(s)")
    if failed:
        log(f"references refused or failed: {' '.join(failed)} (see their .log files)")
    return len(failed)
