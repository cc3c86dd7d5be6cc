"""The report_tables rule: the editing summary of an experiment (one row per run and snapshot: ES, PS, NS, S, GE,
perplexity, downstream F1, editing cost), and the summary statistics the paper tables and the claims share.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from encore.evaluation import protocols
from encore.reporting.collect import read_csvs

EDITING_METRICS = ["ES", "PS", "NS", "S"]
DOWNSTREAM_COLUMNS = {protocols.DOWNSTREAM_GENERATE: "DS_generate", protocols.DOWNSTREAM_LOGLIK: "DS_loglik"}


def summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset, method, variant, edits): ES, PS, NS, S on the facts edited so far (the
    unedited model: the facts to be edited; a snapshot scored only on the authors' 20% of them: those, and
    ``facts`` says so), GE x100, WikiText-2 perplexity, p_new and the average downstream F1 x100."""
    wanted = metrics["metric"].isin(EDITING_METRICS + ["n_records", "p_new"])
    main = metrics[metrics["protocol"].str.match(protocols.EDITING_EVERY_FACT) & wanted].assign(facts="all")
    keys = ["model", "dataset", "method", "variant", "order", "edits"]
    sampled = metrics[metrics["protocol"].str.match(protocols.EDITING_SAMPLED) & wanted].assign(
        facts=protocols.AUTHORS_SUBSET
    )
    if not sampled.empty:
        have = set(map(tuple, main[keys].astype(str).values))
        sampled = sampled[[tuple(row) not in have for row in sampled[keys].astype(str).values]]
        main = pd.concat([main, sampled])
    extra = metrics[metrics["metric"].isin(["GE", "perplexity", "p_true_known", "n_known"])]
    for prefix, column in DOWNSTREAM_COLUMNS.items():
        rows = metrics[(metrics["metric"] == "average.f1") & metrics["protocol"].str.startswith(prefix)].copy()
        rows["metric"] = column
        extra = pd.concat([extra, rows])
    keys = ["model", "dataset", "method", "variant", "order", "edits"]
    table = pd.concat([main, extra]).assign(order=lambda frame: frame["order"] if "order" in frame else 0)
    table = table.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    columns = [
        c
        for c in [
            "n_records",
            *EDITING_METRICS,
            "GE",
            "perplexity",
            *DOWNSTREAM_COLUMNS.values(),
            "p_new",
            "p_true_known",
            "n_known",
        ]
        if c in table.columns
    ]
    table = table[keys + columns]
    facts = main.assign(order=main["order"] if "order" in main else 0)[keys + ["facts"]].drop_duplicates(keys)
    table = table.merge(facts.astype({key: table[key].dtype for key in keys}), on=keys, how="left")
    table = table.sort_values(["method", "variant", "order", "edits"]).reset_index(drop=True)
    table["n_records"] = table["n_records"].astype(int)
    return table[keys + ["facts"] + columns]


def editing_table(
    metric_files, csv_path: Path, markdown_path: Path, all_metrics_path: Path | None = None, ledger_files=()
) -> pd.DataFrame:
    """``summary`` of all metric files as CSV and Markdown; ``all_metrics_path`` receives every tidy row.
    With ``ledger_files``, each snapshot row also gets the run's editing cost up to it (``cost_to_snapshot``)."""
    tidy = read_csvs(metric_files)
    if all_metrics_path is not None:
        tidy.to_csv(all_metrics_path, index=False)
    table = summary(tidy).drop(columns=["p_new", "p_true_known", "n_known"], errors="ignore")
    if ledger_files:
        table = cost_to_snapshot(table, read_csvs(ledger_files))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    markdown_path.write_text(table.to_markdown(index=False, floatfmt=".2f") + "\n")
    return table


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The last snapshot of every run (per ordering)."""
    return table.loc[table.groupby(["method", "variant", "order"])["edits"].idxmax()]


def mean_and_interval(values) -> tuple[float, float | None, float | None]:
    """Mean over orderings and its 95% percentile-bootstrap interval (None with fewer than 2 orderings)."""
    from scipy.stats import bootstrap

    values = [float(v) for v in values if pd.notna(v)]
    if not values:
        return float("nan"), None, None
    if len(values) < 2:
        return values[0], None, None
    result = bootstrap(
        (values,),
        lambda sample, axis: sample.mean(axis=axis),
        confidence_level=0.95,
        n_resamples=2000,
        method="percentile",
        random_state=0,
    )
    return sum(values) / len(values), float(result.confidence_interval.low), float(result.confidence_interval.high)


def seconds_per_edit(ledger: pd.DataFrame) -> pd.DataFrame:
    """Per run: seconds per edit (targets + keys + solves, summed over batches / edits), mean iterations and, where
    the ledger has them, the mean post-update p(new) and success (each batch's facts right after its update)."""
    per_batch = ledger.groupby(["method", "variant", "batch"])[["targets_s", "keys_s", "solve_s"]].first().reset_index()
    totals = per_batch.groupby(["method", "variant"])[["targets_s", "keys_s", "solve_s"]].sum()
    means = {"edits": ("case_id", "size"), "iterations": ("iterations", "mean")}
    if "post_p_new" in ledger:  # post-update efficacy (ledgers written before it lack it)
        means.update(post_p_new=("post_p_new", "mean"), post_success=("post_success", "mean"))
    counts = ledger.groupby(["method", "variant"]).agg(**means)
    result = totals.join(counts)
    result["s_per_edit"] = (result["targets_s"] + result["keys_s"] + result["solve_s"]) / result["edits"]
    return result.reset_index()


def fastest_seconds_per_edit(ledger: pd.DataFrame, quantile: float = 0.1) -> pd.Series:
    """Per run (method, variant): the ``quantile`` of its batches' seconds per edit, (targets + keys + solves) /
    batch size. Jobs that share their cores with other work run slower part of the time; the fastest batches show
    the speed of a job with its cores to itself (docs/studies.md)."""
    per_batch = ledger.groupby(["method", "variant", "order", "batch"]).agg(
        targets_s=("targets_s", "first"), keys_s=("keys_s", "first"), solve_s=("solve_s", "first"),
        edits=("case_id", "size"),
    )  # fmt: skip
    rate = (per_batch["targets_s"] + per_batch["keys_s"] + per_batch["solve_s"]) / per_batch["edits"]
    return rate.groupby(level=["method", "variant"]).quantile(quantile)


def cost_to_snapshot(table: pd.DataFrame, ledger: pd.DataFrame) -> pd.DataFrame:
    """Add ``iterations`` (mean target-optimisation forwards per edit) and ``s_per_edit`` (targets + keys +
    solves, per edit) over the edits up to each row's snapshot; empty for the unedited model."""
    ledger = ledger.assign(order=ledger["order"].astype(str))
    iterations, seconds = [], []
    for row in table.itertuples():
        done = ledger[
            (ledger["method"] == row.method)
            & (ledger["variant"] == row.variant)
            & (ledger["order"] == str(row.order))
            & (ledger["position"] < row.edits)
        ]
        if done.empty:
            iterations.append(float("nan")), seconds.append(float("nan"))
            continue
        per_batch = done.groupby("batch")[["targets_s", "keys_s", "solve_s"]].first().sum()
        iterations.append(float(done["iterations"].mean()))
        seconds.append(float(per_batch.sum()) / len(done))
    return table.assign(iterations=iterations, s_per_edit=seconds)
