# Lifelong sequential knowledge editing benchmark (ENCORE reproduction).
# Stages: model -> covariance statistics -> edit segments (snapshots) -> evaluation -> tables and figures.
from snakemake.utils import min_version

min_version("9.19")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),
