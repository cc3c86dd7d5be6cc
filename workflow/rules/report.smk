# Tables and figures from cached results only (no model is loaded).


localrules:
    report_tables,


rule report_tables:
    input:
        metrics=run_outputs(f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.csv")
        + [f"{RESULTS}/unedited/metrics.csv"],
        norms=run_outputs(f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/norms.csv"),
    output:
        table=report(f"{RESULTS}/tables/editing_metrics.csv", category="Tables"),
        all_metrics=f"{RESULTS}/tables/all_metrics.csv",
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
