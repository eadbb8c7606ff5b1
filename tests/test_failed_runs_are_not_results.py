"""A run that did not end ok is never shown as a result: not in the scale study's table or figure, not
in a sweep's progress line, not in `hierbench run`'s line (its last scores stay in its record)."""

from __future__ import annotations

from hierbench.cli import _print_result
from hierbench.scale.report import latest_runs, summary_frame
from hierbench.suites.sweep import _outcome

BROKE_DOWN = "Var[log q] on q's own draws is 3.19e+109x the D/2 of every Gaussian: q's density broke down"


def _record(head: str, status: str, elbo: float, error: str | None = None) -> dict:
    return {
        "method": "amortized",
        "method_params": {"head": head},
        "dataset": "movielens-synth",
        "num_groups": 100,
        "backend": "jax",
        "status": status,
        "error": error,
        "elbo": elbo,
        "elbo_se": 1e57 if status != "ok" else 2.0,
        "kl": None,
        "kl_per_group": None,
        "heldout_lpd_per_obs": -0.82 if status != "ok" else -0.58,
        "steps": 5800,
        "wall_s": 564.0,
        "compile_s": 28.8,
        "steps_per_s": 10.3,
        "peak_rss_bytes": 2**31,
        "trace": [{"step": 0, "wall_s": 0.0, "elbo": -2e7}, {"step": 5800, "wall_s": 564.0, "elbo": elbo}],
    }


def test_a_diverged_run_has_no_score_in_the_scale_table_or_figure():
    ok = _record("potential", "ok", -1.32e7)
    bad = _record("moments", "diverged", 4.3e57, BROKE_DOWN)
    frame = summary_frame([ok, bad]).set_index("variant")
    assert frame.loc["potential", "elbo_per_user"] == -1.32e5
    assert frame.loc["potential", "heldout_lpd_per_obs"] == -0.58
    assert frame.loc["moments", "status"] == "diverged"
    for col in ("elbo_per_user", "elbo_se", "heldout_lpd_per_obs"):
        assert frame.loc["moments", col] is None or frame.loc["moments", col] != frame.loc["moments", col]
    assert [r["method_params"]["head"] for r in latest_runs([ok, bad])] == ["potential"]


def test_progress_lines_give_a_failed_runs_error_not_its_last_elbo(capsys):
    bad = _record("moments", "diverged", 4.3e57, BROKE_DOWN)
    line = _outcome(bad)
    assert line.startswith("diverged") and "4.3e+57" not in line and "ELBO" not in line
    assert "density broke down" in line
    assert "ELBO -1.32e+07" in _outcome(_record("potential", "ok", -1.32e7))
    _print_result(bad)
    out = capsys.readouterr().out
    assert "diverged" in out and "density broke down" in out and "ELBO" not in out
