"""collected/records.csv: gathered from every evaluation's records file, checksummed, published when present."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import encore.reporting.publish as publish_module
from encore.reporting.collect import CHECKSUMS, collect, completed_results, score_precisions, verify_collected


def _evaluation_files(root, edits, es):
    """A metrics CSV and its records file for one snapshot of memit/plain."""
    labels = dict(
        experiment="t", model="m", dataset="counterfact", method="memit", variant="plain", order=0, edits=edits
    )
    protocol = "counterfact/edited-so-far/nll-comparison"
    metrics = root / f"edits_{edits:05d}.csv"
    pd.DataFrame([{**labels, "metric": "ES", "value": 100 * sum(es) / len(es), "protocol": protocol}]).to_csv(
        metrics, index=False
    )
    records = root / f"edits_{edits:05d}.records.csv"
    pd.DataFrame(
        [
            {**labels, "subset": "edited-so-far", "protocol": protocol, "case_id": i, "es": e, "p_new_rewrite": 1 / 3}
            for i, e in enumerate(es)
        ]  # fmt: skip
    ).to_csv(records, index=False)
    return metrics, records


def _collect(tmp_path, with_records=True):
    tmp_path.joinpath("in").mkdir()
    first = _evaluation_files(tmp_path / "in", 2, [1.0, 0.0])
    second = _evaluation_files(tmp_path / "in", 4, [1.0, 1.0, 0.0, 1.0])
    for name in ("norms", "ledger"):
        pd.DataFrame([{"method": "memit", "variant": "plain", "edits": 2}]).to_csv(
            tmp_path / f"{name}.csv", index=False
        )
    out = tmp_path / "collected"
    records = [first[1], second[1]] if with_records else ()
    collect([first[0], second[0]], [tmp_path / "norms.csv"], [tmp_path / "ledger.csv"], [], out, record_files=records)
    return out


def test_collect_gathers_the_records_files_and_checksums_them(tmp_path):
    out = _collect(tmp_path)
    records = pd.read_csv(out / "records.csv")
    assert list(records["edits"]) == [2, 2, 4, 4, 4, 4] and list(records["case_id"]) == [0, 1, 0, 1, 2, 3]
    assert {"experiment", "model", "dataset", "method", "variant", "order", "subset", "protocol", "es"} <= set(records)
    metrics = pd.read_csv(out / "metrics.csv").set_index("edits")["value"]
    assert (100 * records.groupby("edits")["es"].mean()).to_dict() == pytest.approx(metrics.to_dict(), abs=1e-9)
    assert "0.333333333333," in (out / "records.csv").read_text().replace("\n", ",")  # 12 significant digits
    assert "records.csv" in json.loads((out / CHECKSUMS).read_text())
    verify_collected(out)
    (out / "records.csv").write_text((out / "records.csv").read_text().replace("0.333333333333", "0.3"))
    with pytest.raises(ValueError, match=r"records\.csv: checksum differs"):
        verify_collected(out)


def test_a_collected_folder_without_records_still_verifies_and_publishes(tmp_path, monkeypatch):
    out = _collect(tmp_path, with_records=False)
    assert not (out / "records.csv").exists() and "records.csv" not in json.loads((out / CHECKSUMS).read_text())
    verify_collected(out)
    monkeypatch.setattr(publish_module, "regenerate", lambda out, title=None: [])
    published = tmp_path / "published"
    (published / "data").mkdir(parents=True)
    (published / "data" / "records.csv").write_text("stale\n")
    publish_module.publish(out, published)
    assert sorted(p.name for p in (published / "data").iterdir()) == [
        "ledger.csv",
        "metrics.csv",
        "norms.csv",
        "runs.csv",
    ]
    # a records file that collect did not write (no checksum) is refused
    (out / "records.csv").write_text("case_id,es\n1,1\n")
    with pytest.raises(ValueError, match=r"records\.csv: checksum differs"):
        verify_collected(out)


def test_publish_copies_the_records_when_collected(tmp_path, monkeypatch):
    out = _collect(tmp_path)
    monkeypatch.setattr(publish_module, "regenerate", lambda out, title=None: [])
    publish_module.publish(out, tmp_path / "published")
    assert (tmp_path / "published" / "data" / "records.csv").read_bytes() == (out / "records.csv").read_bytes()


def _provenance(metrics_file, precision):
    execution = {"device": "cpu"} if precision is None else {"device": "cpu", "precision": precision}
    metrics_file.with_suffix(".provenance.json").write_text(json.dumps({"execution": execution}))


def test_collect_refuses_evaluations_scored_in_different_precisions(tmp_path):
    tmp_path.joinpath("in").mkdir()
    first = _evaluation_files(tmp_path / "in", 2, [1.0, 0.0])
    second = _evaluation_files(tmp_path / "in", 4, [1.0, 1.0, 0.0, 1.0])
    _provenance(first[0], None)  # written before the key existed: fp32
    _provenance(second[0], "fp32")
    assert score_precisions([first[0], second[0]]) == "fp32"
    _provenance(second[0], "bf16-mixed")
    with pytest.raises(ValueError, match=r"edits_00004\.csv: scored in bf16-mixed but .*edits_00002\.csv in fp32"):
        collect([first[0], second[0]], [], [], [], tmp_path / "collected")


def test_completed_results_takes_finished_snapshots_and_evaluations_only(tmp_path):
    run = tmp_path / "memit" / "plain" / "order0"
    for edits, written in ((500, True), (1000, False)):  # the second snapshot and its evaluation are in progress
        snapshot = run / "snapshots" / f"edits_{edits:05d}"
        snapshot.mkdir(parents=True)
        (snapshot / "ledger.csv").write_text("x\n")
        (run / "metrics").mkdir(exist_ok=True)
        (run / "metrics" / f"edits_{edits:05d}.records.csv").write_text("x\n")
        if written:
            (snapshot / "manifest.json").write_text("{}")
            (run / "metrics" / f"edits_{edits:05d}.csv").write_text("x\n")
    (tmp_path / "unedited" / "order0").mkdir(parents=True)
    (tmp_path / "unedited" / "order0" / "metrics.csv").write_text("x\n")
    files = completed_results(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files["manifests"]] == [
        "memit/plain/order0/snapshots/edits_00500/manifest.json"
    ]
    assert [p.relative_to(tmp_path).as_posix() for p in files["metrics"]] == [
        "memit/plain/order0/metrics/edits_00500.csv",
        "unedited/order0/metrics.csv",
    ]
    assert files["records"][0].name == "edits_00500.records.csv" and files["ledgers"][0].name == "ledger.csv"


def test_a_large_data_file_is_published_compressed_read_back_equal_and_the_plain_one_removed(tmp_path, monkeypatch):
    import gzip

    import encore.reporting.data_files as data_files
    from encore.reporting.data_files import data_path, write_data_file

    source = tmp_path / "records.csv"
    pd.DataFrame({"case_id": range(500), "es": [i % 2 for i in range(500)]}).to_csv(source, index=False)
    data = tmp_path / "data"
    data.mkdir()
    small = write_data_file(source, data, "records.csv")
    assert small.name == "records.csv" and data_path(data, "records.csv") == small
    monkeypatch.setattr(data_files, "COMPRESS_ABOVE_BYTES", 100)
    big = write_data_file(source, data, "records.csv")
    assert big.name == "records.csv.gz" and not (data / "records.csv").exists()
    assert data_path(data, "records.csv") == big
    pd.testing.assert_frame_equal(pd.read_csv(big), pd.read_csv(source))
    assert gzip.decompress(big.read_bytes()) == source.read_bytes()
    first = big.read_bytes()
    write_data_file(source, data, "records.csv")
    assert big.read_bytes() == first  # deterministic bytes: publishing twice changes nothing in git
