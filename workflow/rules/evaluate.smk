# Metrics of the unedited model and of every snapshot, computed from the snapshot files alone.


rule evaluate_unedited:
    output:
        f"{RESULTS}/unedited/metrics.csv",
    log:
        f"{LOGS}/unedited/evaluate.log",
    params:
        model=config["model"],
        dataset=config["dataset"],
        data_dir=config["data_dir"],
        resources=config["resources"],
        evaluation=config["evaluation"],
        order_sample=config["order_sample"],
        num_edits=config["num_edits"],
        seed=config["seed"],
        experiment=EXPERIMENT,
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/encore.yaml"
    script:
        "../scripts/evaluate_snapshot.py"


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
        evaluation=config["evaluation"],
        order_sample=config["order_sample"],
        num_edits=config["num_edits"],
        seed=config["seed"],
        experiment=EXPERIMENT,
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/encore.yaml"
    script:
        "../scripts/evaluate_snapshot.py"
