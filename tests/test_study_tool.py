"""tools/study.py, the long-study runner: where each run stands and the time left come from the files a study has
written; a recomputed snapshot must equal the published one (or the study stops publishing); the pinned commit and
the checkout's place are enforced."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO

spec = importlib.util.spec_from_file_location("study_tool", REPO / "tools" / "study.py")
study_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_tool)


@pytest.fixture
def study(tmp_path):
    """A study directory whose checkout holds the configs (no clone, no venv: its python is this one)."""
    checkout = tmp_path / "study" / "checkout"
    (checkout / "configs" / "studies").mkdir(parents=True)
    shutil.copy(REPO / "config.yaml", checkout / "config.yaml")
    (checkout / "configs" / "x.yaml").write_text(yaml.safe_dump(
        {"experiment": "x", "num_edits": 1000, "batch_size": 100, "snapshot_every": 5, "order_sample": "0"}))  # fmt: skip
    (checkout / "configs" / "studies" / "x.yaml").write_text(yaml.safe_dump(
        {"config": "configs/x.yaml", "publish": "docs/results/x",
         "lanes": [["memit/plain", "memit/nc", {"run": "memit/plain", "to": 1500}], ["memit/mpes_nc", "unedited"]]}))  # fmt: skip
    (checkout / ".venv" / "bin").mkdir(parents=True)
    python = checkout / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    state = {"study_file": "configs/studies/x.yaml", "commit": "0" * 40, "data_dir": None}
    (tmp_path / "study" / "study.json").write_text(json.dumps(state))
    return study_tool.Study(tmp_path / "study")


def write_snapshot(study, run, edits, edit_seconds, evaluate_seconds=None):
    base = study.checkout / "results" / "x" / run / "order0"
    (base / "snapshots" / f"edits_{edits:05d}").mkdir(parents=True)
    (base / "snapshots" / f"edits_{edits:05d}" / "manifest.json").write_text("{}")
    bench = study.checkout / "benchmarks" / "x" / run / "order0"
    bench.mkdir(parents=True, exist_ok=True)
    (bench / f"edit_{edits:05d}.tsv").write_text(f"s\th:m:s\n{edit_seconds}\t0:00:00\n")
    if evaluate_seconds is not None:
        (base / "metrics").mkdir(exist_ok=True)
        (base / "metrics" / f"edits_{edits:05d}.csv").write_text("x\n")
        (bench / f"evaluate_{edits:05d}.tsv").write_text(f"s\th:m:s\n{evaluate_seconds}\t0:00:00\n")


def test_status_counts_what_each_run_reached_and_estimates_the_time_left_from_measured_rates(study):
    write_snapshot(study, "memit/plain", 500, edit_seconds=1000, evaluate_seconds=100)
    plain, onwards = study_tool.entry("memit/plain"), study_tool.entry({"run": "memit/plain", "to": 1500})
    assert study.targets(plain) == ["results/x/memit/plain/order0/metrics/edits_00500.csv",
                                    "results/x/memit/plain/order0/metrics/edits_01000.csv"]  # fmt: skip
    # a continuation to more edits targets its new snapshots only, keeping the finished ones (mtime triggers)
    assert study.targets(onwards) == ["results/x/memit/plain/order0/metrics/edits_01500.csv"]
    assert "num_edits=1500" in study.snakemake_args(1, 1500) and "mtime" in study.snakemake_args(1, 1500)
    assert "mtime" not in study.snakemake_args(1)
    plain = study_tool.run_status(study, plain)
    assert (plain["edits"], plain["of"], plain["evaluated"], plain["snapshots"]) == (500, 1000, 1, 2)
    assert plain["s_per_edit"] == 2.0 and (plain["edits_left"], plain["evaluations_left"]) == (500, 1)
    rows = {row["run"]: row for row in study_tool.status_rows(study)}
    assert rows["memit/plain"]["left_hours"] == pytest.approx((500 * 2.0 + 1 * 100) / 3600)
    lines = study_tool.status_table(study)
    row = {line.split(" | ")[1]: line for line in lines[2:]}
    assert "| 500 / 1,000 | 1 / 2 | 2.00 | 100 | 0.3 h | 0.3 h |" in row["memit/plain"]
    # memit/nc has not started: estimated from the measured run of its kind (no MPES): 1000 x 2 s + 2 x 100 s
    assert row["memit/nc"].endswith("| 0.6 h |")
    # the continuation to 1,500: 500 edits x 2 s + 1 evaluation x 100 s
    assert row["memit/plain to 1,500"].endswith("| 0.3 h |")
    assert lines[5].endswith("| 1.2 h |")  # lane 0 in all: 1100 s + 2200 s + 1100 s
    # nothing measured with MPES yet: ENCORE's time left is unknown, and so is its lane's
    assert row["memit/mpes_nc"].endswith("| ? |") and lines[-1].endswith("| ? |")
    # the unedited model: one evaluation at the mean measured rate (100 s)
    unedited = next(r for r in study_tool.status_rows(study) if r["run"] == "unedited")
    assert unedited["left_hours"] == pytest.approx(100 / 3600)


def test_an_evaluation_left_is_estimated_from_what_that_snapshot_took_in_the_runs_that_reached_it(study):
    write_snapshot(study, "memit/plain", 500, edit_seconds=1000, evaluate_seconds=100)
    write_snapshot(study, "memit/plain", 1000, edit_seconds=1000, evaluate_seconds=400)  # the last: every fact
    write_snapshot(study, "memit/nc", 500, edit_seconds=1500, evaluate_seconds=120)
    rows = {row["run"]: row for row in study_tool.status_rows(study)}
    # memit/nc: 500 edits at its own 3 s/edit, and its last evaluation as memit/plain's took (not its own 120 s)
    assert rows["memit/nc"]["left_hours"] == pytest.approx((500 * 3.0 + 400) / 3600)
    assert rows["memit/plain"]["left_hours"] == 0
    # with every lane's time known, the study ends when the lanes, sharing their runs, end together
    write_snapshot(study, "memit/mpes_nc", 500, edit_seconds=500, evaluate_seconds=100)
    rows = study_tool.status_rows(study)
    lanes = [row["left_hours"] for row in rows if row["run"] == "lane total"]
    assert rows[-1]["run"] == "study, both lanes busy" and rows[-1]["left_hours"] == pytest.approx(sum(lanes) / 2)
    assert study_tool.status_table(study, rows)[-1].endswith(f"| {sum(lanes) / 2:.1f} h |")


def test_every_pause_and_resume_is_logged_and_the_paused_time_summed(study, monkeypatch, capsys):
    import signal

    sent = []
    monkeypatch.setattr(study_tool, "runner_pid", lambda _: 4242)
    monkeypatch.setattr(study_tool.os, "killpg", lambda pid, which: sent.append((pid, which)))
    study_tool.signal_runner(study, signal.SIGSTOP)
    study_tool.signal_runner(study, signal.SIGCONT)
    assert sent == [(4242, signal.SIGSTOP), (4242, signal.SIGCONT)]
    log = study.logs / study_tool.SIGNALS
    assert [line[20:] for line in log.read_text().splitlines()] == ["SIGSTOP", "SIGCONT"]
    log.write_text("2026-12-07 15:58:00 SIGSTOP\n2026-12-07 16:28:30 SIGCONT\n2026-12-07 17:00:00 SIGSTOP\n"
                   "2026-12-07 17:00:10 SIGSTOP\n2026-12-07 17:01:00 SIGCONT\n")  # fmt: skip
    assert study_tool.paused(study) == (2, 30.5 * 60 + 60)  # a second stop while paused is one pause
    study_tool.status(study)
    assert "paused 2 time(s), 0.5 h in all" in capsys.readouterr().out


def lanes_of(runs: dict[str, list[str]], done=()) -> dict:
    return {index: {"runs": list(labels), "queue": [label for label in labels if label not in done], "current": None,
                    "done": [label for label in labels if label in done], "failed": []}
            for index, labels in runs.items()}  # fmt: skip


def test_a_lane_whose_runs_are_done_takes_the_last_waiting_run_of_the_other(study):
    items = {item["label"]: item for lane in study.entries() for item in lane}
    lanes = lanes_of({"0": ["memit/plain", "memit/nc", "memit/plain to 1,500"], "1": ["memit/mpes_nc", "unedited"]},
                     done=["memit/plain", "memit/mpes_nc", "unedited"])  # fmt: skip
    assert study_tool.next_run(lanes, "0", items) == "memit/nc"  # its own queue first
    assert study_tool.next_run(lanes, "1", items) == "memit/plain to 1,500"  # then the other lane's waiting run
    assert lanes["1"]["runs"] == ["memit/mpes_nc", "unedited", "memit/plain to 1,500"]
    assert lanes["0"]["runs"] == ["memit/plain", "memit/nc"] and lanes["0"]["queue"] == []
    assert study_tool.next_run(lanes, "0", items) is None  # nothing left: the lane ends


def test_a_continuation_waits_for_the_run_it_continues(study):
    items = {item["label"]: item for lane in study.entries() for item in lane}
    lanes = lanes_of({"0": ["memit/plain", "memit/nc", "memit/plain to 1,500"], "1": ["memit/mpes_nc", "unedited"]},
                     done=["memit/mpes_nc", "unedited"])  # fmt: skip
    lanes["0"]["queue"].remove("memit/plain")  # lane 0 runs memit/plain now
    assert study_tool.next_run(lanes, "1", items) == "memit/nc"  # not the continuation of a run not yet done
    assert study_tool.next_run(lanes, "1", items) is None
    assert lanes["0"]["queue"] == ["memit/plain to 1,500"]


def test_the_runner_starts_every_planned_run_once_and_records_where_it_ran(study, monkeypatch):
    started = []
    monkeypatch.setattr(study_tool.subprocess, "call", lambda command, **kwargs: started.append(command[-1]) or 0)
    monkeypatch.setattr(study, "targets", lambda item, published=None: [item["label"]])
    monkeypatch.setattr(study, "snakemake_args", lambda cores, to=None: [])
    monkeypatch.setattr(study, "statistics_targets", lambda: ["statistics"])
    study.logs.mkdir(parents=True)
    study_tool.run_lanes(study)
    planned = sorted(item["label"] for lane in study.entries() for item in lane)
    assert started[0] == "statistics" and sorted(started[1:]) == planned
    lanes = json.loads((study.dir / "lanes.json").read_text())
    assert sorted(label for lane in lanes.values() for label in lane["done"]) == planned
    assert all(lane["current"] is None and lane["queue"] == [] for lane in lanes.values())
    assert sorted(label for lane in lanes.values() for label in lane["runs"]) == planned


def test_status_shows_each_run_in_the_lane_the_runner_gave_it(study):
    lanes = lanes_of({"0": ["memit/plain", "memit/nc"], "1": ["memit/mpes_nc", "unedited", "memit/plain to 1,500"]})
    (study.dir / "lanes.json").write_text(json.dumps(lanes))
    rows = {row["run"]: row["lane"] for row in study_tool.status_rows(study) if row["run"] != "lane total"}
    assert rows["memit/plain to 1,500"] == 1 and rows["memit/nc"] == 0
    # a lanes.json of another plan is ignored: the study file's lanes
    (study.dir / "lanes.json").write_text(json.dumps(lanes_of({"0": ["emmet/plain"], "1": []})))
    rows = {row["run"]: row["lane"] for row in study_tool.status_rows(study) if row["run"] != "lane total"}
    assert rows["memit/plain to 1,500"] == 0


def _publish_evaluations(study, tmp_path, evaluations, commit="0" * 40):
    """A published directory holding ``evaluations`` ((method, variant, edits) of order 0), made by ``commit``."""
    data = tmp_path / "published" / "data"
    data.mkdir(parents=True)
    pd.DataFrame([{"method": m, "variant": v, "order": 0, "edits": e, "metric": "S", "value": 1.0}
                  for m, v, e in evaluations]).to_csv(data / "metrics.csv", index=False)  # fmt: skip
    pd.DataFrame([{"method": "memit", "variant": "plain", "order": 0, "edits": 1000,
                   "code": json.dumps({"git_commit": commit})}]).to_csv(data / "runs.csv", index=False)  # fmt: skip
    study_file = study.checkout / "configs" / "studies" / "x.yaml"
    plan = yaml.safe_load(study_file.read_text())
    study_file.write_text(yaml.safe_dump({**plan, "publish": str(tmp_path / "published")}))  # absolute: REPO / it


def test_a_study_started_again_redoes_only_the_runs_not_published_whole(study, tmp_path):
    """A lost study directory, started again: the runs published whole from its commit are not redone; a run
    published in part is made again whole (another CPU need not reproduce its snapshots); a continuation rebuilds the
    edits of the run it continues."""
    _publish_evaluations(study, tmp_path, [("memit", "plain", 500), ("memit", "plain", 1000),
                                           ("unedited", "unedited", 0), ("memit", "nc", 500)])  # fmt: skip
    published = study.published()
    assert published == {("memit/plain", "0", 500), ("memit/plain", "0", 1000), ("unedited", "0", 0)}
    items = {item["label"]: item for lane in study.entries() for item in lane}
    assert study.targets(items["memit/plain"], published) == []
    assert study.targets(items["unedited"], published) == []
    assert study.targets(items["memit/nc"], published) == [f"results/x/memit/nc/order0/metrics/edits_0{n}.csv" for n in ("0500", "1000")]  # fmt: skip
    status = {label: study_tool.run_status(study, item, published) for label, item in items.items()}
    assert (status["memit/plain"]["edits"], status["memit/plain"]["evaluated"], status["memit/plain"]["edits_left"]) == (1000, 2, 0)  # fmt: skip
    assert status["unedited"]["evaluations_left"] == 0
    assert (status["memit/nc"]["edits"], status["memit/nc"]["edits_left"], status["memit/nc"]["ends_left"]) == (0, 1000, [500, 1000])  # fmt: skip
    # the continuation rebuilds the 1,000 edits of the run it continues (whose evaluations are all published)
    assert status["memit/plain to 1,500"]["edits"] == 1000 and status["memit/plain to 1,500"]["edits_left"] == 1500
    write_snapshot(study, "memit/nc", 500, 1000.0)  # recomputed: edits from there on
    assert study_tool.run_status(study, items["memit/nc"], published)["edits_left"] == 500
    rows = {row["run"]: row for row in study_tool.status_rows(study)}
    assert rows["memit/plain"]["left_hours"] == 0.0 and rows["unedited"]["left_hours"] == 0.0


def test_nothing_published_by_another_commit_is_taken_as_done(study, tmp_path):
    _publish_evaluations(study, tmp_path, [("memit", "plain", 500), ("memit", "plain", 1000)], commit="1" * 40)
    assert study.published() == set()


def _published(directory, iterations, precision=None):
    directory.mkdir(parents=True)
    ledger = pd.DataFrame({"method": "memit", "variant": "plain", "order": 0, "case_id": [7, 8], "position": [0, 1],
                           "iterations": iterations, "targets_s": [1.0, 2.0]})  # fmt: skip
    ledger.to_csv(directory / "ledger.csv", index=False)
    runs = pd.DataFrame({"method": ["memit"], "variant": ["plain"]})
    if precision:
        runs["edit_precision"] = precision
    runs.to_csv(directory / "runs.csv", index=False)


def test_a_recomputed_snapshot_must_equal_the_published_one(tmp_path):
    _published(tmp_path / "ours", [20, 11], "bf16-mixed")
    _published(tmp_path / "same", [20, 11], "bf16-mixed")
    lines, differences = study_tool.check_against_published(tmp_path / "ours", tmp_path / "same")
    assert lines == ["memit/plain/0: 2 edits recomputed; ledger equal to the published one"]
    assert all(row["edits_differing"] == 0 for row in differences)
    _published(tmp_path / "changed", [20, 12], "bf16-mixed")
    with pytest.raises(study_tool.StudyError, match="memit/plain/0: the recomputed ledger differs"):
        study_tool.check_against_published(tmp_path / "ours", tmp_path / "changed")
    _published(tmp_path / "fp32", [20, 12])  # published before precisions were recorded: fp32, not comparable
    assert study_tool.check_against_published(tmp_path / "ours", tmp_path / "fp32") == ([], [])


def test_a_run_declared_recomputed_on_another_cpu_has_its_differences_measured_not_refused(tmp_path):
    _published(tmp_path / "ours", [20, 11], "bf16-mixed")
    _published(tmp_path / "changed", [20, 14], "bf16-mixed")
    lines, differences = study_tool.check_against_published(
        tmp_path / "ours", tmp_path / "changed", {"memit/plain": "keep"}
    )
    assert "DIFFERS" in lines[0] and "recomputed on another CPU: keep" in lines[0]
    iterations = next(row for row in differences if row["column"] == "iterations")
    assert (iterations["edits_compared"], iterations["edits_differing"], iterations["largest_difference"]) == (
        2,
        1,
        3.0,
    )
    text = study_tool.reproducibility_text(pd.DataFrame(differences), {"memit/plain": "keep"})
    assert (
        "memit/plain (recomputed as a continuation's base" in text and "iterations in 1 (largest difference 3)" in text
    )


def test_a_study_keeps_its_pinned_commit_and_lives_outside_the_checkout(study):
    with pytest.raises(study_tool.StudyError, match="pinned to 0000000000"):
        study_tool.prepare(study, "configs/studies/x.yaml", "HEAD", None)
    with pytest.raises(SystemExit, match="inside the checkout"):
        study_tool.main(["start", "--dir", str(REPO / "some-study")])
    with pytest.raises(SystemExit, match="no study here"):
        study_tool.main(["status", "--dir", str(study.dir / "elsewhere")])
