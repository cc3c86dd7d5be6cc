"""complete_from_published: a study directory started again publishes what it recomputed plus everything published
before that it lacks, never less; one commit only."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from encore.reporting.collect import complete_from_published, set_aside, verify_collected
from encore.reporting.data_files import data_path

RUN = {"method": "memit", "variant": "plain", "order": 0}


def _code(commit):
    return json.dumps({"git_commit": commit})


def _write(directory, *, evaluated, ledger_positions, norm_edits, reached, commit="c1", unedited=False, gz=False):
    """A collected or published data directory of memit/plain (and the unedited model): metrics at ``evaluated``,
    ledger rows at ``ledger_positions``, norms at ``norm_edits``, runs.csv at ``reached`` edits."""
    directory.mkdir(parents=True)
    metrics = [{**RUN, "edits": e, "metric": "S", "value": float(e) / 100} for e in evaluated]
    if unedited:
        metrics.append(
            {"method": "unedited", "variant": "unedited", "order": 0, "edits": 0, "metric": "S", "value": 1.0}
        )
    frames = {
        "metrics.csv": pd.DataFrame(metrics, columns=[*RUN, "edits", "metric", "value"]),
        "ledger.csv": pd.DataFrame([{**RUN, "position": p, "iterations": 10 + p} for p in ledger_positions]),
        "norms.csv": pd.DataFrame([{**RUN, "edits": e, "batch": 0, "layer": 4, "frobenius_norm": e / 7} for e in norm_edits]),
        "runs.csv": pd.DataFrame([{**RUN, "edits": reached, "code": _code(commit)}]),
    }  # fmt: skip
    for name, frame in frames.items():
        if gz and name == "metrics.csv":  # a large published file is stored compressed
            with gzip.open(directory / f"{name}.gz", "wt") as handle:
                frame.to_csv(handle, index=False)
        else:
            frame.to_csv(directory / name, index=False)


def test_a_restarted_study_keeps_every_published_snapshot_it_has_not_recomputed(tmp_path):
    _write(tmp_path / "published", evaluated=[500, 1000], ledger_positions=range(10), norm_edits=[500, 1000],
           reached=1000, unedited=True, gz=True)  # fmt: skip
    # started again: snapshots to 1,500 recomputed, only the new one evaluated
    _write(tmp_path / "collected", evaluated=[1500], ledger_positions=range(15), norm_edits=[500, 1000, 1500],
           reached=1500)  # fmt: skip
    lines = complete_from_published(tmp_path / "collected", tmp_path / "published", tmp_path / "merged")
    assert lines == ["memit/plain/0: 2 evaluation(s) as published", "unedited/unedited/0: 1 evaluation(s) as published"]
    verify_collected(tmp_path / "merged")  # checksummed like a collection
    merged = {name: pd.read_csv(tmp_path / "merged" / name) for name in ("metrics.csv", "ledger.csv", "norms.csv", "runs.csv")}  # fmt: skip
    memit = merged["metrics.csv"][merged["metrics.csv"]["method"] == "memit"]
    assert list(memit["edits"]) == [500, 1000, 1500] and list(memit["value"]) == [5.0, 10.0, 15.0]
    assert list(merged["ledger.csv"]["position"]) == list(range(15))  # each edit once
    assert list(merged["norms.csv"]["edits"]) == [500, 1000, 1500]
    assert merged["runs.csv"][["method", "edits"]].values.tolist() == [["memit", 1500]]


def test_published_rows_fill_in_only_what_the_new_collection_lacks(tmp_path):
    """Recomputed only to 500 edits: the published ledger rows and snapshots after it are kept, the run's published
    row (more edits) too; what both hold comes from the new collection."""
    _write(tmp_path / "published", evaluated=[500, 1000], ledger_positions=range(10), norm_edits=[500, 1000], reached=1000)  # fmt: skip
    _write(tmp_path / "collected", evaluated=[], ledger_positions=range(5), norm_edits=[500], reached=500)
    pd.DataFrame([{**RUN, "edits": 500, "batch": 0, "layer": 4, "frobenius_norm": 99.0}]).to_csv(
        tmp_path / "collected" / "norms.csv", index=False
    )
    complete_from_published(tmp_path / "collected", tmp_path / "published", tmp_path / "merged")
    norms = pd.read_csv(tmp_path / "merged" / "norms.csv")
    assert norms["frobenius_norm"].tolist() == [99.0, 1000 / 7]
    assert pd.read_csv(tmp_path / "merged" / "ledger.csv")["position"].tolist() == list(range(10))
    assert pd.read_csv(tmp_path / "merged" / "runs.csv")["edits"].tolist() == [1000]


def test_a_collection_is_never_completed_from_another_commit(tmp_path):
    _write(tmp_path / "published", evaluated=[500], ledger_positions=range(5), norm_edits=[500], reached=500, commit="old")  # fmt: skip
    _write(tmp_path / "collected", evaluated=[1000], ledger_positions=range(10), norm_edits=[1000], reached=1000)
    with pytest.raises(ValueError, match="not one"):
        complete_from_published(tmp_path / "collected", tmp_path / "published", tmp_path / "merged")


def test_a_first_collection_with_nothing_published_is_itself(tmp_path):
    _write(tmp_path / "collected", evaluated=[500], ledger_positions=range(5), norm_edits=[500], reached=500)
    assert complete_from_published(tmp_path / "collected", tmp_path / "nothing", tmp_path / "merged") == []
    for name in ("metrics.csv", "ledger.csv", "norms.csv", "runs.csv"):
        assert pd.read_csv(tmp_path / "merged" / name).equals(pd.read_csv(tmp_path / "collected" / name))


def test_a_kept_run_keeps_its_published_snapshots_where_a_recomputed_base_differs(tmp_path):
    """A continuation's base recomputed on another CPU: its published ledger rows and snapshots stand; only the
    continuation's own (later) rows come from the new collection."""
    _write(tmp_path / "published", evaluated=[500, 1000], ledger_positions=range(10), norm_edits=[500, 1000], reached=1000)  # fmt: skip
    _write(tmp_path / "collected", evaluated=[1500], ledger_positions=range(15), norm_edits=[500, 1000, 1500], reached=1500)  # fmt: skip
    ledger = pd.read_csv(tmp_path / "collected" / "ledger.csv").assign(iterations=99)  # every recomputed edit differs
    ledger.to_csv(tmp_path / "collected" / "ledger.csv", index=False)
    complete_from_published(tmp_path / "collected", tmp_path / "published", tmp_path / "merged", keep=["memit/plain"])
    merged = pd.read_csv(tmp_path / "merged" / "ledger.csv")
    assert merged["position"].tolist() == list(range(15))
    assert merged["iterations"].tolist() == [10 + p for p in range(10)] + [99] * 5


