"""The cluster path for real: a small experiment through a one-node Slurm (tests/slurm/cluster.py) with
``--profile profiles/slurm`` and the real snakemake-executor-plugin-slurm, the packaged SmolLM2-135M, MEMIT and
ENCORE (plain, mpes_nc), 4 edits in 2 segments, every snapshot evaluated, tables and figures.

Checked from Slurm's own job records (``scontrol show job``; finished jobs stay MinJobAge = 1 h): every model
rule is a batch job in the gpu partition holding one GPU (GRES on stand-in devices) and cpus_per_gpu CPUs, the
report rules run on the submitting node; a job over its memory is killed by Slurm and resubmitted with twice
the memory (the rules' ``attempt * planned`` with the profile's retries); a segment cancelled with scancel
while it runs is resubmitted, resumes from the last complete snapshot and ends with the same weights.

Needs root (daemons, /etc/slurm) and apt (installs Slurm when missing): ``make test-slurm`` sets
ENCORE_SLURM_TEST=1; skipped otherwise. Every Snakemake call runs under ``timeout -s INT`` (the plugin ignores
SIGTERM while waiting for jobs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, data_dir

if not os.environ.get("ENCORE_SLURM_TEST") or os.geteuid() != 0:
    pytest.skip("real-Slurm test: runs as root with ENCORE_SLURM_TEST=1 (make test-slurm)", allow_module_level=True)

from slurm.cluster import ACCOUNT, SlurmCluster, parse_record  # noqa: E402

pytestmark = pytest.mark.slurm

HOOKS = REPO / "tests" / "slurm" / "hooks"
OVERLAY = REPO / "tests" / "slurm" / "profile"
MODEL_RULES = {"statistics", "edit_segment", "evaluate_snapshot", "evaluate_unedited"}
REPORT_RULES = {"report_tables", "collect_results", "paper_outputs"}
RESULTS = Path("results") / "slurm-ci"
PLAIN = RESULTS / "memit" / "plain" / "order0"
EXPERIMENT = {
    "experiment": "slurm-ci",
    "model": "smollm2-135m",
    "methods": ["memit"],
    "variants": ["plain", "mpes_nc"],  # MEMIT and ENCORE
    "num_edits": 4,
    "batch_size": 2,
    "snapshot_every": 1,  # segments edits_00002, edits_00004
    "threads": 1,
    "statistics_threads": 2,
    "evaluation": {
        "edited_facts": "final",
        "generation": "none",
        "downstream": "final",
        "downstream_tasks": ["sst2"],
        "downstream_tests": 2,
        "downstream_shots": 1,
        "analysis": "final",
        "analysis_records": 3,
        "perplexity_tokens": 128,
        "perplexity_window": 64,
    },
}
# a small statistics sample, two edited layers, few optimisation steps: minutes on 2 CPU cores
HPARAMS = {"layers": [4, 5], "mom2_n_samples": 16, "mom2_max_length": 64, "v_num_grad_steps": 4}
LIMIT_S = 900  # a whole run; under `timeout -s INT`, so a hang ends the test


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """Hyperparameters and the experiment overlay in a folder of their own; the model cache beside them."""
    base = tmp_path_factory.mktemp("experiment")
    hparams = yaml.safe_load((REPO / "hparams" / "MEMIT" / "smollm2-135m.yaml").read_text())
    hparams.update(HPARAMS)
    hparams["variants"] = {"mpes_nc": hparams["variants"]["mpes_nc"]}
    (base / "hparams" / "MEMIT").mkdir(parents=True)
    (base / "hparams" / "MEMIT" / "smollm2-135m.yaml").write_text(yaml.safe_dump(hparams))
    config = {**EXPERIMENT, "hparams_dir": str(base / "hparams"), "resources": str(base / "resources")}
    (base / "experiment.yaml").write_text(yaml.safe_dump(config))
    return base


def command(experiment: Path, root: Path, *targets: str, limit: int = LIMIT_S) -> list[str]:
    return ["timeout", "-k", "10", "-s", "INT", str(limit), str(REPO / ".venv" / "bin" / "python"), "-m",
            "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(root),
            "--configfile", str(REPO / "config.yaml"), str(experiment / "experiment.yaml"),
            "--profile", str(REPO / "profiles" / "slurm"), "--workflow-profile", str(OVERLAY), *targets]  # fmt: skip


def environment(root: Path, **hooks) -> dict:
    """The submitting shell's environment: the data directory and the test's hooks (tests/slurm/hooks)."""
    (root / "env").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "ENCORE_DATA_DIR": str(data_dir()), "PYTHONPATH": str(HOOKS),
            "ENCORE_TEST_ENV_DIR": str(root / "env"), **{k: json.dumps(v) for k, v in hooks.items()}}  # fmt: skip


def slurm_jobs(output: str) -> dict[str, dict]:
    """Slurm's record of every job the run submitted (``Job N has been submitted with SLURM jobid M``)."""
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    records = {}
    for job_id in ids:
        record = parse_record(subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                                             text=True, check=True).stdout)  # fmt: skip
        record["rule"] = re.match(r"rule_(\w+?)_wildcards", record["Comment"] + "_wildcards").group(1)
        records[job_id] = record
    return records


