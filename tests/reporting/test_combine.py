"""Combining studies of one protocol: a study split into two sources and combined again, cut at N edits, is the
study's own data cut at N; sources of different protocols, or with a run in both, are refused."""

from pathlib import Path

import pandas as pd
import pytest

from encore.reporting.combine import CombineError, combine

STUDY = Path(__file__).resolve().parents[2] / "docs" / "results" / "lifelong-cpu-fp32" / "data"
FILES = ("metrics.csv", "norms.csv", "ledger.csv", "runs.csv")


def _split(tmp_path: Path) -> tuple[Path, Path]:
    """Source a: the unedited model and MEMIT; source b: ENCORE (memit/mpes_nc)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for directory in (a, b):
        directory.mkdir()
    for name in FILES:
        frame = pd.read_csv(STUDY / name)
        encore = frame["variant"] == "mpes_nc"
        frame[~encore].to_csv(a / name, index=False)
        frame[encore].to_csv(b / name, index=False)
    return a, b


def test_a_split_study_combined_at_1000_edits_is_its_own_data_cut_at_1000(tmp_path):
    a, b = _split(tmp_path)
    combine([a, b], tmp_path / "out", up_to=1000)
    data = tmp_path / "out" / "data"
    metrics = pd.read_csv(data / "metrics.csv")
    original = pd.read_csv(STUDY / "metrics.csv")
    assert metrics["edits"].max() == 1000
    expected = original[original["edits"] <= 1000]
    key = ["method", "variant", "edits", "metric", "protocol"]
    pd.testing.assert_frame_equal(
        metrics.sort_values(key).reset_index(drop=True), expected.sort_values(key).reset_index(drop=True)
    )
    ledger = pd.read_csv(data / "ledger.csv")
    assert set(ledger.groupby("variant").size()) == {1000}
    assert pd.read_csv(data / "norms.csv")["edits"].max() == 1000
    table = (tmp_path / "out" / "tables" / "table03_encore.md").read_text()
    assert "ENCORE" in table and "MEMIT" in table and "1000 edits" in table


def test_a_run_in_two_sources_is_refused(tmp_path):
    a, b = _split(tmp_path)
    with pytest.raises(CombineError, match="run memit/plain/0 is in"):
        combine([a, a], tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written when the sources are refused"


def test_sources_of_different_batch_sizes_are_refused(tmp_path):
    a, b = _split(tmp_path)
    runs = pd.read_csv(b / "runs.csv")
    runs.assign(batch_size=10).to_csv(b / "runs.csv", index=False)
    with pytest.raises(CombineError, match="runs.csv key 'batch_size' differs"):
        combine([a, b], tmp_path / "out")


def test_different_editing_protocols_at_one_snapshot_are_refused(tmp_path):
    a, b = _split(tmp_path)
    metrics = pd.read_csv(b / "metrics.csv")
    metrics["protocol"] = metrics["protocol"].str.replace("authors-20pct", "all-edited")
    metrics.to_csv(b / "metrics.csv", index=False)
    with pytest.raises(CombineError, match="editing protocols at 500 edits differ"):
        combine([a, b], tmp_path / "out")


def test_the_regulariser_table_has_rect_and_prune_beside_memit_and_encore_and_is_absent_without_them(tmp_path):
    a, b = _split(tmp_path)
    for name in FILES:  # source b's ENCORE run relabelled as a RECT run, MEMIT and ENCORE kept in source a
        frame = pd.read_csv(b / name)
        frame.assign(method="memit_rect", variant="plain").to_csv(b / name, index=False)
    combine([a, b], tmp_path / "with", up_to=1000)
    table = pd.read_csv(tmp_path / "with" / "tables" / "table04b_regularisers.csv")
    assert list(table["method"]) == ["MEMIT", "MEMIT+RECT"]
    assert set(table["source"]) == {"this run, 1000 edits"}
    combine([a], tmp_path / "without", up_to=1000)
    assert not (tmp_path / "without" / "tables" / "table04b_regularisers.csv").exists()
    assert (
        "table04b_regularisers: needs a memit_rect or memit_prune run"
        in (tmp_path / "without" / "index.md").read_text()
    )


def test_sources_scored_in_different_precisions_are_refused_and_a_source_without_the_key_is_fp32(tmp_path):
    a, b = _split(tmp_path)
    pd.read_csv(b / "runs.csv").assign(score_precision="fp32").to_csv(b / "runs.csv", index=False)
    combine([a, b], tmp_path / "same")  # a has no score_precision column: scored in fp32, as b
    pd.read_csv(b / "runs.csv").assign(score_precision="bf16-mixed").to_csv(b / "runs.csv", index=False)
    with pytest.raises(CombineError, match="runs.csv key 'score_precision' differs"):
        combine([a, b], tmp_path / "out")
