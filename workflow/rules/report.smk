# Tables and figures from cached results only (no model is loaded).


localrules:
    report_tables,


rule report_tables:
    input:
        metrics=expand(
            f"{RESULTS}/{{method}}/metrics/edits_{{edits}}.csv",
            method=config["methods"],
            edits=segment_ends(),
        ),
        norms=expand(
            f"{RESULTS}/{{method}}/snapshots/edits_{{edits}}/norms.csv",
            method=config["methods"],
            edits=segment_ends(),
        ),
    output:
        table=report(f"{RESULTS}/tables/editing_metrics.csv", category="Tables"),
        markdown=f"{RESULTS}/tables/editing_metrics.md",
        figure=report(
            f"{RESULTS}/figures/norm_growth.png",
            caption="../report/norm_growth.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/report_tables.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/encore.yaml"
    script:
        "../scripts/report_tables.py"
