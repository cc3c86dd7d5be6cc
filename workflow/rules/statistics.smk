# Second moments C0 of the edited layers' keys over the Wikipedia sample (cached, content-addressed).


rule statistics:
    input:
        hparams=hparams_for,
    output:
        f"{RESULTS}/statistics/{{method}}.json",
    log:
        f"{LOGS}/statistics/{{method}}.log",
    conda:
        "../envs/encore.yaml"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        model=config["model"],
        execution=EXECUTION,
        data_dir=config["data_dir"],
        resources=config["resources"],
    script:
        "../scripts/statistics.py"
