# Second moments C0 of the edited layers' keys over the Wikipedia sample (cached, content-addressed).


rule statistics:
    input:
        hparams=hparams_for,
    output:
        f"{RESULTS}/statistics/{{method}}.json",
    log:
        f"{LOGS}/statistics/{{method}}.log",
    params:
        model=config["model"],
        data_dir=config["data_dir"],
        resources=config["resources"],
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/encore.yaml"
    script:
        "../scripts/statistics.py"