def test_the_data_of_a_replaced_run_are_set_aside_never_deleted(tmp_path):
    _write(tmp_path / "published", evaluated=[500], ledger_positions=range(5), norm_edits=[500], reached=500, gz=True)
    before = pd.read_csv(tmp_path / "published" / "metrics.csv.gz")
    lines = set_aside(tmp_path / "published", tmp_path / "aside", ["memit/plain"])
    assert lines == [f"memit/plain: its published data set aside in {tmp_path / 'aside'}"]
    assert pd.read_csv(tmp_path / "aside" / "metrics.csv").equals(before)
    assert pd.read_csv(data_path(tmp_path / "published", "metrics.csv")).empty
    # a second time: the run is already aside, nothing published of it is left to move, nothing is lost
    _write(tmp_path / "again", evaluated=[1000], ledger_positions=range(10), norm_edits=[1000], reached=1000)
    set_aside(tmp_path / "again", tmp_path / "aside", ["memit/plain"])
    assert pd.read_csv(tmp_path / "aside" / "metrics.csv")["edits"].tolist() == [500]


def test_a_run_is_set_aside_once_and_its_new_making_then_stays_published(tmp_path):
    _write(tmp_path / "published", evaluated=[500], ledger_positions=range(5), norm_edits=[500], reached=500)
    set_aside(tmp_path / "published", tmp_path / "aside", ["memit/plain"])
    (tmp_path / "published").rename(tmp_path / "old")
    _write(tmp_path / "published", evaluated=[500, 1000], ledger_positions=range(10), norm_edits=[500], reached=1000)
    assert set_aside(tmp_path / "published", tmp_path / "aside", ["memit/plain"]) == []
    assert pd.read_csv(tmp_path / "published" / "metrics.csv")["edits"].tolist() == [500, 1000]
    assert pd.read_csv(tmp_path / "aside" / "metrics.csv")["edits"].tolist() == [500]