def seen_environments(root: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((root / "env").glob("*.json"))]


def memory_mb(record: dict) -> int:
    return int(record["MinMemoryNode"].rstrip("M"))


@pytest.fixture(scope="module")
def straight(cluster, experiment, tmp_path_factory):
    """The whole experiment through Slurm; the unedited model's evaluation outgrows its first memory request by
    200 MB (a job beside the critical path: statistics, then the segments)."""
    root = tmp_path_factory.mktemp("straight")
    ballast = {"script": "evaluate_snapshot", "rule": "evaluate_unedited", "flag": str(root / "ballast.mb"),
               "extra_mb": 200}  # fmt: skip
    started = time.time()
    result = subprocess.run(command(experiment, root), cwd=REPO, env=environment(root, ENCORE_TEST_BALLAST=ballast),
                            capture_output=True, text=True)  # fmt: skip
    seconds = time.time() - started
    output = result.stdout + result.stderr
    (root / "snakemake.out").write_text(output)
    assert result.returncode == 0, f"snakemake exited {result.returncode}:\n{output[-4000:]}"
    jobs = slurm_jobs(output)
    print(f"\nSlurm run: {seconds:.0f} s, {len(jobs)} Slurm jobs")
    for job_id, job in jobs.items():
        print(
            f"  {job_id:>3} {job['rule']:<18} {job['JobState']:<10} {job['Partition']} mem={job['MinMemoryNode']} "
            f"{job['TresPerJob']} cpus={job['NumCPUs']} {job['StartTime']}..{job['EndTime']} {job['Comment']}"
        )
    return root, output, jobs


def test_every_model_rule_is_a_slurm_job_on_a_gpu_and_the_reports_run_locally(straight):
    root, output, jobs = straight
    completed = [job for job in jobs.values() if job["JobState"] == "COMPLETED"]
    # statistics, the unedited model, 2 runs x 2 segments, each snapshot evaluated
    assert sorted(job["rule"] for job in completed) == sorted(
        ["statistics", "evaluate_unedited"] + ["edit_segment"] * 4 + ["evaluate_snapshot"] * 4
    )
    for job in jobs.values():
        assert job["rule"] in MODEL_RULES and job["Partition"] == "gpu" and job["Account"] == ACCOUNT, job
        assert job["TresPerJob"] == "gres:gpu:1" and job["CpusPerTres"] == "gres:gpu:8", job  # not stripped
        assert job["NumCPUs"] == "8" and job["BatchFlag"] == "1", job
    for rule in REPORT_RULES:
        assert re.search(rf"^localrule {rule}:", output, flags=re.MULTILINE), rule
    seen = seen_environments(root)
    remote = [env for env in seen if env["SLURM_JOB_ID"]]
    assert {env["script"] for env in remote} == {"statistics", "edit_segment", "evaluate_snapshot"}
    assert {env["SLURM_JOB_ID"] for env in remote} <= set(jobs)
    for env in remote:  # what a job sees: its GPU, the profile's threads, the submit shell's data directory
        assert env["CUDA_VISIBLE_DEVICES"] in {"0", "1"}, env
        assert env["OMP_NUM_THREADS"] == ("2" if env["script"] == "statistics" else "1"), env
        assert env["ENCORE_DATA_DIR"] == str(data_dir()) and env["python"] == str(REPO / ".venv" / "bin" / "python")
    local = [env for env in seen if not env["SLURM_JOB_ID"]]
    assert {env["script"] for env in local} == {"report_tables", "collect_results", "paper_outputs"}
    manifest = json.loads((root / PLAIN / "snapshots" / "edits_00004" / "manifest.json").read_text())
    assert manifest["execution"]["device"] == "cpu" and manifest["execution"]["cpu_threads"] == 1  # device: auto


