"""The dated 4,600-edit prediction (encore.reporting.prediction): its fits recomputed from the fp32 runs equal the
numbers the page printed before the runs, the rule returns every outcome it names, G is paired over the facts both
runs scored, and the committed page is the dated text, unchanged, with a Result section regenerated from the CSV."""

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hmean

from encore.reporting.claims.intervals import Interval
from encore.reporting.data_files import data_path
from encore.reporting.prediction import (
    CSV,
    PAGE,
    PREDICTED_GAPS,
    PROTOCOL,
    decide,
    fits,
    paired_gap,
    result_text,
    write,
)

REPO = Path(__file__).resolve().parents[2]
STUDY, FP32 = REPO / "docs" / "results" / "lifelong-cpu", REPO / "docs" / "results" / "lifelong-cpu-fp32"
# sha256 of the page above "## Result" (written 2026-12-02) and from "## Amendment" on (2026-12-06)
PREDICTION_DIGEST = "6e9d3468d77c5267f4d1aff90adabde0f24d7c5201f54415bf607e3fec1a5453"
AMENDMENT_DIGEST = "c57f2a81130a54fd89a27e3fe0b09403629fe9c0a5a141f2a67ed4d33df47101"


def parts(text: str) -> tuple[str, str, str]:
    """The page before its Result section, the section's body, and the rest (the amendment)."""
    found = re.search(r"^## Result\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    return text[: found.start()], found.group(1), text[found.end() :]


def test_the_fits_recomputed_from_the_fp32_runs_are_the_numbers_the_page_printed():
    found = {fit.label: fit for fit in fits(pd.read_csv(data_path(FP32 / "data", "metrics.csv")))}
    assert {label: round(fit.gap, 1) for label, fit in found.items()} == PREDICTED_GAPS
    page = parts((STUDY / PAGE).read_text())[0]
    for fit in found.values():  # the fits table: slopes, crossing (rounded to 10 edits) and gap
        unit = "1,000" if fit.family == "linear in edits" else "ln"
        row = (f"| {fit.family} | {fit.first:,}-3,000 | {fit.slope_memit:.2f} / {unit} | {fit.slope_encore:.2f} / "
               f"{unit} | ~{round(fit.crossing, -1):,.0f} | {fit.gap:+.1f} |")  # fmt: skip
        assert row in page


@pytest.mark.parametrize(
    "estimate, low, high, outcome",
    [
        (2.5, 1.8, 3.2, "MEMIT still ahead; neither fit"),
        (-1.5, -2.2, -0.8, "ENCORE has overtaken MEMIT; neither fit"),
        (-0.5, -0.9, -0.1, "ENCORE has overtaken MEMIT (as the linear fit from 500 predicts)"),
        (1.2, 0.4, 2.0, "MEMIT still ahead; G >= 0.95 supports the logarithmic trend"),
        (0.6, 0.1, 1.1, "MEMIT still ahead; G < 0.95 supports the linear trend"),
        (0.3, -0.4, 1.0, "inconclusive"),
        (1.7, 1.5, 1.9, "MEMIT still ahead; G >= 0.95 supports the logarithmic trend"),  # reaches into the fits
    ],
)
def test_the_rule_returns_each_outcome_the_page_names(estimate, low, high, outcome):
    assert decide(Interval(estimate, low, high)) == outcome


def records(facts: dict) -> pd.DataFrame:
    """records.csv rows: facts = {(variant, edits): {case_id: (es, ps, ns)}} on the authors' 20%."""
    rows = [{"method": "memit", "variant": variant, "edits": edits, "protocol": PROTOCOL, "case_id": case,
             "es": es, "ps": ps, "ns": ns}
            for (variant, edits), scores in facts.items() for case, (es, ps, ns) in scores.items()]  # fmt: skip
    return pd.DataFrame(rows)


def test_g_is_s_of_memit_minus_s_of_encore_on_the_facts_both_scored():
    rng = np.random.default_rng(0)
    memit = {case: (rng.integers(0, 2), rng.random(), rng.random()) for case in range(40)}
    encore = {case: (rng.integers(0, 2), rng.random(), rng.random()) for case in range(5, 45)}  # 35 shared
    frame = records({("plain", 4600): memit, ("mpes_nc", 4600): encore})
    frame = pd.concat([frame, records({("plain", 4600): {99: (1.0, 1.0, 1.0)}}).assign(protocol="other")])
    g, n = paired_gap(frame, 4600)
    shared = range(5, 40)

    def s(scores):
        return hmean([100 * np.mean([scores[c][k] for c in shared]) for k in range(3)])

    assert n == 35 and g.estimate == pytest.approx(s(memit) - s(encore))
    assert g.low < g.estimate < g.high
    assert paired_gap(frame, 4000) is None  # no snapshot at 4,000: no data, not a number


def test_the_result_section_reports_no_data_until_both_runs_reach_4600(tmp_path):
    study = tmp_path / "study"
    shutil.copytree(STUDY, study)
    (study / "data" / "records.csv").unlink(missing_ok=True)
    write(study, FP32)
    before, body, after = parts((study / PAGE).read_text())
    assert "**No data yet:**" in body and "Outcome" not in body
    assert (before, after) == parts((STUDY / PAGE).read_text())[::2]


def test_a_page_without_its_result_section_is_refused_in_one_line(tmp_path):
    study = tmp_path / "study"
    shutil.copytree(STUDY, study)
    (study / PAGE).write_text("# Prediction\n\nNo result section.\n")
    with pytest.raises(ValueError, match=r"prediction-4600.md: no '## Result' section"):
        write(study, FP32)


def test_the_committed_page_keeps_the_dated_text_and_its_result_comes_from_the_committed_csv():
    before, body, after = parts((STUDY / PAGE).read_text())
    assert hashlib.sha256(before.encode()).hexdigest() == PREDICTION_DIGEST
    assert hashlib.sha256(after.encode()).hexdigest() == AMENDMENT_DIGEST
    assert body == result_text(pd.read_csv(STUDY / CSV)) + "\n"


def test_the_committed_csv_is_what_the_published_studies_give(tmp_path):
    study = tmp_path / "study"
    shutil.copytree(STUDY, study)
    write(study, FP32)
    assert (study / CSV).read_text() == (STUDY / CSV).read_text()


def test_the_result_section_states_the_outcome_the_g_interval_and_the_slopes_once_the_runs_reach_4600():
    frame = pd.read_csv(STUDY / CSV)
    g = "G = S(MEMIT) - S(ENCORE), paired"
    extra = [
        {"quantity": g, "run": None, "edits": 4600, "value": 0.3, "low": -0.4, "high": 1.0, "n_facts": 920},
        {"quantity": g, "run": None, "edits": 4000, "value": 0.5, "low": 0.1, "high": 0.9, "n_facts": 800},
        {"quantity": "slope per 1,000 edits after 3,000", "run": "MEMIT", "edits": 4600, "value": -2.0},
        {"quantity": "slope per 1,000 edits after 3,000", "run": "ENCORE", "edits": 4600, "value": -1.0},
    ]
    frame = pd.concat([frame[~frame["quantity"].str.startswith("slope")], pd.DataFrame(extra)], ignore_index=True)
    text = result_text(frame)
    assert "**Outcome: inconclusive.** At 4,600 edits G = 0.30 [-0.40, 1.00] on the same 920 facts" in text
    assert "- G at 3,500 edits: no data" in text and "- G at 4,000 edits: 0.50 [0.10, 0.90]" in text
    assert "MEMIT -2.00 (the linear fits to 3,000: -2.95 from 500, -2.62 from 1,000), ENCORE -1.00" in text
