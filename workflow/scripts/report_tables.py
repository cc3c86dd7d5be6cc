from pathlib import Path

from _common import start

from encore.reporting.summary import editing_table

start(snakemake)
editing_table(
    snakemake.input.metrics,
    Path(snakemake.output.table),
    Path(snakemake.output.markdown),
    Path(snakemake.output.all_metrics),
    ledger_files=snakemake.input.ledgers,
)
