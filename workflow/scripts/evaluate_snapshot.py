from pathlib import Path

from _common import start

from encore.experiment import evaluate_snapshot

start(snakemake)
params = snakemake.params
snapshot = snakemake.input.get("snapshot")
evaluate_snapshot(
    model_name=params.model,
    snapshot=Path(snapshot).parent if snapshot else None,
    dataset=params.dataset,
    data_dir=params.data_dir,
    resources=Path(params.resources),
    output=Path(snakemake.output[0]),
    records_output=Path(snakemake.output.records),
    downstream_output=Path(snakemake.output.downstream),
    evaluation=params.evaluation,
    experiment=params.experiment,
    order_sample=params.order_sample,
    num_edits=params.num_edits,
    seed=params.seed,
    execution=params.execution,
    records_files=params.records_files,
)
