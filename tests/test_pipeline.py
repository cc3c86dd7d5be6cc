"""The Snakemake workflow: lint, config validation, an end-to-end run on a tiny local model, and a
killed run that resumes to bitwise-identical weights."""

import json
import os
import re
import signal
import subprocess
import time

import pandas as pd
import pytest
from pipeline_helpers import make_workdir, save_tiny_model, snakemake, snakemake_command
from safetensors.torch import load_file

from encore.data.files import file_sha256


def test_workflow_lints_clean():
    result = snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "override, key",
    [("num_edit=5", "num_edit"), ("batch_size=many", "batch_size"), ("variants=[fancy-thing]", "variants")],
)
def test_bad_config_value_is_named_in_the_error(override, key):
    result = snakemake("-n", "--cores", "1", "--config", override, check=False)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["num_edits=999999"], "ordering 0 of counterfact has only 4680 requests"),
        (['methods=["rome"]'], "unknown method 'rome'; known methods: alphaedit, emmet, memit"),
        # contradicting keys are refused by the dry run, not by the first job
        (["precision=bf16-mixed", "dtype=bfloat16"], "precision: bf16-mixed keeps float32 weights and needs dtype"),
        (["precision={edit: bf16-mixed, score: fp32}", "dtype=float16"], "needs dtype: float32 (got float16)"),
    ],
)
def test_impossible_config_stops_before_any_job_with_the_fix(overrides, expected):
    result = snakemake("-n", "--cores", "1", "--config", *overrides, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and expected in output
    assert len(output.splitlines()) < 30  # the cause, not thousands of missing-file lines


def test_several_orderings_and_per_method_variants_expand_to_their_runs():
    result = snakemake(
        "-n",
        "--cores",
        "1",
        "--config",
        'order_sample=["0","3"]',
        'variants={"memit": ["plain", "mpes_nc"]}',
        "num_edits=100",
        "batch_size=25",
        "snapshot_every=2",
    )
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    # 2 orderings x 2 variants x 2 segments of 50 edits; one unedited evaluation per ordering
    assert counts["edit_segment"] == "8" and counts["evaluate_snapshot"] == "8" and counts["evaluate_unedited"] == "2"
    assert "memit/mpes_nc/order3/snapshots/edits_00100" in result.stdout


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return save_tiny_model(root / "tiny-llama"), root / "resources"


@pytest.mark.slow
def test_end_to_end_run_on_a_tiny_model(tiny_model, tmp_path):
    model_dir, resources = tiny_model
    precision = {"edit": "bf16-mixed", "score": "fp32"}  # edit jobs in one precision, scoring in the other
    args = make_workdir(tmp_path, model_dir, resources, variants=["plain", "mpes_nc"], precision=precision)
    snakemake(*args)
    results = tmp_path / "results" / "tiny"
    table = pd.read_csv(results / "tables" / "editing_metrics.csv")
    assert sorted(table["variant"].unique()) == ["mpes_nc", "plain", "unedited"]
    plain = table[table["variant"] == "plain"]
    assert list(plain["edits"]) == [4, 6] and list(plain["n_records"]) == [4, 6]
    unedited = table[table["method"] == "unedited"].iloc[0]
    assert unedited["edits"] == 0 and unedited["n_records"] == 6  # the facts the run will edit
    assert table[["ES", "PS", "NS", "S"]].notna().all().all()
    # generation entropy and downstream scores on the unedited model and at the final snapshot only
    final_rows = table[table["edits"].isin([0, 6])]
    assert final_rows[["GE", "DS_generate", "DS_loglik"]].notna().all().all()
    assert table[table["edits"] == 4][["GE", "DS_generate"]].isna().all().all()
    tidy = pd.read_csv(results / "tables" / "all_metrics.csv")
    assert {
        "counterfact/authors-20pct/nll-comparison",
        "table1/to-be-edited/known-true-facts",
        "downstream/label-loglik",
    } <= set(tidy["protocol"])
    assert set(tidy.columns) >= {
        "experiment",
        "model",
        "dataset",
        "method",
        "variant",
        "edits",
        "metric",
        "value",
        "protocol",
    }
    paper = results / "paper"
    for name in ("fig01_norm_growth", "fig04_layer_norms", "fig05_activation_share", "fig06_downstream_encore"):
        assert (paper / "figures" / f"{name}.png").stat().st_size > 10_000 and (
            paper / "figures" / f"{name}.pdf"
        ).exists()
    assert {"table03_encore.csv", "table03_encore.md", "table03_encore.tex"} <= {
        p.name for p in (paper / "tables").iterdir()
    }
    index = (paper / "index.md").read_text()
    assert "fig22_downstream_tasks_emmet: needs downstream results" in index and "emmet/plain" in index
    assert {f"activation_share.L00.{c}" for c in ("residual", "attention", "mlp")} <= set(tidy["metric"])
    # perplexity at every evaluation; per-record scores beside every metrics CSV, gathered in collected/records.csv
    perplexity = tidy[tidy["metric"] == "perplexity"]
    assert set(perplexity["protocol"]) == {"perplexity/wikitext2-test/tokens300/window64"}
    assert sorted(perplexity[perplexity["variant"] != "mpes_nc"]["edits"]) == [0, 4, 6]
    assert (perplexity["value"] > 1).all()
    collected = pd.read_csv(results / "collected" / "records.csv")
    assert list(collected.columns[:13]) == ["experiment", "model", "dataset", "method", "variant", "order", "edits",
                                            "subset", "protocol", "case_id", "es", "ps", "ns"]  # fmt: skip
    for metrics_csv in [results / "unedited" / "order0" / "metrics.csv",
                        *(results / "memit").glob("*/order0/metrics/edits_*.csv")]:  # fmt: skip
        if metrics_csv.name.endswith((".records.csv", ".downstream.csv")):
            continue
        metrics = pd.read_csv(metrics_csv)
        records = pd.read_csv(metrics_csv.with_name(metrics_csv.stem + ".records.csv"))
        per_record = metrics["protocol"].str.contains(r"nll-comparison$|^generation/|greedy-exact-match$")
        assert set(records["protocol"]) == set(metrics["protocol"][per_record])
        for protocol, scores in records.groupby("protocol"):
            expected = metrics[metrics["protocol"] == protocol].set_index("metric")["value"]
            if protocol.endswith(
                "greedy-exact-match"
            ):  # generation-based efficacy (encore.evaluation.generation_efficacy)
                pairs = [("ES_gen", "es_gen")]
                pooled = 100 * scores["ps_gen_hits"].sum() / scores["n_paraphrase"].sum()
                assert pooled == pytest.approx(expected["PS_gen"], abs=1e-9)
            elif protocol.startswith("generation/"):
                pairs = [("GE", "ge")]
            else:
                pairs = [("ES", "es"), ("PS", "ps"), ("NS", "ns")]
            for metric, column in pairs:
                assert 100 * scores[column].mean() == pytest.approx(expected[metric], abs=1e-9)
            assert len(scores) == expected["GE_records" if protocol.startswith("generation/") else "n_records"]
        assert len(collected.merge(records[["edits", "variant", "protocol", "case_id"]])) == len(records)
        # per-item downstream predictions where the tasks ran (unedited, final snapshot), header only elsewhere
        items = pd.read_csv(metrics_csv.with_name(metrics_csv.stem + ".downstream.csv"))
        assert len(items) == (2 * 2 * 4 if metrics["protocol"].str.startswith("downstream/").any() else 0)
    items = pd.read_csv(results / "collected" / "downstream_records.csv")
    assert sorted(items["edits"].unique()) == [0, 6] and set(items["task"]) == {"sst2", "mmlu"}
    assert (paper.parent / "collected" / "sha256.json").read_text().count("downstream_records.csv") == 1
    snapshots = results / "memit" / "plain" / "order0" / "snapshots"
    norms = pd.concat(pd.read_csv(snapshots / f"edits_0000{n}" / "norms.csv") for n in (4, 6))
    assert sorted(norms["edits"].unique()) == [0, 2, 4, 6]
    ledger = pd.read_csv(snapshots / "edits_00006" / "ledger.csv")
    assert list(ledger["position"]) == [4, 5]
    encore = pd.read_csv(results / "memit" / "mpes_nc" / "order0" / "snapshots" / "edits_00006" / "ledger.csv")
    assert set(encore["stop_reason"]) <= {"mpes", "loss", "budget"}
    # post-update efficacy of each batch in the ledger; each phase's precision in every manifest and in runs.csv
    assert set(ledger["post_success"]) <= {0.0, 1.0} and ledger["post_p_new"].between(0, 1).all()
    manifest = json.loads((snapshots / "edits_00006" / "manifest.json").read_text())
    assert (manifest["execution"]["precision"], manifest["execution"]["score_precision"]) == ("bf16-mixed", "fp32")
    provenance = json.loads(
        (results / "memit" / "plain" / "order0" / "metrics" / "edits_00006.provenance.json").read_text()
    )
    assert "precision" not in provenance["execution"]  # scored in fp32
    runs = pd.read_csv(results / "collected" / "runs.csv")
    assert set(runs["edit_precision"]) == {"bf16-mixed"} and set(runs["score_precision"]) == {"fp32"}
    again = snakemake(*args, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake(*args, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "fig05_activation_share" in html and "table03_encore" in html


@pytest.mark.slow
def test_killed_run_resumes_to_bitwise_identical_weights(tiny_model, tmp_path):
    model_dir, resources = tiny_model
    quick = {"variants": ["plain"], "snapshot_every": 1, "evaluation": {"generation": "none", "downstream": "none"}}
    straight = make_workdir(tmp_path / "straight", model_dir, resources, **quick)
    snakemake(*straight)

    killed_root = tmp_path / "killed"
    killed = make_workdir(killed_root, model_dir, resources, **quick)
    snapshots = killed_root / "results" / "tiny" / "memit" / "plain" / "order0" / "snapshots"
    second_segment_log = killed_root / "logs" / "tiny" / "memit" / "plain" / "order0" / "edit_00004.log"
    command, env = snakemake_command(*killed)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    # Snakemake records a job as finished (metadata written, "incomplete" marker removed) before it starts the
    # jobs that need its outputs: once the second segment writes to its log, the first one is recorded complete.
    deadline = time.time() + 300
    while not (second_segment_log.exists() and second_segment_log.stat().st_size > 0):
        assert process.poll() is None and time.time() < deadline, "the run ended before the second segment started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the controller and its jobs: a crash of the whole run
    process.wait()
    assert not (snapshots / "edits_00006" / "manifest.json").exists()  # the last segment needs the second one
    first = snapshots / "edits_00002"
    checksums = {path.name: file_sha256(path) for path in sorted(first.iterdir())}
    assert sorted(checksums) == ["keys.safetensors", "ledger.csv", "manifest.json", "norms.csv", "weights.safetensors"]

    snakemake(*killed, "--unlock")  # a killed controller leaves its lock (docs/pipeline.md, "Resume and logs")
    snakemake(*killed)  # rerun: resumes after the last complete snapshot
    # the first segment was kept, not redone (its ledger has timings: a rerun would change its checksum)
    assert {path.name: file_sha256(path) for path in sorted(first.iterdir())} == checksums
    final = load_file(str(snapshots / "edits_00006" / "weights.safetensors"))
    reference = load_file(
        str(
            tmp_path
            / "straight"
            / "results"
            / "tiny"
            / "memit"
            / "plain"
            / "order0"
            / "snapshots"
            / "edits_00006"
            / "weights.safetensors"
        )
    )
    assert final.keys() == reference.keys()
    for name in final:
        assert final[name].equal(reference[name]), name
