"""Tests for encore.data.requests: load_requests over records files gives the records in the authors' order, with
their provenance."""

from __future__ import annotations

import pytest

from encore.data import datasets, files
from encore.data.files import DataError

ZSRE = "zsre/zsre_mend_eval_subset_merged.json"
CF_ORDER = "counterfact/counterfact_sampled_unique_cf_10_20000.json"
EASYEDIT_CF = [f"counterfact/easyedit_schema/counterfact-{split}.json" for split in ("edit", "train", "val")]


def test_records_files_give_the_authors_order_over_all_21919_counterfact_records(shared_data_dir, tmp_path):
    from encore.data.requests import load_requests

    records, provenance = load_requests("counterfact", shared_data_dir, tmp_path, "0", None, records_files=EASYEDIT_CF)
    order = datasets.load_order(shared_data_dir / CF_ORDER, "0")
    assert [record.case_id for record in records] == order and provenance["order_ids_not_available"] == 0
    assert provenance["records_available"] == 21_919 and provenance["order"] == "authors"
    assert [entry["schema"] for entry in provenance["records_files"]] == ["easyedit"] * 3
    assert provenance["records_files"][0]["sha256"] == files.file_sha256(shared_data_dir / EASYEDIT_CF[0])
    rome, _ = load_requests("counterfact", shared_data_dir, tmp_path, "0", 50)  # the registered 5,072 records
    by_id = {record.case_id: record for record in records}
    assert [by_id[r.case_id].rewrite_prompt for r in rome] == [r.rewrite_prompt for r in rome]
    # zsRE records without ids of their own are edited in the files' order (as the registered local subset)
    zsre, provenance = load_requests("zsre", shared_data_dir, tmp_path, "0", None, records_files=[ZSRE])
    registered, _ = load_requests("zsre", shared_data_dir, tmp_path, "0", None)
    assert zsre == registered and provenance["order"] == "file"
    with pytest.raises(DataError, match=r"^records_files: nothere.json not found \(looked in .* or the working dir"):
        load_requests("counterfact", shared_data_dir, tmp_path, "0", None, records_files=["nothere.json"])
    with pytest.raises(DataError, match=r"records_files: case_id 0 is in .*counterfact-edit.json and in"):
        load_requests("counterfact", shared_data_dir, tmp_path, "0", None, records_files=EASYEDIT_CF[:1] * 2)
