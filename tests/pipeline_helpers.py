"""Helpers for the pipeline tests: a tiny local model, its hyperparameters and a config overlay."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO, _train_tokenizer, data_dir, make_tiny_llama

TINY_HPARAMS = {
    "editor": "memit",
    "layers": [1, 2],
    "v_num_grad_steps": 6,
    "v_lr": 1.0,
    "mom2_update_weight": 10.0,
    "mom2_n_samples": 30,
    "mom2_max_length": 64,
    "clamp_norm_factor": 4.0,
    "variants": {"mpes_nc": {"mpes": 0, "norm_lambda": 5.0}},
}


def save_tiny_model(directory: Path) -> Path:
    tokenizer = _train_tokenizer(directory, add_bos=False)
    make_tiny_llama(len(tokenizer)).save_pretrained(directory)
    return directory


def make_workdir(root: Path, model_dir: Path, resources: Path, **config) -> list[str]:
    """Write hparams and an overlay under ``root``; return the snakemake arguments for a run there."""
    hparams = root / "hparams" / "MEMIT"
    hparams.mkdir(parents=True, exist_ok=True)
    (hparams / f"{model_dir.name}.yaml").write_text(yaml.safe_dump(TINY_HPARAMS))
    overlay = root / "tiny.yaml"
    evaluation = {
        "generation": "final",
        "generation_records": 3,
        "downstream": "final",
        "downstream_tests": 4,
        "downstream_tasks": ["sst2", "mmlu"],
        "perplexity_tokens": 300,  # windows of 64 fit the tiny model's 256 positions
        "perplexity_window": 64,
        **config.pop("evaluation", {}),
    }
    overlay.write_text(
        yaml.safe_dump(
            {
                "experiment": "tiny",
                "model": str(model_dir),
                "num_edits": 6,
                "batch_size": 2,
                "snapshot_every": 2,
                "hparams_dir": str(root / "hparams"),
                "resources": str(resources),
                "threads": 1,
                "evaluation": evaluation,
                **config,
            }
        )
    )
    return args_for(root)


def args_for(root: Path) -> list[str]:
    """The snakemake arguments for a run in a working directory written by ``make_workdir``."""
    return [
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(root),
        "--configfile",
        str(REPO / "config.yaml"),
        str(root / "tiny.yaml"),
        "--cores",
        "2",
    ]


def snakemake_command(*args) -> tuple[list[str], dict]:
    return [sys.executable, "-m", "snakemake", *args], {**os.environ, "ENCORE_DATA_DIR": str(data_dir())}


def snakemake(*args, cwd=REPO, check=True):
    command, env = snakemake_command(*args)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result
