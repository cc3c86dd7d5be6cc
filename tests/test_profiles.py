"""Paper configurations resolve on a cluster: a dry run with the slurm profile gives every rule its resources."""

from __future__ import annotations

import re

import pytest
from pipeline_helpers import REPO, snakemake

PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.yaml"))
GPU_RULES = ("statistics", "edit_segment", "evaluate_snapshot", "evaluate_unedited")


def _jobs(output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job of a dry run."""
    return re.findall(r"^(?:local)?rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", output, flags=re.MULTILINE)


def test_there_is_a_paper_config_per_model_and_dataset():
    assert [p.stem for p in PAPER_CONFIGS] == [
        f"{m}-{d}" for m in ("gpt2-xl", "llama2-7b", "llama3-8b") for d in ("counterfact", "zsre")
    ]


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_slurm_dry_run_of_a_paper_config_resolves_every_rule(config):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake("-n", "--profile", "profiles/slurm", "--configfile", str(config))
    jobs = _jobs(result.stdout)
    counts = {rule: sum(1 for r, _ in jobs if r == rule) for rule, _ in jobs}
    # 8 runs (MEMIT x 4 variants, EMMET and AlphaEdit x 2) x 10 snapshots of 1,000 edits
    assert counts["edit_segment"] == 80 and counts["evaluate_snapshot"] == 80 and counts["evaluate_unedited"] == 1
    for rule, resources in jobs:
        assert "slurm_account=" in resources, rule
        if rule in GPU_RULES:
            assert "slurm_partition=gpu" in resources and "gpu=1" in resources and "mem_mb=" in resources, rule
        else:
            assert "gpu=" not in resources, rule
