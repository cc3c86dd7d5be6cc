"""Rule collect_results: every run's metrics, norms, ledgers, manifests and records into results/<exp>/collected/
(encore.reporting.collect.collect)."""

from pathlib import Path

from _common import start

from encore.reporting.collect import collect

start(snakemake)
collect(
    snakemake.input.metrics,
    snakemake.input.norms,
    snakemake.input.ledgers,
    snakemake.input.manifests,
    Path(snakemake.output.metrics).parent,
    record_files=snakemake.input.records,
    downstream_files=snakemake.input.downstream,
)
