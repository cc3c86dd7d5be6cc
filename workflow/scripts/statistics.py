"""Rule statistics: C0 of every edited layer, computed or imported into the content-addressed cache
(encore.experiment.compute_statistics)."""

from pathlib import Path

from _common import start

from encore.editing.hparams import Hyperparameters
from encore.experiment import compute_statistics

start(snakemake)
hparams = Hyperparameters.from_yaml(snakemake.input.hparams)
compute_statistics(
    model_name=snakemake.params.model,
    layers=sorted(hparams.layers),
    hparams=hparams,
    data_dir=snakemake.params.data_dir,
    resources=Path(snakemake.params.resources),
    output=Path(snakemake.output[0]),
    execution=snakemake.params.execution,
    statistics=getattr(snakemake.params, "statistics", None),  # a param only when imported (statistics.smk)
)
