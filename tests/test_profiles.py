"""Paper configurations resolve on a cluster: a dry run with the slurm profile gives every rule its resources."""

from __future__ import annotations

import re
import subprocess

import pytest
from pipeline_helpers import REPO, snakemake_command

PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.yaml"))
GPU_RULES = ("statistics", "edit_segment", "evaluate_snapshot", "evaluate_unedited")


def _jobs(output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job of a dry run."""
    return re.findall(r"^(?:local)?rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", output, flags=re.MULTILINE)


def test_there_is_a_paper_config_per_model_and_dataset():
    assert [p.stem for p in PAPER_CONFIGS] == [
        f"{m}-{d}" for m in ("gpt2-xl", "llama2-7b", "llama3-8b") for d in ("counterfact", "zsre")
    ]


def cluster_dry_run(config, tmp_path, *extra):
    """A dry run as on a cluster's submit node: no local data directory (the full data sets would be downloaded by
    the jobs), empty caches."""
    command, env = snakemake_command("-n", "--profile", "profiles/slurm", "--configfile", str(config),
                                     "--config", f"resources={tmp_path}", *extra)  # fmt: skip
    env.pop("ENCORE_DATA_DIR")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_slurm_dry_run_of_a_paper_config_resolves_every_rule(config, tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = cluster_dry_run(config, tmp_path)
    jobs = _jobs(result.stdout)
    counts = {rule: sum(1 for r, _ in jobs if r == rule) for rule, _ in jobs}
    # 8 runs (MEMIT x 4 variants, EMMET and AlphaEdit x 2) x 10 snapshots of 1,000 edits
    assert counts["edit_segment"] == 80 and counts["evaluate_snapshot"] == 80 and counts["evaluate_unedited"] == 1
    for rule, resources in jobs:
        assert "slurm_account=" not in resources, rule  # no placeholder account: sbatch charges the default one
        if rule in GPU_RULES:
            assert "slurm_partition=gpu" in resources and "gpu=1" in resources and "mem_mb=" in resources, rule
        else:
            assert "gpu=" not in resources, rule


def test_planned_resources_follow_the_model_size(tmp_path):
    """The same rule asks for more memory and time for Llama-3-8B than for GPT2-XL (encore.plan)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")

    def edit_resources(name):
        output = cluster_dry_run(REPO / "configs" / "paper" / f"{name}-counterfact.yaml", tmp_path).stdout
        line = next(resources for rule, resources in _jobs(output) if rule == "edit_segment")
        return {key: int(value) for key, value in re.findall(r"(mem_mb|runtime|gpu_mem_mb)=(\d+)", line)}

    small, large = edit_resources("gpt2-xl"), edit_resources("llama3-8b")
    assert large["mem_mb"] > small["mem_mb"] and large["gpu_mem_mb"] > small["gpu_mem_mb"]
    assert large["gpu_mem_mb"] < 80 * 1024  # every rule fits an 80 GB GPU
