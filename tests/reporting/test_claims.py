"""Claim verdicts follow their rules: each test builds collected CSVs with a known answer and checks the verdict."""

from pathlib import Path

import pandas as pd
import pytest

from encore.reporting import claims
from encore.reporting.claims import ENCORE, MEMIT, MPES, Study

LAYERS = [4, 5]
EDITS = list(range(0, 3001, 100))
SNAPSHOTS = [1000, 2000, 3000]


def _editing_rows(run, edits, values, protocol="counterfact/edited-so-far/nll-comparison"):
    return [
        {"method": run[0], "variant": run[1], "edits": edits, "metric": metric, "value": value, "protocol": protocol}
        for metric, value in values.items()
    ]


def write_study(
    directory: Path,
    norm=None,
    score=None,
    p_new=None,
    downstream=None,
    iterations=None,
    p_known=0.4,
    runs=(MEMIT, MPES, ENCORE),
) -> Path:
    """Collected CSVs of a study: ``norm[run](edits)`` the edited layers' norm, ``score[run](edits)`` the S
    (ES = PS = NS = S), ``p_new[run]``, ``downstream[run]`` the final average F1 x100 (unedited: 50),
    ``iterations[run]`` steps per edit (1 s per step)."""
    norm = norm or {}
    score, p_new, downstream, iterations = score or {}, p_new or {}, downstream or {}, iterations or {}
    metrics, norms, ledger, run_rows = [], [], [], []
    unedited = ("unedited", "unedited")
    metrics += _editing_rows(unedited, 0, {"ES": 30, "PS": 30, "NS": 70, "S": 40, "n_records": 100, "p_new": 0.01},
                             "counterfact/to-be-edited/nll-comparison")  # fmt: skip
    metrics += _editing_rows(
        unedited, 0, {"p_true_known": p_known, "n_known": 50}, "table1/to-be-edited/known-true-facts"
    )
    metrics += _editing_rows(
        unedited, 0, {"average.f1": 50.0}, "downstream/generate-3-tokens/weighted-f1-invalid-wrong"
    )
    for run in runs:
        grow = norm.get(run, lambda edits: 100.0)
        norms += [{"method": run[0], "variant": run[1], "order": 0, "edits": e, "batch": e // 100, "layer": layer,
                   "frobenius_norm": grow(e)} for e in EDITS for layer in LAYERS]  # fmt: skip
        for edits in SNAPSHOTS:
            s = score.get(run, lambda e: 80.0)(edits)
            values = {"ES": s, "PS": s, "NS": s, "S": s, "n_records": edits, "p_new": p_new.get(run, 0.5)}
            metrics += _editing_rows(run, edits, values)
            f1 = downstream.get(run, 50.0) if edits == SNAPSHOTS[-1] else 50.0
            metrics += _editing_rows(
                run, edits, {"average.f1": f1}, "downstream/generate-3-tokens/weighted-f1-invalid-wrong"
            )
        steps = iterations.get(run, 20)
        ledger += [{"method": run[0], "variant": run[1], "order": 0, "case_id": i, "batch": i // 100, "position": i,
                    "iterations": steps, "targets_s": steps * 100.0, "keys_s": 0.0, "solve_s": 0.0}
                   for i in range(3000)]  # fmt: skip
        run_rows.append({"method": run[0], "variant": run[1], "layers": " ".join(map(str, LAYERS))})
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(metrics).assign(experiment="x", model="m", dataset="counterfact", order=0)
    frame.to_csv(directory / "metrics.csv", index=False)
    pd.DataFrame(norms).to_csv(directory / "norms.csv", index=False)
    pd.DataFrame(ledger).to_csv(directory / "ledger.csv", index=False)
    pd.DataFrame(run_rows).to_csv(directory / "runs.csv", index=False)
    return directory


@pytest.mark.parametrize(
    "growth, verdict",
    [
        (lambda e: 100 + 1e-6 * e**2, "reproduced"),  # accelerating: last third grows 5x the first
        (lambda e: 100 + 1e-3 * e, "partly"),  # linear: grows, not faster
        (lambda e: 100 - 1e-3 * e, "not reproduced"),
    ],
)
def test_norm_growth_is_reproduced_only_when_it_accelerates(tmp_path, growth, verdict):
    study = Study(write_study(tmp_path, norm={MEMIT: growth}))
    assert claims.norm_growth(study).verdict == verdict


