"""Post-update efficacy: each batch's own facts scored on their rewrite prompt right after its update is written
(docs/algorithms.md §7.4).

For a request with rewrite prompt p (the template filled with the subject), new target o* and true object o^c,
scored teacher forced as in ``encore.evaluation.counterfact.answer_nll`` (NLL = mean per-token negative log-likelihood):

    p_new   = exp(-NLL(p, o*))        p_true = exp(-NLL(p, o^c))     (geometric mean of the tokens' probabilities)
    success = 1[NLL(p, o*) < NLL(p, o^c)]                            (CounterFact's efficacy rule, ES)
    top1    = 1[every token of o* is the argmax at its position]     (zsRE's exact-match rule)

Measured once per batch, before any later batch, it is immediate efficacy; the snapshots' ES measures retention of
the same facts after later edits. The edit job computes it in the scoring precision (config key ``precision``).
"""

from __future__ import annotations

import math

import torch

from encore.data.datasets import EditRecord
from encore.evaluation.counterfact import answer_nll_and_top1

COLUMNS = ("post_p_new", "post_p_true", "post_success", "post_top1")


@torch.no_grad()
def post_update_efficacy(model, tokenizer, records: list[EditRecord]) -> list[dict]:
    """One row per record (in order): p_new, p_true, success and top1 of its rewrite prompt (module doc)."""
    prompts = [record.rewrite_prompt for record in records]
    with_true = [i for i, record in enumerate(records) if record.target_true is not None]
    answers = [record.target_new for record in records] + [records[i].target_true for i in with_true]
    nll, top1 = answer_nll_and_top1(model, tokenizer, prompts + [prompts[i] for i in with_true], answers)
    nll_true = dict(zip(with_true, nll[len(records) :].tolist()))  # each prompt runs once for both answers
    rows = []
    for i, (new, hit) in enumerate(zip(nll[: len(records)].tolist(), top1.tolist())):
        true = nll_true.get(i, math.nan)  # a request without target_true (API): nothing to compare with
        rows.append({
            "post_p_new": math.exp(-new),
            "post_p_true": math.exp(-true),
            "post_success": float(new < true) if i in nll_true else math.nan,
            "post_top1": bool(hit),
        })  # fmt: skip
    return rows
