"""The paper's figures and tables from stored records (hierbench.reports.paper): every artifact is
written, the numbers in the tables are the records', time to target interpolates, infeasible cells and
missing experiments are reported, never crashed on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierbench.records import append_record, read_records
from hierbench.reports import paper

SHA = "0123456789abcdef0123456789abcdef01234567"
GIB = 2**30


def env(experiment: str, dirty: bool = False) -> dict:
    return {
        "git_sha": SHA,
        "git_dirty": dirty,
        "argv": [".venv/bin/hierbench", "sweep", experiment],
        "time_utc": "2026-12-01T00:00:00+00:00",
    }


def record(
    experiment: str,
    label: str,
    method: str,
    N: int,
    *,
    seed: int = 0,
    method_params: dict | None = None,
    status: str = "ok",
    trace: list[tuple[float, float]] | None = None,
    elbo_se: float = 0.01,
    log_evidence: float | None = None,
    dataset: str = "hier-linear",
    **extra,
) -> dict:
    """A valid record (:mod:`hierbench.records`); ``trace`` is [(wall_s, elbo)], steps 0, 100, 200, ..."""
    points = [
        {"step": 100 * k, "wall_s": t, "elbo": e, "elbo_se": elbo_se, "train_neg_elbo": None}
        for k, (t, e) in enumerate(trace or [])
    ]
    elbo = points[-1]["elbo"] if points and status == "ok" else None
    kl = log_evidence - elbo if log_evidence is not None and elbo is not None else None
    steps = points[-1]["step"] if points else 0
    wall = points[-1]["wall_s"] if points else 0.0
    rec = {
        "record_id": f"{experiment}-{label}-{N}-{seed}-{dataset}",
        "method": method,
        "dataset": dataset,
        "data_params": {"N": N, "n": 20, "d": 2, "seed": 0},
        "method_params": dict(method_params or {}),
        "seed": seed,
        "status": status,
        "elbo": elbo,
        "elbo_se": elbo_se if elbo is not None else None,
        "log_evidence": log_evidence,
        "kl": kl,
        "kl_per_group": kl / N if kl is not None else None,
        "global_mean": None,
        "global_sd": None,
        "steps": steps,
        "grad_evals": steps,
        "wall_s": wall,
        "compile_s": 1.5,
        "steps_per_s": steps / wall if wall else None,
        "trace": points,
        "num_groups": N,
        "env": env(experiment),
        "experiment": experiment,
        "cell_id": f"{label}|{N}|{seed}|{dataset}",
        "label": label,
        "quick": False,
    }
    return rec | extra


LOGZ = {10: -500.0, 100: -5000.0}
SCALING_TRACES = {  # (label, N) -> (method, method_params, [(wall_s, elbo)])
    ("dense", 10): ("dense", {"max_dim": 200}, [(0, -900), (1, -505), (3, -500.03)]),
    ("meanfield", 10): ("meanfield", {}, [(0, -900), (1, -520), (2, -510)]),
    ("branch (full data)", 10): ("branch", {}, [(0, -900), (1, -520), (2, -500.5), (4, -500.02)]),
    ("amortized (potential)", 10): (
        "amortized",
        {"head": "potential", "batch_groups": 32},
        [(0, -900), (0.5, -600), (1, -501), (2, -500.01)],
    ),
    ("meanfield", 100): ("meanfield", {}, [(0, -9000), (2, -5200), (4, -5100)]),
    ("branch (full data)", 100): ("branch", {}, [(0, -9000), (10, -5000.5), (20, -5000.0)]),
    ("amortized (potential)", 100): (
        "amortized",
        {"head": "potential", "batch_groups": 32},
        [(0, -9000), (1, -5100), (2, -4999.99)],
    ),
}


def scaling_records() -> list[dict]:
    recs = [
        record("scaling", lab, method, N, method_params=mp, trace=tr, log_evidence=LOGZ[N])
        for (lab, N), (method, mp, tr) in SCALING_TRACES.items()
    ]
    infeasible = record("scaling", "dense", "dense", 100, method_params={"max_dim": 200}, status="infeasible")
    infeasible |= {
        "memory_bytes": 3 * GIB,
        "error": "dense needs a 1010x1010 Cholesky factor",
        "compile_s": None,
    }
    return recs + [infeasible]


ACC = {  # (label, N) -> per seed (kl_per_group, global err, local err); seed 2 of branch N=100 diverges
    ("meanfield", 10): [(1.0, 0.1, 0.2), (1.2, 0.3, 0.25), (1.1, 0.2, 0.3)],
    ("branch (full data)", 10): [(0.01, 0.02, 0.03), (0.02, 0.01, 0.04), (0.03, 0.03, 0.02)],
    ("meanfield", 100): [(1.5, 0.05, 0.2), (1.4, 0.06, 0.22), (1.6, 0.04, 0.21)],
    ("branch (full data)", 100): [(0.001, 0.01, 0.02), (0.003, 0.02, 0.03), None],
}


def accuracy_records() -> list[dict]:
    recs = []
    for (lab, N), seeds in ACC.items():
        for seed, values in enumerate(seeds):
            method = lab.split()[0]
            if values is None:
                recs.append(
                    record("accuracy", lab, method, N, seed=seed, status="diverged", trace=[(0, -1e3)])
                )
                continue
            kl, g, loc = values
            rec = record("accuracy", lab, method, N, seed=seed, trace=[(0, -1e4), (1, -1e3)])
            rec |= {
                "kl_per_group": kl,
                "kl": kl * N,
                "accuracy": {
                    "global": {"std_mean_err_mean": g, "sd_ratio_err_mean": g / 2},
                    "local": {"std_mean_err_mean": loc, "sd_ratio_err_mean": loc / 2},
                    "psis_khat": 0.5,
                },
            }
            recs.append(rec)
    dense = record("accuracy", "dense", "dense", 100, status="infeasible") | {"memory_bytes": 0.5 * GIB}
    return recs + [dense]


def movielens_records() -> list[dict]:
    recs = []
    for dataset, N in (("movielens-small", 20), ("movielens-small", 671), ("movielens-synth", 1000)):
        for k, (lab, method) in enumerate(
            (("meanfield", "meanfield"), ("amortized (potential)", "amortized"))
        ):
            rec = record(
                "movielens",
                lab,
                method,
                N,
                dataset=dataset,
                trace=[(0, -10.0 * N), (1 + k, -7.0 * N), (2 + k, -6.5 * N + k)],
            )
            if dataset == "movielens-synth" and k == 1:  # trace points that carry the held-out density
                for point in rec["trace"]:
                    point["heldout_lpd_per_obs"] = -0.7 + 0.01 * point["step"] / 100
            recs.append(
                rec | {"heldout_lpd_per_obs": -0.6 - 0.01 * k - N / 1e5, "data_params": {"num_users": N}}
            )
    return recs


THETA_KL = {  # (head, conditioned, N) -> per seed KL/N
    ("potential", True, 10): [0.01, 0.03],
    ("potential", False, 10): [0.5, 0.7],
    ("potential", True, 100): [0.002, 0.004],
    ("potential", False, 100): [0.05, 0.04],
    ("moments", True, 10): [2.0, 2.2],
    ("moments", False, 10): [2.5, 2.9],
    ("moments", True, 100): [1.0, 1.1],
    ("moments", False, 100): [1.05, 1.3],
}


def theta_records() -> list[dict]:
    recs = []
    for (head, cond, N), kls in THETA_KL.items():
        for seed, kl in enumerate(kls):
            mp = {"head": head, "batch_groups": 32, "condition_on_theta": cond}
            lab = f"amortized head={head} batch_groups=32 condition_on_theta={cond}"
            rec = record(
                "theta_collapse", lab, "amortized", N, seed=seed, method_params=mp, trace=[(0, -1e4)]
            )
            recs.append(rec | {"kl_per_group": kl, "kl": kl * N})
    return recs


MAKERS = {
    "scaling": scaling_records,
    "accuracy": accuracy_records,
    "movielens": movielens_records,
    "theta_collapse": theta_records,
}


def write_records(root: Path, experiment: str, records: list[dict], quick: bool = False) -> Path:
    path = paper.records_path(root, experiment, quick)
    for rec in records:
        append_record(path, rec)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Records of all four experiments, and the paper made from them (once for the module)."""
    root = tmp_path_factory.mktemp("sweeps")
    for exp, maker in MAKERS.items():
        write_records(root, exp, maker())
    out = tmp_path_factory.mktemp("paper")
    result = paper.make_paper(out, root)
    return root, out, result


