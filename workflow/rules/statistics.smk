# Second moments C0 of the edited layers' keys over the Wikipedia sample (cached, content-addressed), or imported
# from statistics files of the ROME/MEMIT lineage (config ``statistics``; docs/statistics.md).
from encore.editing.statistics_sources import statistics_source

# checked before any job runs; a param only when imported, so that computed results keep the params they were made with
STATISTICS_IMPORT = (
    {"statistics": config["statistics"]}
    if statistics_source(config["statistics"])
    else {}
)


rule statistics:
    input:
        hparams=hparams_for,
    output:
        f"{RESULTS}/statistics/{{method}}.json",
    log:
        f"{LOGS}/statistics/{{method}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/statistics/{{method}}.tsv"
    priority: 10  # every edit waits for it: run it before the unedited evaluation
    conda:
        "../envs/encore.yaml"
    threads: config["statistics_threads"] or config["threads"]
    resources:
        mem_mb=planned_mem_mb("statistics"),
        runtime=planned_runtime("statistics"),
        gpu_mem_mb=PLANNED["statistics"]["gpu_mem_mb"],
    params:
        **STATISTICS_IMPORT,
        model=config["model"],
        execution=EXECUTION,
        data_dir=config["data_dir"],
        resources=config["resources"],
    script:
        "../scripts/statistics.py"
