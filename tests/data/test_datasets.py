"""Tests for encore.data.datasets: the CounterFact and zsRE loaders (real files, corrupt records), orders, corpus
texts and read_text."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from encore.data import datasets, files
from encore.data.files import DataError

CF = "counterfact/counterfact_rome_schema_merged.json"
ZSRE = "zsre/zsre_mend_eval_subset_merged.json"
CF_ORDER = "counterfact/counterfact_sampled_unique_cf_10_20000.json"
QNA = "counterfact/counterfact_qna.json"


@pytest.fixture(scope="module")
def cf_raw(shared_data_dir):
    with open(shared_data_dir / CF, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ CounterFact


def test_load_counterfact_real(cf_records, cf_raw):
    assert len(cf_records) == 5072
    by_id = {r.case_id: r for r in cf_records}
    assert len(by_id) == 5072
    first = by_id[0]
    assert first.subject == "Danielle Darrieux"
    assert first.rewrite_prompt == "The mother tongue of Danielle Darrieux is"
    assert (first.target_new, first.target_true, first.relation_id) == ("English", "French", "P103")
    assert first.neighborhood_target is None
    for record, raw in zip(cf_records, cf_raw):
        assert record.prompt.count("{}") == 1
        assert record.case_id == raw["case_id"]
        assert record.rewrite_prompt == raw["requested_rewrite"]["prompt"].format(raw["requested_rewrite"]["subject"])
        assert len(record.paraphrase_prompts) == 2 and len(record.neighborhood_prompts) == 10
        assert len(record.generation_prompts) == 10


def test_load_counterfact_with_qna(shared_data_dir, cf_records):
    records = datasets.load_counterfact(shared_data_dir / CF, qna_path=shared_data_dir / QNA)
    by_id = {r.case_id: r for r in records}
    assert by_id[0].generation_prompts[-1] == "What is the mother tongue of Danielle Darrieux?"
    assert len(by_id[0].generation_prompts) == 11
    big = next(r for r in records if r.case_id >= 1000)
    assert len(big.generation_prompts) == 10


def corrupt_cases():
    def drop_target_new_str(recs):
        del recs[1]["requested_rewrite"]["target_new"]["str"]
        return "missing field 'requested_rewrite.target_new.str'"

    def prompt_without_placeholder(recs):
        recs[1]["requested_rewrite"]["prompt"] = "The mother tongue is"
        return "'requested_rewrite.prompt'"

    def two_placeholders(recs):
        recs[1]["requested_rewrite"]["prompt"] = "{} and {} is"
        return "exactly one"

    def wrong_type(recs):
        recs[1]["neighborhood_prompts"][3] = 7
        return "field 'neighborhood_prompts[3]' must be str, got int"

    def null_subject(recs):
        recs[1]["requested_rewrite"]["subject"] = None
        return "field 'requested_rewrite.subject' must be str, got NoneType"

    def duplicate(recs):
        recs[1]["case_id"] = recs[0]["case_id"]
        return "duplicate case_id"

    return [drop_target_new_str, prompt_without_placeholder, two_placeholders, wrong_type, null_subject, duplicate]


@pytest.mark.parametrize("corrupt", corrupt_cases(), ids=lambda f: f.__name__)
def test_load_counterfact_corrupt_record(tmp_path, cf_raw, corrupt):
    records = json.loads(json.dumps(cf_raw[:3]))
    expected = corrupt(records)
    path = write_json(tmp_path / "counterfact.json", records)
    with pytest.raises(DataError) as err:
        datasets.load_counterfact(path)
    message = str(err.value)
    assert message.startswith(f"counterfact.json: record 1 (case_id {records[1]['case_id']}): ")
    assert expected in message and "\n" not in message


def test_load_counterfact_missing_case_id_and_bad_json(tmp_path, cf_raw):
    records = json.loads(json.dumps(cf_raw[:2]))
    del records[1]["case_id"]
    with pytest.raises(DataError, match=r"record 1 \(case_id \?\): missing field 'case_id'"):
        datasets.load_counterfact(write_json(tmp_path / "cf.json", records))
    (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: invalid JSON"):
        datasets.load_counterfact(tmp_path / "bad.json")
    with pytest.raises(DataError, match="JSON list"):
        datasets.load_counterfact(write_json(tmp_path / "obj.json", {"a": 1}))


# ------------------------------------------------------------------------------------------------ zsRE


def test_load_zsre_real(shared_data_dir, zsre_raw):
    records = datasets.load_zsre(shared_data_dir / ZSRE)
    assert len(records) == 1084
    assert [r.case_id for r in records] == list(range(1084))
    for record, raw in zip(records, zsre_raw):
        assert record.prompt.count("{}") == 1
        assert record.rewrite_prompt == raw["src"]
        assert record.target_new == raw["answers"][0] and record.target_true == "<|endoftext|>"
        assert record.paraphrase_prompts == [raw["rephrase"]]
        (neighborhood,) = record.neighborhood_prompts
        assert neighborhood.endswith("?") and not neighborhood.startswith("nq question:")
        assert raw["loc"] == "nq question: " + neighborhood[:-1]
        assert record.neighborhood_target == raw["loc_ans"]
        assert record.generation_prompts == [] and record.relation_id is None
    assert records[0].prompt == "What university did {} attend?"


def test_load_zsre_generation_pool(shared_data_dir):
    pool = [f"prompt {i}" for i in range(100)]
    first = datasets.load_zsre(shared_data_dir / ZSRE, generation_pool=pool)
    again = datasets.load_zsre(shared_data_dir / ZSRE, generation_pool=pool)
    assert [r.generation_prompts for r in first] == [r.generation_prompts for r in again]
    assert all(len(r.generation_prompts) == 10 and set(r.generation_prompts) <= set(pool) for r in first)
    assert len(set(r.generation_prompts[0] for r in first[:50])) > 5  # differs between records


def test_load_zsre_corrupt(tmp_path, zsre_raw):
    records = json.loads(json.dumps(zsre_raw[:3]))
    records[2]["subject"] = "Nobody In Particular"
    with pytest.raises(DataError, match=r"zsre.json: record 2 \(case_id 2\): field 'src' does not contain the subject"):
        datasets.load_zsre(write_json(tmp_path / "zsre.json", records))
    records = json.loads(json.dumps(zsre_raw[:3]))
    del records[1]["loc_ans"]
    with pytest.raises(DataError, match=r"record 1 \(case_id 1\): missing field 'loc_ans'"):
        datasets.load_zsre(write_json(tmp_path / "zsre.json", records))
    records[1]["loc_ans"] = "x"
    records[1]["answers"] = []
    with pytest.raises(DataError, match="'answers' is empty"):
        datasets.load_zsre(write_json(tmp_path / "zsre.json", records))


def test_load_zsre_braces_and_repeated_subject(tmp_path, zsre_raw):
    record = dict(zsre_raw[0], subject="Bo", src="Is Bo {the} same as Bo?")
    (loaded,) = datasets.load_zsre(write_json(tmp_path / "z.json", [record]))
    assert loaded.prompt.count("{}") == 1
    assert loaded.rewrite_prompt == "Is Bo {the} same as Bo?"


# ---------------------------------------------------------------------------------------------- orders


def test_load_order_real_and_missing_sample(shared_data_dir):
    order = datasets.load_order(shared_data_dir / CF_ORDER, "0")
    assert len(order) == 20000 and len(set(order)) == 20000 and max(order) <= 21918
    assert datasets.load_order(shared_data_dir / CF_ORDER, 3) != order
    with pytest.raises(DataError) as err:
        datasets.load_order(shared_data_dir / CF_ORDER, "mcf")
    assert "'mcf'" in str(err.value) and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in str(err.value)


def test_order_records_synthetic():
    records = [datasets.EditRecord(i, "s", "{} is", "a", "b") for i in (1, 2, 3, 5)]
    kept, skipped = datasets.order_records(records, [5, 9, 1, 7, 3])
    assert [r.case_id for r in kept] == [5, 1, 3] and skipped == 2
    kept, skipped = datasets.order_records(records, [5, 9, 1, 7, 3], limit=2)
    assert [r.case_id for r in kept] == [5, 1] and skipped == 2


def test_order_records_real(shared_data_dir, cf_records):
    order = datasets.load_order(shared_data_dir / CF_ORDER, "0")
    kept, skipped = datasets.order_records(cf_records, order)
    assert len(kept) == 4680 and skipped == 20000 - 4680
    available = {r.case_id for r in cf_records}
    assert [r.case_id for r in kept] == [i for i in order if i in available]
    limited, skipped_limited = datasets.order_records(cf_records, order, limit=100)
    assert limited == kept[:100] and skipped_limited == skipped


# ---------------------------------------------------------------------------------------------- corpora


def test_read_text_names_a_missing_file(tmp_path):
    with pytest.raises(files.DataError, match=f"^{tmp_path / 'wiki.test.tokens.gz'}: file not found$"):
        datasets.read_text(tmp_path / "wiki.test.tokens.gz")


def test_iter_corpus_texts_jsonl(tmp_path):
    lines = [{"title": "A", "text": "alpha"}, {"title": "B", "text": "beta"}]
    plain = tmp_path / "c.jsonl"
    plain.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    packed = tmp_path / "c.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(datasets.iter_corpus_texts(plain)) == ["alpha", "beta"]
    assert list(datasets.iter_corpus_texts(packed)) == ["alpha", "beta"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    texts = datasets.iter_corpus_texts(bad)
    assert next(texts) == "ok"
    with pytest.raises(DataError, match="bad.jsonl: line 2"):
        next(texts)


def test_iter_corpus_texts_real_wikipedia(shared_data_dir):
    texts = datasets.iter_corpus_texts(shared_data_dir / files.REGISTRY["wikipedia"].local_path)
    first = [next(texts) for _ in range(5)]
    assert all(isinstance(t, str) and len(t) >= 200 for t in first)


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pip install pyarrow"):
        list(datasets.iter_corpus_texts(path))
