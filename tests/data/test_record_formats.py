"""Tests for encore.data.record_formats: EasyEdit and KnowEdit records mapped as the ROME/MEND records, the schema
detected per file, bad records named in one-line errors, and the metrics records cannot support."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from encore.data import datasets
from encore.data.files import DataError

CF = "counterfact/counterfact_rome_schema_merged.json"
ZSRE = "zsre/zsre_mend_eval_subset_merged.json"
EASYEDIT_CF = [f"counterfact/easyedit_schema/counterfact-{split}.json" for split in ("edit", "train", "val")]
KNOWEDIT_ZSRE = "zsre/knowedit/ZsRE-test-all.json"


@pytest.fixture(scope="module")
def easyedit_raw(shared_data_dir):
    return json.loads((shared_data_dir / EASYEDIT_CF[0]).read_text(encoding="utf-8"))


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_easyedit_counterfact_records_are_the_rome_records_with_one_prompt_each(shared_data_dir, cf_records):
    from encore.data.record_formats import load_records

    records, info = load_records(shared_data_dir / EASYEDIT_CF[0], "counterfact")
    assert info["schema"] == "easyedit" and info["records"] == len(records) == 10_000 and info["own_case_ids"]
    assert any("generation entropy (GE) is not measured" in note for note in info["notes"])
    first = records[0]
    assert (first.case_id, first.subject, first.prompt) == (0, "Danielle Darrieux", "The mother tongue of {} is")
    assert (first.target_new, first.target_true, first.generation_prompts) == ("English", "French", [])
    assert first.paraphrase_prompts == ["Where Danielle Darrieux is from, people speak the language of"]
    assert first.neighborhood_prompts == ["Michel Rocard is a native speaker of"] and first.neighborhood_target is None
    # every record also in the ROME-schema file has its fact, and its locality prompt is one of the 10 neighbours
    rome = {record.case_id: record for record in cf_records}
    shared = [record for record in records if record.case_id in rome]
    assert len(shared) > 1000
    for record in shared:
        full = rome[record.case_id]
        assert (record.rewrite_prompt, record.subject) == (full.rewrite_prompt, full.subject)
        assert (record.target_new, record.target_true) == (full.target_new, full.target_true)
        assert record.neighborhood_prompts[0] in full.neighborhood_prompts


def test_schema_is_detected_per_file_and_named_when_unknown(shared_data_dir, tmp_path, easyedit_raw):
    from encore.data.record_formats import detect_schema

    assert detect_schema(json.loads((shared_data_dir / CF).read_text()), "cf") == "rome"
    assert detect_schema(json.loads((shared_data_dir / ZSRE).read_text()), "zsre") == "mend"
    assert detect_schema(easyedit_raw, "ee") == "easyedit"
    assert detect_schema(json.loads((shared_data_dir / KNOWEDIT_ZSRE).read_text()), "ke") == "easyedit"
    with pytest.raises(DataError, match=r"^odd.json: record 0 fits no known schema \(fields \['question'\]\)"):
        detect_schema([{"question": "?"}], "odd.json")
    mixed = write_json(tmp_path / "mixed.json", [easyedit_raw[0], {"requested_rewrite": {}, "case_id": 5}])
    from encore.data.record_formats import load_records

    with pytest.raises(
        DataError, match=r"^mixed.json: record 1 \(case_id 5\): does not fit the file's easyedit schema"
    ):
        load_records(mixed, "counterfact")


def test_easyedit_zsre_record_maps_as_the_mend_record_but_edits_to_its_target(shared_data_dir, zsre_raw, tmp_path):
    """EasyEdit's ZsreDataset writes a MEND record as prompt=src, target_new=alt, ground_truth=answers[0],
    rephrase_prompt, locality_prompt=loc ("nq question: ..."), locality_ground_truth=loc_ans."""
    from encore.data.record_formats import load_records

    flat = [{"case_id": i, "prompt": r["src"], "subject": r["subject"], "target_new": r["alt"],
             "ground_truth": r["answers"][0], "rephrase_prompt": r["rephrase"], "locality_prompt": r["loc"],
             "locality_ground_truth": r["loc_ans"]} for i, r in enumerate(zsre_raw[:20])]  # fmt: skip
    records, info = load_records(write_json(tmp_path / "zsre-easyedit.json", flat), "zsre")
    assert info["notes"] == []
    for record, mend, raw in zip(records, datasets.load_zsre(shared_data_dir / ZSRE)[:20], zsre_raw):
        assert (record.prompt, record.subject, record.paraphrase_prompts) == (mend.prompt, mend.subject,
                                                                              mend.paraphrase_prompts)  # fmt: skip
        assert (record.neighborhood_prompts, record.neighborhood_target) == (mend.neighborhood_prompts,
                                                                              mend.neighborhood_target)  # fmt: skip
        assert (record.target_new, record.target_true) == (raw["alt"], raw["answers"][0])


def test_knowedit_zsre_scores_the_first_locality_prompt_and_names_the_rest(shared_data_dir, tmp_path):
    from encore.data.record_formats import load_records

    raw = json.loads((shared_data_dir / KNOWEDIT_ZSRE).read_text())[:5]
    records, info = load_records(write_json(tmp_path / "ke.json", raw), "zsre")
    first = records[0]
    assert (first.case_id, first.prompt, first.target_new, first.target_true) == (
        0, "Which family does {} belong to?", "Noctuidae", "Aspidoceratidae")  # fmt: skip
    assert first.paraphrase_prompts == ["What family are Epaspidoceras?"]
    assert (first.neighborhood_prompts, first.neighborhood_target) == (["The taxon rank of Epaspidoceras is"], "genus")
    extra = sum(len(r["locality"]["Relation_Specificity"]) - 1 for r in raw)
    assert info["notes"] == [f"{extra} KnowEdit locality prompts after each record's first are not scored",
                             "portability prompts are not an ENCORE metric: not scored"]  # fmt: skip
    # as CounterFact, KnowEdit's own-answer locality prompts cannot be CounterFact's NS: none is kept, and it is said
    records, info = load_records(write_json(tmp_path / "ke.json", raw), "counterfact")
    assert all(record.neighborhood_prompts == [] for record in records)
    assert "KnowEdit locality prompts carry answers of their own: not scored as CounterFact's NS" in info["notes"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ground_truth": None}, r"missing field 'ground_truth'"),
        ({"locality_ground_truth": "German"}, r"locality_ground_truth 'German' differs from ground_truth 'French'"),
        ({"subject": "Nobody"}, r"field 'prompt' does not contain the subject 'Nobody'"),
        ({"case_id": "0"}, r"field 'case_id' must be int, got str"),
        ({"ground_truth": 3}, r"field 'ground_truth' must be str or a list of str, got int"),
    ],
)
def test_a_bad_easyedit_record_is_named_in_a_one_line_error(tmp_path, easyedit_raw, change, message):
    from encore.data.record_formats import load_records

    record = {key: value for key, value in {**easyedit_raw[0], **change}.items() if value is not None}
    with pytest.raises(DataError, match=r"^bad.json: record 0 \(case_id 0\): " + message) as raised:
        load_records(write_json(tmp_path / "bad.json", [record]), "counterfact")
    assert "\n" not in str(raised.value)


def test_missing_metrics_name_what_the_records_cannot_support(cf_records, easyedit_raw, tmp_path):
    from encore.data.record_formats import load_records, missing_metrics

    assert missing_metrics(cf_records[:10], "counterfact", generation=True) == {}
    easyedit, _ = load_records(write_json(tmp_path / "ee.json", easyedit_raw[:10]), "counterfact")
    assert list(missing_metrics(easyedit, "counterfact", generation=True)) == ["GE"]
    assert missing_metrics(easyedit, "counterfact", generation=False) == {}
    bare = [dataclasses.replace(record, paraphrase_prompts=[], neighborhood_prompts=[]) for record in easyedit]
    assert list(missing_metrics(bare, "counterfact", generation=False)) == ["PS", "NS", "S"]
