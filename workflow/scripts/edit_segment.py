"""Rule edit_segment: one segment of sequential editing, from the previous snapshot (or the unedited model) to the
next (encore.experiment.run_edit_segment). Not only a wrapper: when a statistics cache file is found unreadable, it
recomputes that statistic itself and edits again (see the comment at the end)."""

from pathlib import Path

from _common import start

from encore.editing.covariance import StatisticsCacheError
from encore.editing.hparams import Hyperparameters
from encore.experiment import compute_statistics, run_edit_segment
from encore.settings import RunSettings

start(snakemake)
params = snakemake.params
hparams = Hyperparameters.from_yaml(snakemake.input.hparams, snakemake.wildcards.variant)


def edit():
    run_edit_segment(
        RunSettings.from_params(params),
        method=snakemake.wildcards.method,
        variant=snakemake.wildcards.variant,
        hparams=hparams,
        order_sample=params.order_sample,
        batch_size=params.batch_size,
        n_batches=params.n_batches,
        statistics_manifest=Path(snakemake.input.statistics),
        previous=Path(snakemake.input.previous).parent if snakemake.input.previous else None,
        output=Path(snakemake.output[0]).parent,
        execution=params.execution,
    )


try:
    edit()
except StatisticsCacheError as error:
    # A statistics cache file went bad after the statistics rule ran: recompute it here (same key, so the same file
    # and the same bits) instead of rerunning that rule, which would put every later segment out of date.
    print(f"{error.path}: {error.problem}; recomputing the statistics", flush=True)
    compute_statistics(
        model_name=params.model,
        layers=sorted(hparams.layers),
        hparams=hparams,
        data_dir=params.data_dir,
        resources=Path(params.resources),
        output=Path(snakemake.log[0]).with_suffix(".statistics.json"),
        execution=params.execution,
    )
    edit()
