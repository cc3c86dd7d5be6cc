# Configuration validation and helpers shared by the rules.
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
LOGS = f"logs/{EXPERIMENT}"


wildcard_constraints:
    method="|".join(config["methods"]),
    edits=r"\d{5}",


def hparams_path(method):
    path = Path(config["hparams_dir"]) / method.upper() / f"{Path(config['model']).name}.yaml"
    if not path.exists():
        raise ValueError(
            f"methods: no hyperparameters for {method!r} on {config['model']!r}: create {path}"
        )
    return str(path)


def hparams_for(wildcards):
    return hparams_path(wildcards.method)


def segment_ends():
    """Edit counts at which a snapshot is written: every snapshot_every batches and at the end."""
    step = config["batch_size"] * config["snapshot_every"]
    ends = list(range(step, config["num_edits"], step)) + [config["num_edits"]]
    return [f"{end:05d}" for end in ends]


def previous_snapshot(wildcards):
    ends = segment_ends()
    position = ends.index(wildcards.edits)
    if position == 0:
        return []
    return f"{RESULTS}/{wildcards.method}/snapshots/edits_{ends[position - 1]}/manifest.json"


def batches_in_segment(wildcards):
    ends = [0] + [int(end) for end in segment_ends()]
    position = ends.index(int(wildcards.edits))
    edits = ends[position] - ends[position - 1]
    return -(-edits // config["batch_size"])


def final_outputs():
    return [
        f"{RESULTS}/tables/editing_metrics.csv",
        f"{RESULTS}/tables/editing_metrics.md",
        f"{RESULTS}/figures/norm_growth.png",
    ]


for _method in config["methods"]:
    hparams_path(_method)  # fail early with a clear message
