"""Generation-based efficacy (ES_gen, PS_gen): does greedy decoding say the new target? (docs/algorithms.md §7.6;
the teacher-forced rules it checks are §7.2.)

For a prompt p and the new target o* with ids o_1..o_m = ``answer_token_ids(o*)`` (the tokens of " " + o* after a
word: exactly the tokens teacher-forced scoring scores), decode m tokens greedily after ``encode(p)``:

    g_j = argmax_v P(v | p, g_<j),   j = 1..m
    hit(p) = 1[(g_1, .., g_m) == (o_1, .., o_m)]          (ids compared; no text is decoded or normalised)

i.e. the greedy continuation starts with the new target (what follows it is not looked at). Per record:

    es_gen      = hit(rewrite prompt)
    ps_gen_hits = Σ_{p ∈ paraphrase prompts} hit(p),      n_paraphrase = their count

Reported (``summarise_generation_efficacy``): ES_gen = 100 · mean over records of es_gen; PS_gen = 100 · Σ ps_gen_hits
/ Σ n_paraphrase (pooled over prompts, as PS_top1); n_records; protocol ``<dataset>/<subset>/greedy-exact-match``.

Why it checks the teacher-forced scores: while g_<j = o_<j a greedy step sees exactly the teacher-forced input, so
hit(p) = 1 iff o_j is the argmax at every teacher-forced position, i.e. ES_gen = ES_top1 and PS_gen = PS_top1
(``metrics.answer_nll_and_top1``) up to argmax ties. The two come from different code: here the model's own forward
with its key/value cache and left padding, there each prompt's recorded keys/values and hand-built 4-D masks
(``encore.models.prefix_attention``); a fact on which they disagree points at one of them.

Decoding: each distinct prompt is decoded once, for the longest target asked of it; prompts are sorted by length,
batched with left padding from ``tokens.encode`` ids (the tokenizer is never changed) and run in the scoring
precision (``matmul_precision``, as teacher-forced scoring). Greedy decoding has no randomness: the ids do not
depend on the batch size.
"""

from __future__ import annotations

import pandas as pd
import torch

from encore.data.datasets import EditRecord
from encore.models.decoding import decode, left_padded
from encore.models.precision import matmul_precision
from encore.models.tokens import answer_token_ids, encode, pad_id
from encore.progress import Progress

COLUMNS = ["case_id", "es_gen", "ps_gen_hits", "n_paraphrase"]


def greedy(logits: torch.Tensor, step: int) -> torch.Tensor:
    """The most probable next token (greedy decoding; ``step`` is not needed)."""
    return logits.argmax(dim=-1)


@torch.no_grad()
def greedy_token_ids(model, tokenizer, prompts: list[str], lengths: list[int], batch_size: int = 64) -> list[list[int]]:
    """The first ``lengths[i]`` greedily decoded ids after ``encode(prompts[i])`` (prompt ids not included)."""
    if len(prompts) != len(lengths):
        raise ValueError(f"{len(prompts)} prompts but {len(lengths)} lengths")
    device = next(model.parameters()).device
    items = [encode(tokenizer, prompt) for prompt in prompts]
    if any(not ids for ids in items):
        raise ValueError("a prompt has no tokens: nothing to continue")
    result: list[list[int]] = [[] for _ in prompts]
    order = sorted((i for i in range(len(items)) if lengths[i] > 0), key=lambda i: (len(items[i]), lengths[i]))
    progress = Progress(len(order), "generation efficacy (greedy decoding)", "prompts")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = left_padded([items[i] for i in chunk], pad_id(tokenizer), device)
        with matmul_precision(model):  # the scoring precision, as teacher-forced scoring
            new_tokens = decode(model, ids, mask, max(lengths[i] for i in chunk), greedy)
        generated = new_tokens.cpu().tolist()
        for row, i in enumerate(chunk):
            result[i] = generated[row][: lengths[i]]
        progress.update(len(chunk))
    progress.close()
    return result


def generation_efficacy_of_records(model, tokenizer, records: list[EditRecord], batch_size: int = 64) -> pd.DataFrame:
    """One row per record (``COLUMNS``): es_gen, ps_gen_hits and n_paraphrase of the module doc."""
    wanted: dict[str, int] = {}  # distinct prompt -> the most tokens any of its targets needs
    targets = []
    for record in records:
        target = answer_token_ids(tokenizer, record.target_new)
        targets.append(target)
        for prompt in (record.rewrite_prompt, *record.paraphrase_prompts):
            wanted[prompt] = max(wanted.get(prompt, 0), len(target))
    prompts = list(wanted)
    decoded = dict(zip(prompts, greedy_token_ids(model, tokenizer, prompts, [wanted[p] for p in prompts], batch_size)))

    def hit(prompt: str, target: list[int]) -> int:
        return int(decoded[prompt][: len(target)] == target)

    rows = [
        {
            "case_id": record.case_id,
            "es_gen": float(hit(record.rewrite_prompt, target)),
            "ps_gen_hits": sum(hit(prompt, target) for prompt in record.paraphrase_prompts),
            "n_paraphrase": len(record.paraphrase_prompts),
        }
        for record, target in zip(records, targets)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise_generation_efficacy(scores: pd.DataFrame) -> dict[str, float]:
    """ES_gen = 100 · mean es_gen; PS_gen = 100 · Σ ps_gen_hits / Σ n_paraphrase (NaN without paraphrase prompts);
    n_records."""
    paraphrases = float(scores["n_paraphrase"].sum())
    return {
        "ES_gen": 100.0 * float(scores["es_gen"].mean()),
        "PS_gen": 100.0 * float(scores["ps_gen_hits"].sum()) / paraphrases if paraphrases else float("nan"),
        "n_records": len(scores),
    }
