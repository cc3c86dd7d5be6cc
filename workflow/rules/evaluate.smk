# Editing metrics of every snapshot, computed from the snapshot files alone.


rule evaluate_snapshot:
    input:
        snapshot=f"{RESULTS}/{RUN}/snapshots/edits_{{edits}}/manifest.json",
    output:
        f"{RESULTS}/{RUN}/metrics/edits_{{edits}}.csv",
    log:
        f"{LOGS}/{RUN}/evaluate_{{edits}}.log",
    params:
        model=config["model"],
        dataset=config["dataset"],
        data_dir=config["data_dir"],
        resources=config["resources"],
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/encore.yaml"
    script:
        "../scripts/evaluate_snapshot.py"
