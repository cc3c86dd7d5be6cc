# Configuration validation and helpers shared by the rules.
from pathlib import Path

from snakemake.utils import validate

from encore.editing.hparams import Hyperparameters
from encore.experiment import check_edit_count, check_methods, snapshot_edits
from encore.models.device import phase_precisions
from encore.plan import rule_resources

validate(config, schema="../schemas/config.schema.yaml")

EXPERIMENT = config["experiment"]
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
PLANNED = rule_resources(
    config, "cpu" if config["device"] == "cpu" else config["plan_gpu"]
)


def planned_mem_mb(step):
    return lambda wildcards, attempt: attempt * PLANNED[step]["mem_mb"]


def planned_runtime(step):
    return lambda wildcards, attempt: attempt * PLANNED[step]["runtime"]


# one run = an editor, a variant (plain, mpes, nc, mpes_nc) and one of the authors' edit orderings
RUN = "{method}/{variant}/order{order}"
UNEDITED = f"{RESULTS}/unedited/order{{order}}/metrics.csv"


def hparams_path(method):
    """hparams/<METHOD>/<model>.<dataset>.yaml if present, else hparams/<METHOD>/<model>.yaml."""
    folder = Path(config["hparams_dir"]) / method.upper()
    model = Path(config["model"]).name
    for path in (
        folder / f"{model}.{config['dataset']}.yaml",
        folder / f"{model}.yaml",
    ):
        if path.exists():
            return str(path)
    raise ValueError(
        f"methods: no hyperparameters for {method!r} on {config['model']!r}: create {folder / (model + '.yaml')}"
    )


def hparams_for(wildcards):
    return hparams_path(wildcards.method)


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


def experiment_runs():
    """(method, variant) pairs: every method x every variant, or per method when ``variants`` is a mapping."""
    variants = config["variants"]
    if isinstance(variants, dict):
        unknown = sorted(set(variants) - set(config["methods"]))
        if unknown:
            raise ValueError(
                f"variants: {unknown} are not in methods {config['methods']}: list them in methods or remove them"
            )
        return [(m, v) for m in config["methods"] for v in variants.get(m, ["plain"])]
    return [(m, v) for m in config["methods"] for v in variants]


def all_variants():
    return sorted({variant for _, variant in experiment_runs()})


wildcard_constraints:
    method="|".join(config["methods"]),
    variant="|".join(all_variants()),
    edits=r"\d{5}",
    order=r"\d",


def run_outputs(pattern):
    """``pattern`` (with {method}, {variant}, {order}, {edits}) for every run and snapshot of the experiment."""
    return [
        expand(pattern, method=method, variant=variant, order=order, edits=edits)[0]
        for method, variant in experiment_runs()
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


# Fail early, with a clear message, before any job runs: unknown methods, missing hyperparameter files or
# variants, and more edits than the chosen ordering holds (checked when the data is local or already cached).
check_methods(config["methods"], config["hparams_dir"])
for _method, _variant in experiment_runs():
    Hyperparameters.from_yaml(hparams_path(_method), _variant)
for _order in ORDERS:
    check_edit_count(
        config["dataset"],
        config["data_dir"],
        Path(config["resources"]) / "data",
        _order,
        config["num_edits"],
        config["records_files"],
    )
