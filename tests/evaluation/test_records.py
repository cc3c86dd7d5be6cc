"""Per-record scores (``*.records.csv``): every editing metric row recomputes from the file it is written to."""

import math

import pandas as pd
import pytest

from encore.data.datasets import load_counterfact, load_zsre
from encore.evaluation.counterfact import summarise_counterfact
from encore.evaluation.rows import (
    RECORD_COLUMNS,
    authors_subset_of,
    editing_results,
    generation_results,
    records_path,
    to_frame,
    write_records,
)

LABELS = {"experiment": "t", "model": "tiny", "dataset": "counterfact", "method": "memit", "variant": "plain",
          "order": "0", "edits": 30}  # fmt: skip


def written_and_read(frame, tmp_path, **labels):
    path = records_path(tmp_path / "metrics" / "edits_00030.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(to_frame(frame, **labels), path)
    return pd.read_csv(path)


def metric_rows(rows, protocol):
    return {row["metric"]: row["value"] for row in rows if row["protocol"] == protocol}


def test_records_path_sits_beside_the_metrics_csv(tmp_path):
    assert records_path(tmp_path / "edits_00500.csv") == tmp_path / "edits_00500.records.csv"
    assert records_path(tmp_path / "metrics.csv") == tmp_path / "metrics.records.csv"


def test_counterfact_metric_rows_recompute_from_the_records_file(tiny_gpt2, tokenizer, shared_data_dir, tmp_path):
    records = load_counterfact(shared_data_dir / "counterfact" / "counterfact_rome_schema_merged.json")[:30]
    rows, frame = editing_results(tiny_gpt2, tokenizer, "counterfact", records, "edited-so-far",
                                  unedited=True, authors_subset=True)  # fmt: skip
    read = written_and_read(frame, tmp_path, **LABELS)
    assert list(read.columns) == [*LABELS, "subset", "protocol", "case_id", *RECORD_COLUMNS[:-1]]  # all but ge
    assert (read[list(LABELS)].astype(str) == pd.Series(LABELS).astype(str)).all().all()
    subsets = {"edited-so-far": [r.case_id for r in records],
               "authors-20pct": [r.case_id for r in authors_subset_of(records)]}  # fmt: skip
    assert 0 < len(subsets["authors-20pct"]) < len(records)
    for subset, case_ids in subsets.items():
        protocol = f"counterfact/{subset}/nll-comparison"
        scores = read[read["protocol"] == protocol]
        assert list(scores["case_id"]) == case_ids and set(scores["subset"]) == {subset}
        expected, from_file = metric_rows(rows, protocol), summarise_counterfact(scores)
        assert 0 < expected["ES"] < 100 or 0 < expected["NS"] < 100  # a constant column would prove little
        for metric in ("ES", "PS", "NS", "S", "ES_diff", "PS_diff", "NS_diff", "n_records"):
            assert from_file[metric] == pytest.approx(expected[metric], abs=1e-9), (subset, metric)
        assert scores["p_new"].mean() == pytest.approx(expected["p_new"], abs=1e-9)
        assert scores["p_true"].mean() == pytest.approx(expected["p_true"], abs=1e-9)
        top1 = metric_rows(rows, f"counterfact/{subset}/top1")
        assert 100 * scores["es_top1"].mean() == pytest.approx(top1["ES_top1"], abs=1e-9)
        pooled = 100 * scores["ps_top1_hits"].sum() / scores["n_paraphrase"].sum()
        assert pooled == pytest.approx(top1["PS_top1"], abs=1e-9)
        pooled = 100 * scores["ns_top1_hits"].sum() / scores["n_neighborhood"].sum()
        assert pooled == pytest.approx(top1["NS_top1"], abs=1e-9)
    known = metric_rows(rows, "table1/edited-so-far/known-true-facts")
    everything = read[read["subset"] == "edited-so-far"]
    assert everything["true_top1_rewrite"].sum() == known["n_known"]
    if known["n_known"]:
        mean = everything.loc[everything["true_top1_rewrite"] == 1, "p_true"].mean()
        assert mean == pytest.approx(known["p_true_known"], abs=1e-9)
    else:
        assert math.isnan(known["p_true_known"])


def test_records_are_written_at_limited_precision_but_exact_enough(tiny_gpt2, tokenizer, shared_data_dir, tmp_path):
    records = load_counterfact(shared_data_dir / "counterfact" / "counterfact_rome_schema_merged.json")[:10]
    rows, frame = editing_results(tiny_gpt2, tokenizer, "counterfact", records, "edited-so-far")
    path = tmp_path / "r.csv"
    write_records(frame, path)
    text = pd.read_csv(path, dtype=str)
    longest = max(text[column].str.len().max() for column in RECORD_COLUMNS[:-1])
    assert longest <= len("-0.") + 12 + len("e-05")  # 12 significant digits, not repr's 17
    read = pd.read_csv(path)
    assert (read["p_new"] - frame["p_new"]).abs().max() <= 1e-12


def test_zsre_metric_rows_recompute_from_the_records_file(tiny_gpt2, tokenizer, shared_data_dir, tmp_path):
    records = load_zsre(shared_data_dir / "zsre" / "zsre_mend_eval_subset_merged.json")[:20]
    rows, frame = editing_results(tiny_gpt2, tokenizer, "zsre", records, "edited-so-far", authors_subset=True)
    read = written_and_read(frame, tmp_path, **{**LABELS, "dataset": "zsre"})
    for subset in ("edited-so-far", "authors-20pct"):
        protocol = f"zsre/{subset}/token-top1"
        scores, expected = read[read["protocol"] == protocol], metric_rows(rows, protocol)
        assert len(scores) == expected["n_records"] and set(scores["subset"]) == {subset}
        for metric in ("ES", "PS", "NS"):
            assert 100 * scores[metric.lower()].mean() == pytest.approx(expected[metric], abs=1e-9), (subset, metric)
    assert set(read.columns) >= {"es", "ps", "ns"} and "p_new" not in read.columns


def test_generation_entropy_row_recomputes_from_the_records_file(tiny_gpt2, tokenizer, shared_data_dir, tmp_path):
    records = load_counterfact(shared_data_dir / "counterfact" / "counterfact_rome_schema_merged.json")[:3]
    rows, frame = generation_results(tiny_gpt2, tokenizer, records, "to-be-edited", limit=2, seed=0)
    read = written_and_read(frame, tmp_path, **LABELS)
    expected = metric_rows(rows, "generation/to-be-edited/top5-sampling-100-tokens")
    assert list(read["case_id"]) == [r.case_id for r in records[:2]] and "es" not in read.columns
    assert read["ge"].nunique() == 2 and 100 * read["ge"].mean() == pytest.approx(expected["GE"], abs=1e-9)
