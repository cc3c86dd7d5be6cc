"""zsRE metrics (algorithms.md §7.3): token-level teacher-forced top-1 accuracy.

For a prompt p and an answer a with ids y_1..y_T = ``tokens.answer_token_ids(a)`` (the tokens of
" " + a after a word), the sequence encode(p) + y_1..y_{T-1} is fed once and

    correct_j = 1[argmax_v logits(position len(encode(p)) - 1 + j)_v == y_j],   j = 0..T-1 (0-based)
    accuracy(p, a) = (1/T) Σ_j correct_j

Exactly the answer tokens after the prompt are scored for every tokenizer (a BOS is part of the prompt).
The reference feeds prompt + decode(y_<j) as text, which re-tokenises the answer prefix; feeding the ids
is the same whenever decoding and re-encoding round-trip, and never scores BOS.

Per record: efficacy = accuracy(rewrite prompt, target_new); paraphrase = mean over paraphrase prompts
of accuracy(p, target_new); specificity = mean over neighborhood prompts of accuracy(p,
neighborhood_target) (absolute, not relative to the unedited model). The summary reports ES, PS, NS
= 100 · mean over records; the paper defines no overall zsRE score, so none is computed.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from encore.evaluation.counterfact import mean_answer_token_score


@torch.no_grad()
def answer_token_accuracy(model, tokenizer, prompts: list[str], answers: list[str],
                          batch_size: int = 64) -> torch.Tensor:  # fmt: skip
    """Teacher-forced top-1 accuracy of each answer's tokens after its prompt, a CPU float64 tensor
    (len(prompts),) in input order. Sequences are sorted by length and right padded; the LM head is
    applied only at the scored positions (``model.base_model`` + ``get_output_embeddings()``; a logit
    soft-cap is monotonic and does not change the argmax)."""

    def token_correct(hidden_rows, labels):
        return (model.get_output_embeddings()(hidden_rows).argmax(dim=-1) == labels).double()

    return mean_answer_token_score(model, tokenizer, prompts, answers, token_correct, batch_size)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def zsre_record_scores(model, tokenizer, records, batch_size: int = 64) -> pd.DataFrame:
    """Per-record columns case_id, efficacy, paraphrase, specificity (accuracies in [0, 1]; NaN for a
    record without paraphrase or neighborhood prompts), from one batched pass over all prompts."""
    prompts, answers, groups = [], [], []
    for record in records:
        if record.neighborhood_prompts and record.neighborhood_target is None:
            raise ValueError(f"record {record.case_id} has neighborhood prompts but no neighborhood_target")
        spans = []
        for group, answer in (([record.rewrite_prompt], record.target_new),
                              (record.paraphrase_prompts, record.target_new),
                              (record.neighborhood_prompts, record.neighborhood_target)):  # fmt: skip
            spans.append(range(len(prompts), len(prompts) + len(group)))
            prompts += group
            answers += [answer] * len(group)
        groups.append(spans)
    accuracy = answer_token_accuracy(model, tokenizer, prompts, answers, batch_size=batch_size).tolist()
    rows = [
        {"case_id": record.case_id, "efficacy": accuracy[rewrite[0]],
         "paraphrase": _mean([accuracy[i] for i in paraphrases]),
         "specificity": _mean([accuracy[i] for i in neighborhood])}
        for record, (rewrite, paraphrases, neighborhood) in zip(records, groups)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["case_id", "efficacy", "paraphrase", "specificity"])


def summarise_zsre(scores: pd.DataFrame) -> dict:
    """ES, PS, NS = 100 · mean over records of efficacy, paraphrase, specificity (NaN rows skipped);
    n_records. No overall score: the paper does not define one for zsRE."""
    summary = {key: 100.0 * float(scores[column].mean())
               for key, column in (("ES", "efficacy"), ("PS", "paraphrase"), ("NS", "specificity"))}  # fmt: skip
    summary["n_records"] = len(scores)
    return summary
