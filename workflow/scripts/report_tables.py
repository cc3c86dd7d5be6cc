"""Rule report_tables: the editing metrics of every snapshot and the unedited model as one table, with each run's
editing cost up to each snapshot (encore.reporting.summary.editing_table)."""

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
