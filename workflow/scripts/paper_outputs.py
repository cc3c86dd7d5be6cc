"""Rule paper_outputs: the paper's tables and figures from the collected CSVs, after checking their sha256
(encore.reporting.paper_tables.build_paper_outputs)."""

from pathlib import Path

from _common import start

from encore.reporting.collect import verify_collected
from encore.reporting.paper_tables import build_paper_outputs

start(snakemake)
verify_collected(Path(snakemake.input[0]).parent)  # a corrupted or edited collected CSV is never used
build_paper_outputs(
    Path(snakemake.input[0]).parent,
    Path(snakemake.output.tables),
    Path(snakemake.output.figures),
    Path(snakemake.output.index),
    title=f"Paper tables and figures: {snakemake.config['experiment']}",
)
