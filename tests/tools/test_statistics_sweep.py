"""tools/statistics_sweep.py, the covariance-statistics N-sweep: ``prepare`` writes configs the schema accepts and
hyperparameter files that differ from the packaged ones only in N; the distances and paired score differences on tiny
arrays with known answers; ``run`` skips a complete N and times the others (Snakemake replaced); ``analyse`` on a
synthetic sweep (no model, no Snakemake) reports a missing N instead of skipping it."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from safetensors.torch import save_file
from snakemake.utils import validate

from encore.editing.covariance import save_statistic
from encore.editing.hparams import Hyperparameters, hparams_file
from encore.reporting import statistics_sweep as sweep_page

spec = importlib.util.spec_from_file_location("statistics_sweep", REPO / "tools" / "statistics_sweep.py")
sweep_tool = importlib.util.module_from_spec(spec)
sys.modules["statistics_sweep"] = sweep_tool  # dataclasses look their module up
spec.loader.exec_module(sweep_tool)

SCHEMA = str(REPO / "encore" / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared two-N sweep (N = 100 and 300) whose results and benchmarks would live in its own folder."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = sweep_tool.Sweep(root / "sweep", (300, 100), results=root / "results", benchmarks=root / "benchmarks")
    sweep_tool.prepare(sweep, data_dir=None)
    return sweep


# ------------------------------------------------------------------------------------------------------ prepare
def test_prepare_writes_configs_that_pass_the_config_schema(prepared):
    assert prepared.ns == (100, 300) and prepared.reference == 300
    for n in prepared.ns:
        config = yaml.safe_load((prepared.folder(n) / "config.yaml").read_text())
        validate(config, SCHEMA)  # raises on any unknown, mistyped or missing key
        assert config["experiment"] == f"statistics-sweep-N{n}"
        assert (config["methods"], config["variants"]) == (["memit"], ["plain", "mpes_nc"])
        assert (config["num_edits"], config["batch_size"], config["snapshot_every"]) == (300, 100, 1)
        assert config["precision"] == {"edit": "bf16-mixed", "score": "fp32"}
        assert (config["threads"], config["statistics_threads"]) == (1, 2)
        assert config["resources"] == str(prepared.out / "resources")  # one cache for every N
        evaluation = config["evaluation"]
        assert [evaluation[k] for k in ("generation", "generation_efficacy", "downstream", "analysis")] == ["none"] * 4
        assert evaluation["perplexity_tokens"] == 0
        # the pipeline's own lookup finds this N's copy
        assert hparams_file(config["hparams_dir"], "memit", config["model"], "counterfact") == prepared.hparams(
            n, "memit"
        )


@pytest.mark.parametrize("method, variant", [("memit", "plain"), ("memit", "mpes_nc"), ("alphaedit", "plain")])
def test_prepare_writes_hparams_that_differ_from_the_packaged_ones_only_in_n(prepared, method, variant):
    packaged = Hyperparameters.from_yaml(REPO / "hparams" / method.upper() / "smollm2-135m.yaml", variant)
    for n in prepared.ns:
        ours = Hyperparameters.from_yaml(prepared.hparams(n, method), variant)
        assert ours.mom2_n_samples == n
        assert ours == packaged.with_overrides(mom2_n_samples=n)  # ENCORE keeps MPES +2 and lambda_n 10


def test_an_hparams_file_without_one_n_line_is_refused(tmp_path):
    (tmp_path / "x.yaml").write_text("editor: memit\n")
    with pytest.raises(sweep_tool.SweepError, match="expected one top-level mom2_n_samples line, found 0"):
        sweep_tool.sweep_hparams(tmp_path / "x.yaml", 100)


def test_bad_input_ends_with_one_line():
    with pytest.raises(SystemExit, match="give at least two different positive N"):
        sweep_tool.main(["prepare", "--out", "x", "--n", "100"])


# ------------------------------------------------------------------------------------------------------ analysis
def test_relative_distance_is_zero_for_the_reference_and_the_hand_computed_value_for_a_perturbation():
    reference = {4: np.diag([3.0, 4.0]), 5: np.array([[12.0, 0.0], [0.0, 0.0]])}  # norms 5 and 12: together 13
    assert sweep_tool.relative_distances(reference, reference) == {4: 0.0, 5: 0.0, "all": 0.0}
    perturbed = {4: reference[4] + np.array([[0.0, 1.0], [0.0, 0.0]]), 5: reference[5]}
    distances = sweep_tool.relative_distances(perturbed, reference)
    assert distances == {4: pytest.approx(1 / 5), 5: 0.0, "all": pytest.approx(1 / 13)}


def test_the_projector_distance_counts_the_directions_that_leave_the_null_space():
    reference = sweep_tool.projector(np.diag([0.01, 1.0, 0.001]), 0.02)  # eigenvalues below 0.02: 1st and 3rd
    np.testing.assert_allclose(reference, np.diag([1.0, 0.0, 1.0]))
    ours = sweep_tool.projector(np.diag([0.03, 1.0, 0.001]), 0.02)  # the first direction leaves
    assert sweep_tool.relative_distances({8: ours}, {8: reference})["all"] == pytest.approx(1 / math.sqrt(2))


def scores(facts: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(facts, 3)).astype(float)  # es, ps, ns per fact


def test_identical_records_differ_by_exactly_zero_with_a_zero_width_interval():
    intervals = sweep_tool.edit_scores(scores(), scores())
    for quantity in ("S_diff", "NS_diff"):
        assert (intervals[quantity].estimate, intervals[quantity].low, intervals[quantity].high) == (0.0, 0.0, 0.0)
    assert intervals["NS"].estimate == 100 * scores()[:, 2].mean()
    assert intervals["S"].low < intervals["S"].estimate < intervals["S"].high


def test_a_known_shift_gives_the_expected_sign():
    raised = scores().copy()
    raised[:, 2] = 1.0  # every neighbourhood prompt right: NS and S rise
    intervals = sweep_tool.edit_scores(raised, scores())
    assert intervals["NS_diff"].estimate == pytest.approx(100 * (1 - scores()[:, 2].mean()))
    assert intervals["NS_diff"].low > 0 and intervals["S_diff"].low > 0
    lowered = scores().copy()
    lowered[:, 0] = 0.0  # no edit succeeds: S falls to 0
    assert sweep_tool.edit_scores(lowered, scores())["S_diff"].high < 0


def test_fact_scores_keep_the_edited_facts_of_the_probability_comparison_and_pair_them(tmp_path):
    common = {"edits": 300, "subset": "edited-so-far", "ps": 1.0, "ns": 0.5}
    rows = [{**common, "protocol": sweep_tool.SCORED, "case_id": case, "es": 1.0} for case in (3, 1, 2)]
    rows += [{**common, "protocol": "counterfact/edited-so-far/greedy-exact-match", "case_id": 1, "es": 0.0},
             {**common, "edits": 200, "protocol": sweep_tool.SCORED, "case_id": 9, "es": 0.0}]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "records.csv", index=False)
    frame = sweep_tool.fact_scores(tmp_path / "records.csv")
    assert list(frame.index) == [1, 2, 3] and (frame["es"] == 1.0).all()
    ours, reference = sweep_tool.paired(frame.loc[[2, 3]], frame)
    assert ours.shape == reference.shape == (2, 3)


# ------------------------------------------------------------------------------------------------------ run
def test_run_skips_a_complete_n_and_times_the_others(prepared, monkeypatch):
    for path in prepared.missing(100):  # N = 100 complete
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    bench = prepared.benchmarks / "statistics-sweep-N300" / "statistics"
    bench.mkdir(parents=True)
    (bench / "memit.tsv").write_text("s\th:m:s\tcpu_time\n12.5\t0:00:12\t20.0\n")
    calls = []
    monkeypatch.setattr(sweep_tool.subprocess, "call", lambda command, **kwargs: calls.append((command, kwargs)) or 0)
    sweep_tool.run(prepared)
    (command, kwargs), = calls  # fmt: skip
    assert command[1:6] == ["--cores", "2", "--configfile", str(prepared.folder(300) / "config.yaml"), "--nolock"]
    assert command[-3:] == prepared.targets(300) and kwargs["cwd"] == REPO
    timings = pd.read_csv(prepared.out / "timings.csv").set_index("n")
    assert math.isnan(timings.loc[100, "wall_s"]) and timings.loc[300, "wall_s"] >= 0
    assert (timings.loc[300, "statistics_s"], timings.loc[300, "statistics_cpu_s"]) == (12.5, 20.0)
    monkeypatch.setattr(sweep_tool.subprocess, "call", lambda command, **kwargs: 1)
    with pytest.raises(sweep_tool.SweepError, match=r"N = 300: Snakemake failed \(exit 1\); see .*N300/snakemake.log"):
        sweep_tool.run(prepared)
    for path in prepared.missing(100) or [prepared.statistics_manifest(100)]:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------ analyse
def write_results(sweep, n: int, c0: np.ndarray, weights: dict, facts: np.ndarray | None) -> None:
    """What Snakemake would leave for N: the statistics manifest and its C0 file; per run, a snapshot (weights,
    manifest), metrics and per-fact scores (``facts`` None: the runs are missing)."""
    code = {"git_commit": "abc123", "git_dirty": False}
    key = {"statistic": "second_moment_of_down_proj_inputs", "n_samples": n, "layer": 4, "max_length": 256,
           "dtype": "float32"}  # fmt: skip
    path = sweep.statistics_manifest(n).parent / f"c0-{n}.safetensors"
    save_statistic(path, key, torch.from_numpy(c0).float(), count=1000)
    sweep.statistics_manifest(n).write_text(json.dumps({
        "layers": {"4": {"path": str(path), "key": key}}, "corpus": {"path": "/data/wiki.jsonl.gz", "sha256": "f" * 64},
        "seconds": 1.5, "execution": {"device": "cpu"}, "code": code}))  # fmt: skip
    for variant in sweep_tool.RUNS if facts is not None else []:
        snapshot = sweep.snapshot(n, variant)
        snapshot.mkdir(parents=True)
        save_file({"layer4": torch.from_numpy(weights[variant]).float()}, str(snapshot / "weights.safetensors"))
        (snapshot / "manifest.json").write_text(json.dumps({"code": code, "seed": 0}))
        sweep.metrics(n, variant).parent.mkdir(parents=True)
        sweep.metrics(n, variant).write_text("metric,value\n")
        records = pd.DataFrame(facts, columns=["es", "ps", "ns"]).assign(
            protocol=sweep_tool.SCORED, edits=300, case_id=range(len(facts)))  # fmt: skip
        records.to_csv(sweep.metrics(n, variant, ".records.csv"), index=False)


def test_analyse_publishes_distances_differences_and_a_missing_n(tmp_path, monkeypatch):
    sweep = sweep_tool.Sweep(tmp_path / "sweep", (100, 300, 1000), results=tmp_path / "results", benchmarks=tmp_path)
    sweep_tool.prepare(sweep)
    with pytest.raises(sweep_tool.SweepError, match=r"statistics-sweep-N1000/statistics/memit.json: missing.*`python "
                       r"tools/statistics_sweep.py run --out"):  # fmt: skip
        sweep_tool.analyse(sweep, tmp_path / "published")
    for n in (1000, 300):
        sweep.statistics_manifest(n).parent.mkdir(parents=True)
    basis = np.random.default_rng(1).normal(size=(4, 4))
    reference_c0 = basis @ np.diag([0.001, 0.01, 1.0, 2.0]) @ basis.T / 4
    edited = {"plain": np.ones((2, 4)), "mpes_nc": np.full((2, 4), 0.5)}
    write_results(sweep, 1000, reference_c0, edited, scores(40))
    write_results(sweep, 300, 1.1 * reference_c0, {v: 1.1 * w for v, w in edited.items()}, scores(40, seed=1))
    monkeypatch.setattr(sweep_tool, "unedited_weights", lambda resources, layers: {4: np.zeros((2, 4))})
    sweep_tool.analyse(sweep, tmp_path / "published")

    published = pd.read_csv(tmp_path / "published" / "sweep.csv")

    def value(n, run, quantity, layer="all"):
        return sweep_page.select(published, run, quantity, layer).query("n == @n")["value"].item()

    assert value(1000, "statistics", "rel_C0") == 0 and value(300, "statistics", "rel_C0") == pytest.approx(0.1, 1e-5)
    assert value(300, "statistics", "rel_C0", "4") == pytest.approx(0.1, 1e-5)
    assert value(1000, "MEMIT", "S_diff") == 0 and value(300, "ENCORE", "rel_dW") == pytest.approx(0.1, 1e-5)
    assert value(100, "statistics", "available") == 0 and value(100, "MEMIT", "available") == 0
    page = (tmp_path / "published" / "results.md").read_text()
    assert "## Missing" in page and "N = 100, MEMIT: missing:" in page and "`abc123`" in page
    assert "**Supported N: not decided (an N is missing)**" in page
    assert (tmp_path / "published" / sweep_page.FIGURE).stat().st_size > 0
    protocol = pd.read_csv(tmp_path / "published" / "protocol.csv").set_index("key")["value"]
    assert (protocol["reference_n"], protocol["layers"], protocol["max_length"]) == ("1000", "4", "256")
