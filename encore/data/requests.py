"""Edit requests: the records of a data set (or of ``records_files``) in the authors' order, with their provenance.

The data files come from encore.data.files, their loaders from encore.data.datasets and the record schemas from
encore.data.record_formats; this module puts them together for the edit and evaluate stages and the library API.
"""

from __future__ import annotations

import os
from pathlib import Path

from encore.data import datasets, files, record_formats
from encore.progress import log


def load_requests(
    dataset: str, data_dir, cache_dir, order_sample: str, limit: int | None, records_files: list | None = None
):
    """Edit requests in the authors' order (filtered to the records available) and their provenance.

    ``records_files`` (config key): JSON files read instead of the dataset's registered records file, each in any
    schema of encore.record_formats (ROME or EasyEdit CounterFact, MEND or EasyEdit/KnowEdit zsRE; detected per
    file). A relative path is looked up in the data directory (``data_dir`` or ENCORE_DATA_DIR), then in the working
    directory. The authors' order applies when every record has its own case_id (both CounterFact schemas), or to
    the full registered zsRE file; other records are edited in the files' order."""
    if dataset not in ("counterfact", "zsre"):
        raise ValueError(f"unknown dataset {dataset!r} (known: counterfact, zsre)")
    if records_files:
        records, read = _load_records_files(dataset, records_files, data_dir)
        order_file = files.resolve_data_file(f"{dataset}_order", data_dir, cache_dir)
        full_zsre = [f["git_blob_sha1"] for f in read] == [files.REGISTRY["zsre"].git_blob_sha1]
        authors_order = all(f["own_case_ids"] for f in read) or full_zsre
        source = {"records_files": [{k: v for k, v in f.items() if k != "own_case_ids"} for f in read]}
    else:
        records_file = files.resolve_data_file(dataset, data_dir, cache_dir)
        order_file = files.resolve_data_file(f"{dataset}_order", data_dir, cache_dir)
        load = datasets.load_counterfact if dataset == "counterfact" else datasets.load_zsre
        records = load(records_file.path)
        # positions of the local zsRE subset in the full file are unknown: the authors' order cannot apply
        authors_order = not (dataset == "zsre" and records_file.source == "local")
        source = {"records_file": {"path": str(records_file.path), "sha256": records_file.sha256,
                                   "source": records_file.source}}  # fmt: skip
    order = datasets.load_order(order_file.path, order_sample)
    if not authors_order:
        order = [record.case_id for record in records]
    ordered, skipped = datasets.order_records(records, order, limit)
    provenance = {
        "dataset": dataset,
        **source,
        "order_file": {"path": str(order_file.path), "sha256": order_file.sha256, "sample": order_sample},
        "order_ids_not_available": skipped,
        "records_available": len(records),
    }
    if records_files:
        provenance["order"] = "authors" if authors_order else "file"
    return ordered, provenance


def _records_path(name, data_dir) -> Path:
    """A records file: absolute, or relative to the data directory (if set and there), else to the working one."""
    path = Path(name)
    directory = data_dir or os.environ.get("ENCORE_DATA_DIR")
    if not path.is_absolute() and directory and (Path(directory) / path).is_file():
        return Path(directory) / path
    if not path.is_file():
        where = f"{directory} or the working directory" if directory else "the working directory"
        raise files.DataError(f"records_files: {name} not found (looked in {where}); give an existing JSON file")
    return path


def _load_records_files(dataset: str, names: list, data_dir) -> tuple[list, list[dict]]:
    """Records of every file (case ids unique over all of them) and, per file, what the provenance records."""
    records, read, first_file = [], [], {}
    for name in names:
        path = _records_path(name, data_dir)
        loaded, info = record_formats.load_records(path, dataset, first_case_id=len(records))
        for record in loaded:
            if record.case_id in first_file:
                raise files.DataError(
                    f"records_files: case_id {record.case_id} is in {first_file[record.case_id]} and in {path}; "
                    "give every record its own case_id"
                )
            first_file[record.case_id] = path
        sha256, blob = files.file_digests(path)
        read.append({**info, "sha256": sha256, "git_blob_sha1": blob})
        for note in info["notes"]:
            log(f"{path.name} ({info['schema']} schema): {note}")
        records += loaded
    return records, read


def records_description(provenance: dict) -> str:
    if "records_files" in provenance:
        return ", ".join(entry["path"] for entry in provenance["records_files"])
    return provenance["records_file"]["path"]
