# Metrics of the unedited model and of every snapshot, computed from the snapshot files alone; beside each
# metrics CSV its per-record editing scores (*.records.csv, collected into collected/records.csv) and per-item
# downstream predictions (*.downstream.csv, header only where downstream tasks were not evaluated;
# collected into collected/downstream_records.csv).

# The params of both rules (rerun triggers: changing a value reruns the evaluations it reaches).
EVALUATE_PARAMS = dict(
    **RUN_PARAMS,
    execution=SCORE_EXECUTION,
    evaluation=config["evaluation"],
    order_sample=lambda wildcards: wildcards.order,
)


rule evaluate_unedited:
    output:
        UNEDITED,
        records=UNEDITED.replace("metrics.csv", "metrics.records.csv"),
        downstream=UNEDITED.replace("metrics.csv", "metrics.downstream.csv"),
    log:
        f"{LOGS}/unedited/order{{order}}/evaluate.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/unedited/order{{order}}/evaluate.tsv"
    conda:
        "../envs/encore.yaml"
    threads: config["threads"]
    resources:
        mem_mb=planned_mem_mb("evaluate_unedited"),
        runtime=planned_runtime("evaluate_unedited"),
        gpu_mem_mb=PLANNED["evaluate_unedited"]["gpu_mem_mb"],
    params:
        **EVALUATE_PARAMS,
    script:
        "../scripts/evaluate_snapshot.py"


rule evaluate_snapshot:
    input:
        snapshot=f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/manifest.json",
    output:
        f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.csv",
        records=f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.records.csv",
        downstream=f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.downstream.csv",
    log:
        f"{LOGS}/{RUN}/evaluate_{{edits}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/{RUN}/evaluate_{{edits}}.tsv"
    conda:
        "../envs/encore.yaml"
    threads: config["threads"]
    resources:
        mem_mb=planned_mem_mb("evaluate_snapshot"),
        runtime=planned_runtime("evaluate_snapshot"),
        gpu_mem_mb=PLANNED["evaluate_snapshot"]["gpu_mem_mb"],
    params:
        **EVALUATE_PARAMS,
    script:
        "../scripts/evaluate_snapshot.py"
