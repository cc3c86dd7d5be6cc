"""Evaluation of one model state (the unedited model or a snapshot) into tidy metric rows.

Every row carries ``metric``, ``value`` and a ``protocol`` tag saying which facts were scored and how
(encore.evaluation.protocols lists them).

Beside the metric rows, ``editing_results``, ``generation_results`` and ``generation_efficacy_results`` return the
per-record scores behind them (one row per scored fact, subset and protocol: ``subset``, ``protocol``, ``case_id`` and
``RECORD_COLUMNS`` + ``GENERATION_EFFICACY_COLUMNS``), from which every CounterFact / zsRE / GE / ES_gen, PS_gen metric
row of the same protocol is recomputed (``*.records.csv``).
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from encore.data.datasets import EditRecord
from encore.evaluation import protocols
from encore.evaluation.counterfact import counterfact_record_scores, summarise_counterfact
from encore.evaluation.generation_efficacy import generation_efficacy_of_records, summarise_generation_efficacy
from encore.evaluation.zsre import summarise_zsre, zsre_record_scores
from encore.settings import EvaluationSettings

AUTHORS_FRACTION, AUTHORS_SEED = 0.2, 42
# per-record columns of counterfact_record_scores kept in the records file, named as their metric rows where one
# exists (p_new_rewrite -> p_new, p_true_rewrite -> p_true; true_top1_rewrite as 0/1); for zsRE the accuracies
# efficacy, paraphrase, specificity are written as es, ps, ns (the protocol names the metric); generation rows: ge
RECORD_NAMES = {"p_new_rewrite": "p_new", "p_true_rewrite": "p_true", **{"efficacy": "es", "paraphrase": "ps",
                "specificity": "ns"}}  # fmt: skip
RECORD_COLUMNS = ["es", "ps", "ns", "es_diff", "ps_diff", "ns_diff", "p_new", "p_true", "es_top1", "ps_top1_hits",
                  "ns_top1_hits", "n_paraphrase", "n_neighborhood", "true_top1_rewrite", "ge"]  # fmt: skip
# generation efficacy rows (with n_paraphrase above): es_gen in {0, 1}, ps_gen_hits a count of paraphrase prompts
GENERATION_EFFICACY_COLUMNS = ["es_gen", "ps_gen_hits"]
# 12 significant digits: a mean over the file equals the metric row to ~1e-12 relative, at about half the size
RECORD_FLOAT_FORMAT = "%.12g"


def authors_subset_of(records: list[EditRecord]) -> list[EditRecord]:
    """The reference's final evaluation set: a random 20% of the edited facts (Python random, seed 42)."""
    k = max(1, round(AUTHORS_FRACTION * len(records)))
    chosen = set(random.Random(AUTHORS_SEED).sample(range(len(records)), k))
    return [record for index, record in enumerate(records) if index in chosen]


def _pooled_percent(hits: pd.Series, counts: pd.Series) -> float:
    total = float(counts.sum())
    return 100.0 * float(hits.sum()) / total if total else float("nan")


def counterfact_rows(scores: pd.DataFrame, subset: str) -> list[dict]:
    """Rows of the per-record ``counterfact_record_scores`` of the facts in ``subset``."""
    protocol = protocols.counterfact(subset)
    rows = [
        {"metric": metric, "value": value, "protocol": protocol}
        for metric, value in summarise_counterfact(scores).items()
    ]
    rows += [
        {"metric": "p_new", "value": float(scores["p_new_rewrite"].mean()), "protocol": protocol},
        {"metric": "p_true", "value": float(scores["p_true_rewrite"].mean()), "protocol": protocol},
    ]
    top1 = protocols.counterfact_top1(subset)  # percent of prompts (pooled) whose answer is the argmax at every token
    rows += [
        {"metric": "ES_top1", "value": 100.0 * float(scores["es_top1"].mean()), "protocol": top1},
        {
            "metric": "PS_top1",
            "value": _pooled_percent(scores["ps_top1_hits"], scores["n_paraphrase"]),
            "protocol": top1,
        },
        {
            "metric": "NS_top1",
            "value": _pooled_percent(scores["ns_top1_hits"], scores["n_neighborhood"]),
            "protocol": top1,
        },
    ]
    return rows


