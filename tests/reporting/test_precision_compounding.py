"""The bf16-mixed against fp32 page (encore.reporting.precision_compounding): paired differences on tiny synthetic
studies, the refusals, and the committed page equal to what the command regenerates from the committed studies."""

import io
from pathlib import Path

import pandas as pd
import pytest
from conftest import STUDY_FACTS, make_study

from encore.reporting.precision_compounding import CSV, PAGE, generate, main

REPO = Path(__file__).resolve().parents[2]


def rows(csv: str, metric: str, precision: str = "bf16-fp32") -> pd.DataFrame:
    table = pd.read_csv(io.StringIO(csv))
    return table[(table["metric"] == metric) & (table["precision"] == precision)]


def test_identical_per_fact_scores_give_zero_differences_with_zero_width_intervals(tmp_path):
    bf16, fp32 = make_study(tmp_path / "bf16", "bf16-mixed"), make_study(tmp_path / "fp32", "fp32")
    csv, page = generate(bf16, fp32)
    for metric in ("ES", "PS", "NS", "S"):
        deltas = rows(csv, metric)
        assert len(deltas) == 4, metric  # 2 runs x 2 snapshots
        assert (deltas[["value", "low", "high"]] == 0).all().all(), metric
    assert rows(csv, "growth_L2")["value"].tolist() == pytest.approx([1.0, 2.0] * 2)  # 2% - 1% per 100 edits
    assert "Every one of the 4 ΔS intervals contains 0; the largest |ΔS| is 0.0 points" in page
    assert "| 100 | 12 (the authors' 20%) |" in page and "Not compared" not in page


def test_a_known_shift_gives_its_sign_and_value(tmp_path):
    def more_efficacy(run, edits, frame):  # bf16-mixed: ENCORE succeeds on three more facts at 200 edits
        if run == ("memit", "mpes_nc") and edits == 200:
            failed = frame.index[frame["es"] == 0][:3]
            frame = frame.assign(es=frame["es"].where(~frame.index.isin(failed), 1.0))
        return frame

    bf16 = make_study(tmp_path / "bf16", "bf16-mixed", shift=more_efficacy)
    csv, page = generate(bf16, make_study(tmp_path / "fp32", "fp32"))
    es = rows(csv, "ES").set_index(["variant", "edits"])
    assert es.loc[("mpes_nc", 200), "value"] == pytest.approx(100 * 3 / STUDY_FACTS)
    assert es.loc[("mpes_nc", 200), "low"] >= 0 and es.loc[("mpes_nc", 200), "high"] > 0
    assert (es.drop(("mpes_nc", 200))["value"] == 0).all()
    assert (rows(csv, "PS")["value"] == 0).all() and (rows(csv, "NS")["value"] == 0).all()
    s, bf16_s, fp32_s = (rows(csv, "S", p).set_index(["variant", "edits"]).loc[("mpes_nc", 200), "value"]
                         for p in ("bf16-fp32", "bf16-mixed", "fp32"))  # fmt: skip
    assert s > 0 and s == pytest.approx(bf16_s - fp32_s, abs=1e-4)  # the CSV's 4 decimals
    assert f"the largest |ΔS| is {s:.1f} points (ENCORE at 200 edits)" in page


def test_without_per_fact_scores_the_difference_is_of_the_published_means_without_interval(tmp_path):
    bf16 = make_study(tmp_path / "bf16", "bf16-mixed")
    csv, page = generate(bf16, make_study(tmp_path / "fp32", "fp32", records=False))
    deltas = rows(csv, "S")
    assert (deltas["value"].abs() < 1e-9).all() and deltas["low"].isna().all()
    assert "† no interval: fp32 publishes no per-fact scores" in page and "None of the 4 ΔS has an interval" in page


@pytest.mark.parametrize(
    "first, second, expected",
    [
        (dict(lambda_p=10000), {}, "has lambda_p 10000 against 5000"),
        (dict(model="other"), {}, "model other against tiny"),
        ({}, dict(score_precision="bf16-mixed"), "score_precision fp32 against bf16-mixed"),
        (dict(edit_precision="fp32"), {}, "bf16 is edited in fp32, not only bf16-mixed"),
        ({}, dict(edit_precision="bf16-mixed"), "fp32 is edited in bf16-mixed, not only fp32"),
    ],
)
def test_studies_that_differ_in_more_than_the_edit_precision_are_refused_in_one_line(tmp_path, first, second, expected):
    bf16 = make_study(tmp_path / "bf16", first.pop("edit_precision", "bf16-mixed"), **first)
    fp32 = make_study(tmp_path / "fp32", second.pop("edit_precision", "fp32"), **second)
    with pytest.raises(ValueError) as error:
        main([str(bf16), str(fp32)])
    message = str(error.value)
    assert "\n" not in message and expected in message
    assert str(bf16 / "data") in message and str(fp32 / "data") in message


def test_a_snapshot_in_one_study_only_is_listed_as_not_compared(tmp_path):
    bf16 = make_study(tmp_path / "bf16", "bf16-mixed")
    csv, page = generate(bf16, make_study(tmp_path / "fp32", "fp32", snapshots=(100, 200, 300)))
    table = pd.read_csv(io.StringIO(csv))
    assert set(table.loc[table["edits"] == 300, "precision"]) == {"fp32"}
    assert "- MEMIT at 300 edits: only in fp32" in page and "- ENCORE at 300 edits: only in fp32" in page
    assert "| 300 |" not in page


def test_the_committed_page_is_what_the_command_regenerates():
    study = REPO / "docs" / "results" / "lifelong-cpu"
    if not (study / CSV).exists() or not (study / PAGE).exists():
        pytest.skip(f"{study / CSV} and {PAGE} not committed yet: run python -m encore.reporting.precision_compounding")
    csv, page = generate(study, REPO / "docs" / "results" / "lifelong-cpu-fp32")
    assert (study / CSV).read_text() == csv, f"rerun python -m encore.reporting.precision_compounding ({CSV})"
    assert (study / PAGE).read_text() == page, f"rerun python -m encore.reporting.precision_compounding ({PAGE})"