def test_every_artifact_is_written_and_indexed(made):
    _, out, result = made
    assert not result.missing
    expected = []
    for fig, table in paper.STEMS.values():
        expected += [f"{fig}.png", f"{fig}.pdf", f"{table}.md", f"{table}.csv"]
    written = sorted(p.name for paths in result.artifacts.values() for p in paths)
    assert written == sorted(expected)
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    for fig, _ in paper.STEMS.values():
        assert (out / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{fig}.pdf").read_bytes()[:5] == b"%PDF-"
    index = (out / "README.md").read_text()
    assert result.index == out / "README.md"
    for name in expected:
        assert name in index, name
    assert f"git {SHA[:12]} (clean)" in index
    assert "`hierbench sweep scaling`" in index  # the command that made the records, from env.argv
    assert f"hierbench figures --out {out}" in index
    for exp in paper.EXPERIMENTS:
        assert f"{paper.records_path(made[0], exp)}" in index
    # every table names its records and the command in its header
    for exp, (_, table) in paper.STEMS.items():
        head = (out / f"{table}.md").read_text().split("\n\n")[1]
        assert str(paper.records_path(made[0], exp)) in head and "hierbench figures" in head


def expected_time(trace: list[tuple[float, float]], target: float) -> float | None:
    """Time to target on a rising trace, computed independently with np.interp."""
    t, e = np.array(trace, dtype=float).T
    if e.max() < target:
        return None
    return float(np.interp(target, e, t))


def test_scaling_table_is_the_records_numbers(made):
    _, out, _ = made
    table = pd.read_csv(out / "table1_scaling.csv")
    assert len(table) == len(SCALING_TRACES) + 1
    for (lab, N), (_, _, trace) in SCALING_TRACES.items():
        row = table[(table["method"] == lab) & (table["N"] == N)].iloc[0]
        best = max(tr[-1][1] for (_, n), (_, _, tr) in SCALING_TRACES.items() if n == N)
        assert row["status"] == "ok"
        assert row["best_final_elbo"] == pytest.approx(best)
        assert row["kl"] == pytest.approx(LOGZ[N] - trace[-1][1])
        assert row["kl_per_group"] == pytest.approx((LOGZ[N] - trace[-1][1]) / N)
        for col, target in (
            ("t_within_1pct_s", best - 0.01 * abs(best)),
            ("t_within_0.1_per_group_s", best - 0.1 * N),
        ):
            want = expected_time(trace, target)
            if want is None:
                assert math.isnan(row[col]), (lab, N, col)
            else:
                assert row[col] == pytest.approx(want), (lab, N, col)
    # meanfield at N=10 ends at -510: never within 0.1 nats/group (-501.01), but within 1% (-505.01)? no
    mf = table[(table["method"] == "meanfield") & (table["N"] == 10)].iloc[0]
    assert math.isnan(mf["t_within_0.1_per_group_s"]) and math.isnan(mf["t_within_1pct_s"])


def test_infeasible_cell_is_shown_as_infeasible(made):
    _, out, _ = made
    table = pd.read_csv(out / "table1_scaling.csv")
    dense = table[(table["method"] == "dense") & (table["N"] == 100)].iloc[0]
    assert dense["status"] == "infeasible (needs 3 GiB)"
    assert math.isnan(dense["elbo"]) and math.isnan(dense["t_within_1pct_s"])
    md = (out / "table1_scaling.md").read_text()
    assert "infeasible (needs 3 GiB)" in md
    acc = pd.read_csv(out / "table2_accuracy.csv")
    assert acc[(acc["method"] == "dense")].iloc[0]["status"] == "infeasible (needs 0.5 GiB)"


def test_headline_ratio_rule():
    recs = scaling_records()
    rows = paper.headline_ratio(recs, n=10)
    assert len(rows) == 1
    row = rows[0]
    assert row["N"] == 10 and row["seed"] == 0
    # branch ends at -500.02 with se 0.01: target -500.02 - max(3 * 0.01, 1e-3) = -500.05
    assert row["target"] == pytest.approx(-500.05)
    branch = SCALING_TRACES[("branch (full data)", 10)][2]
    amortized = SCALING_TRACES[("amortized (potential)", 10)][2]
    assert row["t_slow_s"] == pytest.approx(expected_time(branch, -500.05))  # 2 + 0.45/0.48 * 2
    assert row["t_fast_s"] == pytest.approx(expected_time(amortized, -500.05))  # 1 + 0.95/0.99
    assert row["ratio"] == pytest.approx(row["t_slow_s"] / row["t_fast_s"])
    assert row["ratio"] > 1
    # no N = 10^4 pair: the largest N with one, and the sentence says so
    fallback = paper.headline_ratio(recs)
    assert [r["N"] for r in fallback] == [100] and fallback[0]["requested_n"] == 10_000
    sentence = paper.headline_sentence(fallback)
    assert "no N=10,000 pair" in sentence and f"{fallback[0]['ratio']:.3g}×" in sentence
    # amortized that never gets there: no ratio, said in words
    slow_amortized = [
        r | {"trace": r["trace"][:2], "elbo": r["trace"][1]["elbo"]} if paper.is_amortized_potential(r) else r
        for r in recs
    ]
    never = paper.headline_ratio(slow_amortized, n=10)[0]
    assert never["t_fast_s"] is None and never["ratio"] is None
    assert "never does" in paper.headline_sentence([never])
    assert "not computable" in paper.headline_sentence(paper.headline_ratio(recs[:1]))
    assert "1 of 1 seeds have no ratio" in paper.headline_sentence([never])


def test_headline_for_the_papers_net_and_the_potential_head():
    """The headline is given for each amortized head that has runs (the paper's net first), each with its
    own spread over seeds."""
    recs = scaling_records()
    moments = [
        r | {"label": "amortized (moments)", "method_params": r["method_params"] | {"head": "moments"}}
        for r in recs
        if paper.is_amortized_potential(r)
    ]
    rows = [
        row
        for fast in (paper.is_amortized_moments, paper.is_amortized_potential)
        for row in paper.headline_ratio(recs + moments, n=10, fast=fast)
    ]
    assert [row["fast_label"] for row in rows] == ["amortized (moments)", "amortized (potential)"]
    sentence = paper.headline_sentence(rows)
    assert sentence.index("amortized (moments): Over 1 seed(s)") < sentence.index(
        "amortized (potential): Over 1 seed(s)"
    )
    assert not any(paper.is_amortized_potential(r) for r in moments)


def test_headline_spread_over_seeds():
    rows = [{"ratio": r} for r in (2.0, 8.0, None, 4.0)]
    expected = "Over 3 seeds: median **4×**, range 2–8×; 1 of 4 seeds have no ratio."
    assert paper.headline_spread(rows) == expected
    assert "one seed, no spread" in paper.headline_spread(rows[:1])


def test_scaling_markdown_has_the_headline(made):
    _, out, result = made
    md = (out / "table1_scaling.md").read_text()
    assert result.headline and result.headline[0]["N"] == 100
    assert paper.headline_sentence(result.headline) in md


def test_accuracy_table_is_mean_and_sd_over_seeds(made):
    _, out, _ = made
    table = pd.read_csv(out / "table2_accuracy.csv")
    for (lab, N), seeds in ACC.items():
        row = table[(table["method"] == lab) & (table["N"] == N)].iloc[0]
        ok = np.array([v for v in seeds if v is not None])
        assert row["seeds"] == len(seeds) and row["seeds_ok"] == len(ok)
        for k, col in enumerate(("kl_per_group", "global_std_mean_err", "local_std_mean_err")):
            assert row[f"{col}_mean"] == pytest.approx(ok[:, k].mean())
            assert row[f"{col}_sd"] == pytest.approx(ok[:, k].std(ddof=1))
        assert row["global_sd_ratio_err_mean"] == pytest.approx(ok[:, 1].mean() / 2)
    diverged = table[(table["method"] == "branch (full data)") & (table["N"] == 100)].iloc[0]
    assert diverged["status"] == "2 ok, 1 diverged"
    md = (out / "table2_accuracy.md").read_text()
    kl = np.array([v[0] for v in ACC[("meanfield", 10)]])
    assert f"{kl.mean():.3g} ± {kl.std(ddof=1):.3g}" in md


def test_movielens_table_covers_every_dataset(made):
    _, out, _ = made
    table = pd.read_csv(out / "table3_movielens.csv")
    recs = movielens_records()
    assert sorted(set(table["dataset"])) == ["movielens-small", "movielens-synth"]
    assert len(table) == len(recs)
    for rec in recs:
        row = table[
            (table["dataset"] == rec["dataset"])
            & (table["N"] == rec["num_groups"])
            & (table["method"] == rec["label"])
        ].iloc[0]
        assert row["heldout_lpd_per_obs"] == pytest.approx(rec["heldout_lpd_per_obs"])
        assert row["elbo"] == pytest.approx(rec["elbo"])
        assert row["wall_s"] == pytest.approx(rec["wall_s"])
    assert "± 0.010" in (out / "table3_movielens.md").read_text()


def test_theta_table_gap_is_paired_by_seed(made):
    _, out, _ = made
    table = pd.read_csv(out / "table4_theta_collapse.csv")
    assert len(table) == 4
    for head in ("potential", "moments"):
        for N in (10, 100):
            row = table[(table["head"] == head) & (table["N"] == N)].iloc[0]
            with_, without = np.array(THETA_KL[(head, True, N)]), np.array(THETA_KL[(head, False, N)])
            assert row["kl_per_group_with_theta_mean"] == pytest.approx(with_.mean())
            assert row["kl_per_group_without_theta_sd"] == pytest.approx(without.std(ddof=1))
            assert row["gap_mean"] == pytest.approx((without - with_).mean())
            assert row["gap_sd"] == pytest.approx((without - with_).std(ddof=1))
            assert row["gap_pairs"] == 2


def test_missing_experiments_give_the_message_and_the_others_are_made(tmp_path, capsys):
    root = tmp_path / "sweeps"
    write_records(root, "theta_collapse", theta_records())
    out = tmp_path / "paper"
    assert paper.main(["--out", str(out), "--records-root", str(root)]) == 0
    captured = capsys.readouterr()
    for exp in ("scaling", "accuracy", "movielens"):
        message = f"no records for experiment {exp}: run `make sweep EXP={exp}`"
        assert message in captured.err
        assert message in (out / "README.md").read_text()
    assert (out / "fig4_theta_collapse.png").is_file() and (out / "table4_theta_collapse.md").is_file()
    assert not (out / "fig1_scaling_gap.png").exists()


def test_quick_reads_the_quick_records(tmp_path, capsys):
    root = tmp_path / "sweeps"
    write_records(root, "theta_collapse", theta_records()[:4], quick=True)
    write_records(root, "theta_collapse", theta_records())  # the full records: not read under --quick
    out = tmp_path / "paper-quick"
    result = paper.make_paper(out, root, quick=True, experiments=["theta_collapse", "accuracy"])
    assert result.missing == {
        "accuracy": "no records for experiment accuracy: run `make sweep EXP=accuracy QUICK=1`"
    }
    md = (out / "table4_theta_collapse.md").read_text()
    assert "(quick records)" in md and "theta_collapse-quick" in md
    assert len(pd.read_csv(out / "table4_theta_collapse.csv")) == 1  # potential at N=10 only
    assert "--quick" in (out / "README.md").read_text()


def test_a_retried_cell_counts_once(tmp_path):
    recs = theta_records()
    error = dict(recs[0]) | {"status": "error", "kl_per_group": None, "error": "WorkerCrashed"}
    root = tmp_path / "sweeps"
    write_records(root, "theta_collapse", [error, *recs, dict(error)])  # error, retry ok, error again
    source = paper.load_source(root, "theta_collapse")
    assert source.read == len(recs) + 2 and len(source.records) == len(recs)
    assert [r["status"] for r in source.records if r["cell_id"] == recs[0]["cell_id"]] == ["ok"]
    assert paper.load_source(root, "scaling") is None


def test_real_sweep_records(tmp_path):
    """Records made by the real sweep (schema drift would show here): a tiny scaling-like grid with an
    infeasible dense cell and a branch run."""
    from hierbench.suites.sweep import run_sweep

    toml = tmp_path / "scaling.toml"
    toml.write_text(
        """
[defaults]
dataset = "hier-linear"
data_params = { N = 4, n = 3, d = 2 }
steps = 20
checkpoints = 2
eval_draws = 50

[[runs]]
label = "dense"
method = "dense"
method_params = { max_dim = 4 }

[[runs]]
label = "branch (full data)"
method = "branch"

"""
    )
    root = tmp_path / "sweeps"
    run_sweep(toml, paper.records_path(root, "scaling"), jobs=0, references=None, progress=False)
    records = read_records([paper.records_path(root, "scaling")])
    result = paper.make_paper(tmp_path / "paper", root, experiments=["scaling"])
    table = pd.read_csv(tmp_path / "paper" / "table1_scaling.csv")
    by_method = {row["method"]: row for _, row in table.iterrows()}
    assert by_method["dense"]["status"].startswith("infeasible (needs ")
    for rec in records:
        if rec["status"] == "ok":
            row = by_method[rec["label"]]
            assert row["kl_per_group"] == pytest.approx(rec["kl_per_group"])
            assert row["steps_per_s"] == pytest.approx(rec["steps_per_s"])
    assert result.headline == []  # no amortized run (it would double this test's time)
    assert (tmp_path / "paper" / "fig1_scaling_gap.pdf").is_file()


def test_a_panel_names_each_unplotted_method_once():
    """The seeds of one method that were not plotted for the same reason share one title line."""
    import matplotlib.pyplot as plt

    from hierbench.reports.paper.plotting import panel_title

    recs = [{"label": "dense", "status": "infeasible", "memory_bytes": 3 * 2**30}] * 3
    recs += [{"label": "branch", "status": "diverged"}, {"label": "branch", "status": "ok"}]
    fig, ax = plt.subplots()
    panel_title(ax, "N = 1,000", recs)
    lines = ax.get_title().split("\n")
    plt.close(fig)
    assert lines == [
        "N = 1,000",
        "not plotted: dense × 3:",
        "infeasible (needs 3 GiB)",
        "not plotted: branch:",
        "diverged",
    ]
