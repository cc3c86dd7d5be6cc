"""The Snakemake workflow: lint, config validation, and an end-to-end run on a tiny local model."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, data_dir, make_tiny_llama

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, check=True):
    env = {**os.environ, "ENCORE_DATA_DIR": str(data_dir())}
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_workflow_lints_clean():
    result = snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_config_key_is_named_in_the_error():
    result = snakemake("-n", "--cores", "1", "--config", "num_edit=5", check=False)
    assert result.returncode != 0
    assert "num_edit" in result.stdout + result.stderr


def test_mistyped_config_value_is_named_in_the_error():
    result = snakemake("-n", "--cores", "1", "--config", "batch_size=many", check=False)
    assert result.returncode != 0
    assert "batch_size" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    from pipeline_helpers import save_tiny_model

    root = tmp_path_factory.mktemp("pipeline")
    model_dir = save_tiny_model(root / "tiny-llama")
    hparams = root / "hparams" / "MEMIT"
    hparams.mkdir(parents=True)
    (hparams / "tiny-llama.yaml").write_text(yaml.safe_dump({
        "editor": "memit", "layers": [1, 2], "v_num_grad_steps": 6, "v_lr": 1.0, "mom2_update_weight": 10.0,
        "mom2_n_samples": 30, "mom2_max_length": 64, "clamp_norm_factor": 4.0,
    }))
    overlay = root / "tiny.yaml"
    overlay.write_text(yaml.safe_dump({
        "experiment": "tiny", "model": str(model_dir), "num_edits": 6, "batch_size": 2, "snapshot_every": 2,
        "hparams_dir": str(root / "hparams"), "resources": str(root / "resources"), "threads": 1,
    }))
    return root, overlay


@pytest.mark.slow
def test_end_to_end_run_on_a_tiny_model(tiny_workdir):
    root, overlay = tiny_workdir
    args = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(root),
            "--configfile", str(REPO / "config.yaml"), str(overlay), "--cores", "2"]
    snakemake(*args)
    results = root / "results" / "tiny"
    table = pd.read_csv(results / "tables" / "editing_metrics.csv")
    assert list(table["edits"]) == [4, 6]
    assert list(table["n_records"]) == [4, 6]
    assert table[["ES", "PS", "NS", "S"]].notna().all().all()
    assert (results / "figures" / "norm_growth.png").stat().st_size > 10_000
    norms = pd.concat(pd.read_csv(results / "memit" / "plain" / "snapshots" / f"edits_0000{n}" / "norms.csv") for n in (4, 6))
    assert sorted(norms["edits"].unique()) == [0, 2, 4, 6]
    ledger = pd.read_csv(results / "memit" / "plain" / "snapshots" / "edits_00006" / "ledger.csv")
    assert list(ledger["position"]) == [4, 5]
    # a second invocation finds nothing to do
    again = snakemake(*args, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
