# Tables and figures from cached results only (no model is loaded): rerunning them takes seconds.


localrules:
    report_tables,
    collect_results,
    paper_outputs,


rule report_tables:
    input:
        metrics=run_outputs(f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.csv")
        + unedited_outputs(),
        ledgers=run_outputs(f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/ledger.csv"),
    output:
        table=report(f"{RESULTS}/tables/editing_metrics.csv", category="Tables"),
        all_metrics=f"{RESULTS}/tables/all_metrics.csv",
        markdown=f"{RESULTS}/tables/editing_metrics.md",
    log:
        f"{LOGS}/report_tables.log",
    conda:
        "../envs/encore.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/report_tables.py"


rule collect_results:
    input:
        metrics=run_outputs(f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.csv")
        + unedited_outputs(),
        norms=run_outputs(f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/norms.csv"),
        ledgers=run_outputs(f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/ledger.csv"),
        manifests=run_outputs(
            f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/manifest.json"
        ),
        records=run_outputs(f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.records.csv")
        + [path.replace(".csv", ".records.csv") for path in unedited_outputs()],
        downstream=run_outputs(
            f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.downstream.csv"
        )
        + [path.replace(".csv", ".downstream.csv") for path in unedited_outputs()],
    output:
        metrics=f"{RESULTS}/collected/metrics.csv",
        records=f"{RESULTS}/collected/records.csv",
        downstream=f"{RESULTS}/collected/downstream_records.csv",
        norms=f"{RESULTS}/collected/norms.csv",
        ledger=f"{RESULTS}/collected/ledger.csv",
        runs=f"{RESULTS}/collected/runs.csv",
        checksums=f"{RESULTS}/collected/sha256.json",
    log:
        f"{LOGS}/collect_results.log",
    conda:
        "../envs/encore.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/collect_results.py"


rule paper_outputs:
    input:
        rules.collect_results.output,
    output:
        tables=report(
            directory(f"{RESULTS}/paper/tables"),
            patterns=["{name}.csv"],
            caption="../report/paper_tables.rst",
            category="Paper tables",
            labels={"table": "{name}"},
        ),
        figures=report(
            directory(f"{RESULTS}/paper/figures"),
            patterns=["{name}.png"],
            caption="../report/paper_figures.rst",
            category="Paper figures",
            labels={"figure": "{name}"},
        ),
        index=f"{RESULTS}/paper/index.md",
    log:
        f"{LOGS}/paper_outputs.log",
    conda:
        "../envs/encore.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/paper_outputs.py"
