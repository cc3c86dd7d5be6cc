# Configuration validation and helpers shared by the rules.
from pathlib import Path

from snakemake.utils import validate

from encore.editing.hparams import hparams_file
from encore.experiment import (
    check_edit_count,
    check_methods,
    experiment_runs,
    snapshot_edits,
)
from encore.models.device import check_settings, phase_precisions
from encore.settings import RunSettings
from encore.plan import experiment_hparams, rule_resources, rules_device

validate(config, schema="../../encore/schemas/config.schema.yaml")

EXPERIMENT = config["experiment"]
# what every edit and evaluate job shares, as the rules' params (encore.settings.RunSettings: builtins, so that a
# changed value reruns the jobs it reaches)
RUN_PARAMS = RunSettings.from_config(config).as_params()
RESULTS = f"results/{EXPERIMENT}"
LOGS = f"logs/{EXPERIMENT}"
ORDERS = (
    config["order_sample"]
    if isinstance(config["order_sample"], list)
    else [config["order_sample"]]
)
# where and in which precision models run (encore.models.device; checked by each job on its own machine): edit jobs
# in the editing precision (their post-update efficacy in the scoring one), evaluate jobs in the scoring precision
# (score_precision only where it differs, so that one precision for both keeps the params of earlier results)
EDIT_PRECISION, SCORE_PRECISION = phase_precisions(config["precision"])
_WHERE = {"device": config["device"], "dtype": config["dtype"], "tf32": config["tf32"]}
EXECUTION = {
    **_WHERE,
    "precision": EDIT_PRECISION,
}  # statistics (C0 is float32 in every precision)
EDIT_EXECUTION = {
    **EXECUTION,
    **(
        {"score_precision": SCORE_PRECISION}
        if SCORE_PRECISION != EDIT_PRECISION
        else {}
    ),
}
SCORE_EXECUTION = {**_WHERE, "precision": SCORE_PRECISION}
# Memory and run time of each step from the experiment plan (encore.plan), sized for the GPU named by
# plan_gpu unless the models run on the CPU. Raised with each retry.
PLANNED = rule_resources(config, rules_device(config))


def planned_mem_mb(step):
    return lambda wildcards, attempt: attempt * PLANNED[step]["mem_mb"]


def planned_runtime(step):
    return lambda wildcards, attempt: attempt * PLANNED[step]["runtime"]


# one run = an editor, a variant (plain, mpes, nc, mpes_nc) and one of the authors' edit orderings
RUN = "{method}/{variant}/order{order}"
UNEDITED = f"{RESULTS}/unedited/order{{order}}/metrics.csv"


def hparams_for(wildcards):
    """The hyperparameter file of the run's method (encore.editing.hparams.hparams_file)."""
    return str(
        hparams_file(
            config["hparams_dir"], wildcards.method, config["model"], config["dataset"]
        )
    )


def segment_ends():
    """Edit counts at which a snapshot is written: every snapshot_every batches and at the end."""
    ends = snapshot_edits(
        config["num_edits"], config["batch_size"], config["snapshot_every"]
    )
    return [f"{end:05d}" for end in ends]


def previous_snapshot(wildcards):
    ends = segment_ends()
    position = ends.index(wildcards.edits)
    if position == 0:
        return []
    return f"{RESULTS}/{wildcards.method}/{wildcards.variant}/order{wildcards.order}/snapshots/edits_{ends[position - 1]}/manifest.json"


def batches_in_segment(wildcards):
    ends = [0] + [int(end) for end in segment_ends()]
    position = ends.index(int(wildcards.edits))
    edits = ends[position] - ends[position - 1]
    return -(-edits // config["batch_size"])


def all_variants():
    return sorted({variant for _, variant in experiment_runs(config)})


wildcard_constraints:
    method="|".join(config["methods"]),
    variant="|".join(all_variants()),
    edits=r"\d{5}",
    order=r"\d",


def run_outputs(pattern):
    """``pattern`` (with {method}, {variant}, {order}, {edits}) for every run and snapshot of the experiment."""
    return [
        expand(pattern, method=method, variant=variant, order=order, edits=edits)[0]
        for method, variant in experiment_runs(config)
        for order in ORDERS
        for edits in segment_ends()
    ]


def unedited_outputs():
    return expand(UNEDITED, order=ORDERS)


def final_outputs():
    return [
        f"{RESULTS}/tables/editing_metrics.csv",
        f"{RESULTS}/tables/editing_metrics.md",
        f"{RESULTS}/paper/index.md",
    ]


# Fail early, with a clear message, before any job runs: settings that contradict each other (precision and dtype;
# the hardware is checked by each job on its own machine), unknown methods, missing hyperparameter files or
# variants (every run's file and variant, read as the plan reads them), and more edits than the chosen ordering
# holds (checked when the data is local or already cached).
check_settings(config["dtype"], config["precision"])
check_methods(config["methods"], config["hparams_dir"])
experiment_hparams(config)
for _order in ORDERS:
    check_edit_count(
        config["dataset"],
        config["data_dir"],
        Path(config["resources"]) / "data",
        _order,
        config["num_edits"],
        config["records_files"],
    )