def known_fact_rows(scores: pd.DataFrame, subset: str) -> list[dict]:
    """Table 1, first column: the unedited model's probability of the true facts it knows
    (known = every token of target_true is the argmax after the rewrite prompt)."""
    known = scores[scores["true_top1_rewrite"].astype(bool)]
    protocol = protocols.known_facts(subset)
    return [
        {"metric": "p_true_known", "value": float(known["p_true_rewrite"].mean()), "protocol": protocol},
        {"metric": "n_known", "value": len(known), "protocol": protocol},
    ]


def _zsre_results(model, tokenizer, records: list[EditRecord], subset: str) -> tuple[list[dict], pd.DataFrame]:
    scores = zsre_record_scores(model, tokenizer, records)
    protocol = protocols.zsre(subset)
    rows = [
        {"metric": metric, "value": value, "protocol": protocol} for metric, value in summarise_zsre(scores).items()
    ]
    return rows, _record_frame(scores, subset, protocol)


def _record_frame(scores: pd.DataFrame, subset: str, protocol: str) -> pd.DataFrame:
    """subset, protocol, case_id and the RECORD_COLUMNS and GENERATION_EFFICACY_COLUMNS ``scores`` has (renamed by
    RECORD_NAMES; booleans as 0/1)."""
    scores = scores.rename(columns=RECORD_NAMES)
    known = [*RECORD_COLUMNS, *GENERATION_EFFICACY_COLUMNS]
    frame = scores[["case_id", *[c for c in known if c in scores.columns]]].copy()
    if "true_top1_rewrite" in frame:
        frame["true_top1_rewrite"] = frame["true_top1_rewrite"].astype(int)
    frame.insert(0, "protocol", protocol)
    frame.insert(0, "subset", subset)
    return frame


def generation_results(
    model, tokenizer, records: list[EditRecord], subset: str, limit: int | None, seed: int
) -> tuple[list[dict], pd.DataFrame]:
    """GE = 100 x mean over records of their generation entropy, and the per-record frame (column ge)."""
    from encore.evaluation.fluency import generation_entropy_of_records

    chosen = [r for r in records if r.generation_prompts][:limit]
    # batches of 64 prompts: half the time of 16 on 2 CPU cores (122 s -> 60 s for 200 prompts of SmolLM2), same texts
    entropy = generation_entropy_of_records(model, tokenizer, chosen, seed=seed, batch_size=64)
    protocol = protocols.generation(subset)
    rows = [
        {"metric": "GE", "value": 100.0 * float(entropy["ge"].mean()), "protocol": protocol},
        {"metric": "GE_records", "value": len(chosen), "protocol": protocol},
    ]
    return rows, _record_frame(entropy, subset, protocol)


def generation_efficacy_results(
    model, tokenizer, dataset: str, records: list[EditRecord], subset: str
) -> tuple[list[dict], pd.DataFrame]:
    """ES_gen and PS_gen (greedy decoding starts with target_new, encore.evaluation.generation_efficacy) of
    ``records``, and the per-record frame (es_gen, n_paraphrase, ps_gen_hits)."""
    scores = generation_efficacy_of_records(model, tokenizer, records)
    protocol = protocols.generation_efficacy(dataset, subset)
    rows = [
        {"metric": metric, "value": value, "protocol": protocol}
        for metric, value in summarise_generation_efficacy(scores).items()
    ]
    return rows, _record_frame(scores, subset, protocol)


