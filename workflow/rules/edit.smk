# Sequential editing in segments: each segment continues from the previous snapshot, so a failed or
# killed segment never destroys earlier snapshots (docs/pipeline.md, "Resume and logs").

SNAPSHOT_FILES = [
    "manifest.json",
    "weights.safetensors",
    "keys.safetensors",
    "ledger.csv",
    "norms.csv",
]


rule edit_segment:
    input:
        hparams=hparams_for,
        statistics=f"{RESULTS}/statistics/{{method}}.json",
        previous=previous_snapshot,
    output:
        [f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/{name}" for name in SNAPSHOT_FILES],
    log:
        f"{LOGS}/{RUN}/edit_{{edits}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/{RUN}/edit_{{edits}}.tsv"
    conda:
        "../envs/encore.yaml"
    threads: config["threads"]
    resources:
        mem_mb=planned_mem_mb("edit_segment"),
        runtime=planned_runtime("edit_segment"),
        gpu_mem_mb=PLANNED["edit_segment"]["gpu_mem_mb"],
    params:
        **RUN_PARAMS,
        execution=EDIT_EXECUTION,
        order_sample=lambda wildcards: wildcards.order,
        batch_size=config["batch_size"],
        n_batches=batches_in_segment,
    script:
        "../scripts/edit_segment.py"