@pytest.mark.parametrize("fraction, verdict", [(0.4, "reproduced"), (0.8, "partly"), (1.2, "not reproduced")])
def test_norm_constraint_verdict_follows_encore_growth_relative_to_memit(tmp_path, fraction, verdict):
    norm = {MEMIT: lambda e: 100 + 1e-2 * e, ENCORE: lambda e: 100 + fraction * 1e-2 * e}
    claim = claims.norm_constraint(Study(write_study(tmp_path, norm=norm)))
    assert claim.verdict == verdict
    assert "MEMIT +30.00 (+30.0%) after 3000" in claim.measured


@pytest.mark.parametrize("mpes_probability, verdict", [(0.45, "reproduced"), (0.99, "not reproduced")])
def test_mpes_probability_is_reproduced_when_it_moves_towards_known_facts(tmp_path, mpes_probability, verdict):
    study = Study(write_study(tmp_path, p_new={MEMIT: 0.95, MPES: mpes_probability}, p_known=0.4))
    assert claims.mpes_probability(study).verdict == verdict


def test_mpes_probability_below_known_facts_is_only_partly_when_it_overshoots(tmp_path):
    # MEMIT 0.5 is 0.1 above known facts (0.4); MPES at 0.05 is lower but 0.35 away: partly
    study = Study(write_study(tmp_path, p_new={MEMIT: 0.5, MPES: 0.05}, p_known=0.4))
    assert claims.mpes_probability(study).verdict == "partly"


def test_mpes_speed_compares_seconds_per_edit_from_the_ledger(tmp_path):
    study = Study(write_study(tmp_path, iterations={MEMIT: 20, MPES: 8}))
    claim = claims.mpes_speed(study)
    assert claim.verdict == "reproduced"
    assert "20.00 s/edit, 20.0 steps -> MEMIT+MPES 8.00 s/edit, 8.0 steps (-60%)" in claim.measured


@pytest.mark.parametrize(
    "memit_f1, encore_f1, verdict",
    [
        (40.0, 49.0, "reproduced"),  # MEMIT -10, ENCORE -1: the least
        (49.0, 50.0, "partly"),  # MEMIT's 1-point decline is within the noise of 600 items
        (45.0, 44.0, "not reproduced"),
    ],
)
def test_downstream_decline_within_noise_is_not_counted(tmp_path, memit_f1, encore_f1, verdict):
    study = Study(write_study(tmp_path, downstream={MEMIT: memit_f1, MPES: 45.0, ENCORE: encore_f1}))
    assert claims.downstream(study, "DS_generate", "generation").verdict == verdict


def test_editing_degradation_compares_the_first_and_last_snapshot(tmp_path):
    falling = Study(write_study(tmp_path / "a", score={MEMIT: lambda e: 90 - e / 100}))
    assert claims.memit_degrades(falling).verdict == "reproduced"  # 80 -> 60
    assert "after 1000 edits 80.0, after 3000 60.0" in claims.memit_degrades(falling).measured
    assert claims.memit_degrades(Study(write_study(tmp_path / "b"))).verdict == "not reproduced"


def test_a_missing_run_gives_not_measured_and_names_it(tmp_path):
    study = Study(write_study(tmp_path, runs=(MEMIT, ENCORE)))
    claim = claims.mpes_speed(study)
    assert (claim.verdict, claim.measured) == ("not measured", "needs MEMIT, MEMIT+MPES")


def test_results_page_has_one_row_per_claim_and_the_notes(tmp_path):
    data = write_study(tmp_path / "data")
    (tmp_path / "notes.md").write_text("## Notes\n\nhand-written\n")
    written = claims.write_results(data, tmp_path / "results.md", "Results: x", notes=tmp_path / "notes.md")
    text = (tmp_path / "results.md").read_text()
    assert all(claim.paper in text for claim in written) and len(written) == len(claims.all_claims(Study(data)))
    assert text.rstrip().endswith("hand-written")
    assert "| MEMIT      |    3000 |       20 |       16.67 |" in text  # 20 s/edit x 3000 edits = 16.67 h