def editing_results(
    model,
    tokenizer,
    dataset: str,
    records: list[EditRecord],
    subset: str,
    unedited: bool = False,
    authors_subset: bool = False,
) -> tuple[list[dict], pd.DataFrame]:
    """Editing metrics of ``records`` (each prompt scored once); for CounterFact also Table 1's known-fact
    probabilities (``unedited``) and the same metrics on the authors' seeded 20% (``authors_subset``).
    Also the per-record scores of each subset scored (``_record_frame``: one row per fact and subset)."""
    if dataset == "counterfact":
        scores = counterfact_record_scores(model, tokenizer, records)
        rows = counterfact_rows(scores, subset)
        frames = [_record_frame(scores, subset, rows[0]["protocol"])]
        if unedited:
            rows += known_fact_rows(scores, subset)
        if authors_subset:
            chosen = {record.case_id for record in authors_subset_of(records)}
            sampled = scores[scores["case_id"].isin(chosen)]
            sampled_rows = counterfact_rows(sampled, "authors-20pct")
            rows += sampled_rows
            frames.append(_record_frame(sampled, "authors-20pct", sampled_rows[0]["protocol"]))
        return rows, pd.concat(frames, ignore_index=True)
    if dataset == "zsre":
        rows, frame = _zsre_results(model, tokenizer, records, subset)
        frames = [frame]
        if authors_subset:
            sampled_rows, sampled = _zsre_results(model, tokenizer, authors_subset_of(records), "authors-20pct")
            rows += sampled_rows
            frames.append(sampled)
        return rows, pd.concat(frames, ignore_index=True)
    raise ValueError(f"unknown dataset {dataset!r} (known: counterfact, zsre)")


def to_frame(rows: list[dict] | pd.DataFrame, **columns) -> pd.DataFrame:
    """Tidy table: experiment, model, dataset, method, variant, order, edits, metric, value, protocol
    (or, for a records frame, the same identifying columns before subset, protocol, case_id, ...)."""
    frame = pd.DataFrame(rows)
    for name, value in reversed(columns.items()):
        frame.insert(0, name, value)
    return frame


def records_path(metrics_path) -> Path:
    """Where the per-record scores of a metrics CSV go: edits_00500.csv -> edits_00500.records.csv."""
    metrics_path = Path(metrics_path)
    return metrics_path.with_name(f"{metrics_path.stem}.records.csv")


def write_records(frame: pd.DataFrame, path) -> None:
    frame.to_csv(path, index=False, float_format=RECORD_FLOAT_FORMAT)


def perplexity_rows(model, tokenizer, data_dir, cache_dir, evaluation: EvaluationSettings | dict) -> list[dict]:
    """``perplexity`` and ``nll_per_token`` on the WikiText-2 test split (encore.evaluation.perplexity);
    ``evaluation``: an EvaluationSettings or a dict of its keys (the schema's defaults fill the rest)."""
    from encore.evaluation.perplexity import corpus_perplexity_rows

    settings = EvaluationSettings.of(evaluation)
    return corpus_perplexity_rows(
        model,
        tokenizer,
        tokens=settings.perplexity_tokens,
        window=settings.perplexity_window,
        data_dir=data_dir,
        cache_dir=cache_dir,
    )


def downstream_results(
    model, tokenizer, data_dir, evaluation: EvaluationSettings | dict
) -> tuple[list[dict], pd.DataFrame]:
    """Six downstream tasks, both protocols; metric names are "<task>.<metric>" (e.g. "average.f1"). Also the
    per-item frame (task, item, label, prediction, protocol) the metrics are computed from. ``evaluation``: an
    EvaluationSettings or a dict of its keys (the schema's defaults fill the rest)."""
    import os

    from encore.evaluation.downstream import TASKS, evaluate_tasks

    settings = EvaluationSettings.of(evaluation)
    directory = data_dir or os.environ.get("ENCORE_DATA_DIR")
    if not directory:
        raise ValueError(
            "downstream evaluation reads the authors' task subsets from a local data directory: "
            "set data_dir (or ENCORE_DATA_DIR), or evaluation.downstream: none"
        )
    frame, items = evaluate_tasks(
        model,
        tokenizer,
        directory,
        tasks=list(settings.downstream_tasks) or TASKS,  # an empty list: every task
        n_tests=settings.downstream_tests,
        shots=settings.downstream_shots,
    )
    rows = []
    for row in frame.itertuples():
        metric = "average.f1" if (row.task, row.metric) == ("average", "f1_x100") else f"{row.task}.{row.metric}"
        rows.append({"metric": metric, "value": row.value, "protocol": row.protocol})
    return rows, items


def downstream_records_path(metrics_path) -> Path:
    """Where the per-item downstream predictions of a metrics CSV go: edits_00500.csv -> edits_00500.downstream.csv."""
    metrics_path = Path(metrics_path)
    return metrics_path.with_name(f"{metrics_path.stem}.downstream.csv")
