"""Rules evaluate_snapshot and evaluate_unedited: one model state scored into its metrics CSV and per-fact and
per-item records (encore.experiment.evaluate_snapshot)."""

from pathlib import Path

from _common import start

from encore.experiment import evaluate_snapshot
from encore.settings import RunSettings

start(snakemake)
params = snakemake.params
snapshot = snakemake.input.get("snapshot")
evaluate_snapshot(
    RunSettings.from_params(params),
    snapshot=Path(snapshot).parent if snapshot else None,
    output=Path(snakemake.output[0]),
    records_output=Path(snakemake.output.records),
    downstream_output=Path(snakemake.output.downstream),
    evaluation=params.evaluation,
    order_sample=params.order_sample,
    execution=params.execution,
)
