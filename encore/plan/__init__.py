"""A plan of an experiment before it runs: per rule and in all, peak host and GPU memory, disk written, time.

    python -m encore.plan --configfile configs/paper/llama3-8b-counterfact.yaml [--gpu h100]

The prediction is a cost model, not a profile: FLOPs and bytes are counted from the model's shape, the
hyperparameters and token counts measured on the data (CounterFact, order 0, SmolLM2 tokenizer), and
turned into seconds with effective rates. The CPU rates were measured on the reference machine (2 cores);
the GPU rates are nominal peak x an assumed efficiency until measured (``RATES``, ``RATE_SOURCE``).
``rule_resources`` gives Snakemake's per-rule mem_mb / runtime / GPU memory from the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

from encore.plan import costs
from encore.plan.costs import RATE_SOURCE, RATES, Cost, Planner, duration

# ------------------------------------------------------------------------------------ config reading


def load_config(configfiles: list[str], overrides: dict | None = None) -> dict:
    """config.yaml (where there is one), then each --configfile on top (top-level keys replace, as in Snakemake), then
    overrides; a --configfile that does not exist is a one-line error, not a silent default."""
    for path in configfiles:
        if not Path(path).is_file():
            raise ValueError(f"--configfile {path}: no such file")
    config: dict = {}
    for path in ["config.yaml", *configfiles]:
        if Path(path).exists():
            config.update(yaml.safe_load(Path(path).read_text()) or {})
    config.update(overrides or {})
    return config


def experiment_hparams(config: dict) -> dict[tuple[str, str], dict]:
    """{(method, variant): hyperparameters} of every run of the config (encore.experiment.experiment_runs), each from
    the file the pipeline reads (encore.editing.hparams.hparams_file); a one-line error for a missing file or
    variant."""
    from encore.editing.hparams import Hyperparameters, hparams_file
    from encore.experiment import experiment_runs

    hparams_dir = config.get("hparams_dir", "hparams")
    return {
        (method, variant): Hyperparameters.from_yaml(
            hparams_file(hparams_dir, method, config["model"], config["dataset"]), variant
        ).as_dict()
        for method, variant in experiment_runs(config)
    }


def summarise(costs: list[Cost]) -> dict[str, Cost]:
    """Per rule label: jobs summed, time and disk as the mean job, memory as the largest job."""
    grouped: dict[str, list[Cost]] = {}
    for cost in costs:
        grouped.setdefault(cost.rule, []).append(cost)
    result = {}
    for rule, group in grouped.items():
        jobs = sum(c.jobs for c in group)
        result[rule] = Cost(
            rule,
            jobs,
            sum(c.seconds * c.jobs for c in group) / jobs,
            max(c.host_bytes for c in group),
            max(c.gpu_bytes for c in group),
            sum(c.disk_bytes * c.jobs for c in group) / jobs,
        )
    return result


DEFAULT_RESOURCES = {"mem_mb": 16000, "runtime": 720, "gpu_mem_mb": 0}


def rules_device(config: dict) -> str:
    """The device the Snakemake rules' resources are planned for: the CPU when ``device: cpu``, else ``plan_gpu``
    (``device: auto`` included: the submitting host of a cluster run may have no GPU)."""
    return "cpu" if str(config.get("device", "auto")) == "cpu" else config.get("plan_gpu", "h100")


def rule_resources(config: dict, device: str) -> dict[str, dict]:
    """Snakemake resources per rule for this config: mem_mb (peak host x 1.3), runtime in minutes (predicted
    x 2 + 30), gpu_mem_mb (peak device memory); the worst job of each rule. A model of unknown shape gets
    ``DEFAULT_RESOURCES``."""
    try:
        planner = Planner(config, experiment_hparams(config), device)
    except ValueError:
        return {
            rule: dict(DEFAULT_RESOURCES)
            for rule in ("statistics", "edit_segment", "evaluate_snapshot", "evaluate_unedited")
        }
    worst: dict[str, Cost] = {}
    for cost in planner.plan():
        rule = cost.rule.split()[0]
        current = worst.get(rule)
        if current is None:
            worst[rule] = Cost(rule, 1, cost.seconds, cost.host_bytes, cost.gpu_bytes, cost.disk_bytes)
        else:
            current.seconds, current.host_bytes = (
                max(current.seconds, cost.seconds),
                max(current.host_bytes, cost.host_bytes),
            )
            current.gpu_bytes = max(current.gpu_bytes, cost.gpu_bytes)
    return {rule: {"mem_mb": int(math.ceil(1.3 * c.host_bytes / 2**20 / 1000) * 1000),
                   "runtime": int(2 * c.seconds / 60) + 30, "gpu_mem_mb": int(c.gpu_bytes / 2**20)}
            for rule, c in worst.items()}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", action="append", default=[], help="config overlays, as for snakemake")
    parser.add_argument("--gpu", choices=[k for k in RATES if k != "cpu"], help="plan for this GPU (default: the CPU "
                        "unless the config says device: cuda)")  # fmt: skip
    parser.add_argument("--json", help="also write the plan as JSON to this file")
    args = parser.parse_args(argv)
    config = load_config(args.configfile)
    device = args.gpu or ("h100" if str(config.get("device", "auto")).startswith("cuda") else "cpu")
    planner = Planner(config, experiment_hparams(config), device)
    costs = planner.plan()
    grouped = summarise(costs)
    import pandas as pd

    table = pd.DataFrame([g.row() for g in grouped.values()])
    s = planner.shape
    print(
        f"plan: experiment {config['experiment']}, model {config['model']} ({s.params / 1e9:.2f} B parameters, "
        f"{config.get('dtype', 'float32')}), {len(planner.runs)} runs x {config['num_edits']} edits, "
        f"device {device} (rates {RATE_SOURCE[device]}"
        + (f"; {planner.threads} thread(s) per job" if device == "cpu" else "")
        + f"), editing in {planner.edit_precision}, scoring in {planner.score_precision}"
    )
    print(table.to_string(index=False))
    if rules_device(config) != device:
        print(f"(the Snakemake rules size mem_mb and runtime for {rules_device(config)}, not {device}: device "
              f"{config.get('device', 'auto')}, plan_gpu {config.get('plan_gpu', 'h100')}; device: cpu sizes them "
              "for the CPU)")  # fmt: skip
    total_seconds = sum(c.seconds * c.jobs for c in costs)
    edit_disk = sum(c.disk_bytes * c.jobs for c in costs if c.rule.startswith("edit_segment"))
    print(
        f"\nin all: {duration(total_seconds)} of {'GPU' if device != 'cpu' else 'CPU'} time "
        f"({total_seconds / 3600:.1f} {'GPU' if device != 'cpu' else 'CPU'}-hours), "
        f"{sum(c.disk_bytes * c.jobs for c in costs) / 2**30:.1f} GiB written "
        f"(snapshots {edit_disk / 2**30:.1f} GiB, per run {edit_disk / max(1, len(planner.runs)) / 2**30:.1f} GiB), "
        f"peak host {max(c.host_bytes for c in costs) / 2**30:.1f} GiB, "
        f"peak GPU {max(c.gpu_bytes for c in costs) / 2**30:.1f} GiB"
    )
    statistics = planner.statistics_summary()
    for line in statistics_lines(statistics):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "rows": table.to_dict("records"),
                                               "total_seconds": total_seconds, "statistics": statistics}, indent=1))  # fmt: skip


def statistics_lines(summary: dict) -> list[str]:
    """The plan's account of C0: imported (nothing computed) or computed here, at the configured N and, once the
    N-sweep has measured it, at SUPPORTED_N_SAMPLES and at that N scaled to the model (costs.scaled_n_samples)."""
    lines = []
    for row in summary["settings"]:
        here = (
            f"the configured N = {row['n_samples']:,} documents (mom2_n_samples): {duration(row['computed_seconds'])}"
        )
        if summary["source"] == "computed":
            lines.append(f"statistics: computed here, at {here}")
        else:
            lines.append(f"statistics: imported ({summary['source']}; docs/statistics.md), 0 s of computation; "
                         f"computing them here would take, at {here}")  # fmt: skip
        if row["supported_seconds"] is None:
            lines.append(
                "  at the N the measurement supports (encore.plan.costs.SUPPORTED_N_SAMPLES): not measured yet"
            )
        else:
            lines.append(f"  at the N the measurement supports, {row['supported_n_samples']:,} documents "
                         f"(measured on SmolLM2-135M, d_ff {costs.SWEEP_D_FF:,}): {duration(row['supported_seconds'])}")  # fmt: skip
            if row["scaled_n_samples"] != row["supported_n_samples"]:
                lines.append(f"  at that N scaled to this model's d_ff {row['d_ff']:,} and documents of at most "
                             f"{row['max_length']:,} tokens (the same tokens per dimension of C0; an extrapolation, "
                             f"not measured): {row['scaled_n_samples']:,} documents: {duration(row['scaled_seconds'])}")  # fmt: skip
    return lines