def test_the_experiment_writes_its_tables_and_figures(straight):
    root = straight[0] / RESULTS
    import pandas as pd

    table = pd.read_csv(root / "tables" / "editing_metrics.csv")
    assert sorted(table["variant"].unique()) == ["mpes_nc", "plain", "unedited"]
    assert sorted(table.loc[table["variant"] == "mpes_nc", "edits"]) == [2, 4]
    assert table[["ES", "PS", "NS"]].notna().all().all()
    figures = root / "paper" / "figures"
    assert (figures / "fig01_norm_growth.png").stat().st_size > 10_000 and (figures / "fig01_norm_growth.pdf").exists()
    assert (root / "paper" / "tables" / "table03_encore.md").exists() and (root / "paper" / "index.md").exists()


def test_a_job_over_its_memory_is_killed_and_retried_with_twice_the_memory(straight):
    root, output, jobs = straight
    attempts = [job for job in jobs.values() if job["rule"] == "evaluate_unedited"]
    assert [job["JobState"] for job in attempts] == ["FAILED", "COMPLETED"], attempts
    first, second = attempts
    assert memory_mb(second) == 2 * memory_mb(first)  # mem_mb = attempt * planned, profile retries: 2
    log = next(
        (root / ".snakemake" / "slurm_logs" / "rule_evaluate_unedited").rglob(f"{first['JobId']}.log")
    ).read_text()
    assert "Exceeded job memory limit" in log  # killed by Slurm (OverMemoryKill), not by the job itself
    assert int((root / "ballast.mb").read_text()) == memory_mb(first) + 200


def test_a_cancelled_segment_resumes_from_the_last_snapshot_to_the_same_weights(straight, experiment, tmp_path):
    """scancel the last segment of the plain run while it writes its snapshot; the profile's retry resubmits it,
    it continues from edits_00002 and its weights equal those of the uninterrupted run."""
    reference = straight[0]
    root = tmp_path / "cancelled"
    shutil.copytree(reference, root, symlinks=True)  # mtimes and Snakemake metadata kept: only the cut is redone
    shutil.rmtree(root / "env")
    last = PLAIN / "snapshots" / "edits_00004"
    shutil.rmtree(root / last)
    kept = {path.name: sha256(path) for path in sorted((root / PLAIN / "snapshots" / "edits_00002").iterdir())}
    flag = root / "held"
    hold = {"script": "edit_segment", "target": "encore.editing.snapshots:save_file", "match": "weights",
            "flag": str(flag)}  # fmt: skip
    out = root / "snakemake.out"
    with open(out, "w") as handle:
        process = subprocess.Popen(command(experiment, root, str(last / "manifest.json")), cwd=REPO,
                                   env=environment(root, ENCORE_TEST_HOLD=hold), stdout=handle,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.time() + LIMIT_S
    while not flag.exists():  # the segment has written its weights and not yet its manifest
        assert process.poll() is None and time.time() < deadline, out.read_text()[-4000:]
        time.sleep(0.2)
    job_id = re.findall(r"has been submitted with SLURM jobid (\d+)", out.read_text())[-1]
    subprocess.run(["scancel", job_id], check=True)
    assert process.wait(timeout=LIMIT_S + 30) == 0, out.read_text()[-4000:]

    jobs = slurm_jobs(out.read_text())
    print(
        "\nscancel run:", {job_id: (job["rule"], job["JobState"], job["MinMemoryNode"]) for job_id, job in jobs.items()}
    )
    assert [(job["rule"], job["JobState"]) for job in jobs.values()] == [
        ("edit_segment", "CANCELLED"),
        ("edit_segment", "COMPLETED"),
    ]
    assert all(job["Comment"].endswith("memit_plain_0_00004") for job in jobs.values())
    log = (root / "logs" / "slurm-ci" / "memit" / "plain" / "order0" / "edit_00004.log").read_text()
    assert "segment of 1 batches from edit 2 of 4" in log  # resumed from the last complete snapshot
    assert {path.name: sha256(path) for path in sorted((root / PLAIN / "snapshots" / "edits_00002").iterdir())} == kept
    mine, theirs = root / last, reference / last
    manifest = json.loads((mine / "manifest.json").read_text())
    assert (
        manifest["files"]["weights.safetensors"]
        == json.loads((theirs / "manifest.json").read_text())["files"]["weights.safetensors"]
    )
    assert sha256(mine / "weights.safetensors") == sha256(theirs / "weights.safetensors")
