from pathlib import Path

from _common import start

from encore.experiment import run_edit_segment
from encore.hparams import Hyperparameters

start(snakemake)
params = snakemake.params
run_edit_segment(
    model_name=params.model,
    method=snakemake.wildcards.method,
    variant=snakemake.wildcards.variant,
    hparams=Hyperparameters.from_yaml(snakemake.input.hparams, snakemake.wildcards.variant),
    dataset=params.dataset,
    data_dir=params.data_dir,
    resources=Path(params.resources),
    order_sample=params.order_sample,
    num_edits=params.num_edits,
    batch_size=params.batch_size,
    n_batches=params.n_batches,
    seed=params.seed,
    statistics_manifest=Path(snakemake.input.statistics),
    previous=Path(snakemake.input.previous).parent if snakemake.input.previous else None,
    output=Path(snakemake.output[0]).parent,
    experiment=params.experiment,
    execution=params.execution,
)
