from pathlib import Path

from _common import start

from encore.experiment import evaluate_snapshot

start(snakemake)
evaluate_snapshot(
    model_name=snakemake.params.model,
    snapshot=Path(snakemake.input.snapshot).parent,
    dataset=snakemake.params.dataset,
    data_dir=snakemake.params.data_dir,
    resources=Path(snakemake.params.resources),
    output=Path(snakemake.output[0]),
)
