"""CounterFact evaluation metrics (algorithms.md §7.2).

For a prompt p and an answer o whose tokens (o_1..o_m) are the ids of " " + o after a word
(``tokens.answer_token_ids``), the score is the mean per-token negative log-likelihood, teacher forced:

    NLL(p, o) = -(1/m) Σ_j log P(o_j | p, o_<j)

Exactly the answer tokens that follow the prompt are scored, whatever the tokenizer (a BOS token is
part of the prompt, never of the answer). From it, per record:

    ES = 1[NLL(rewrite, new) < NLL(rewrite, true)]
    PS = mean_{p ∈ paraphrases}   1[NLL(p, new)  < NLL(p, true)]
    NS = mean_{p ∈ neighborhood}  1[NLL(p, true) < NLL(p, new)]

and the reported Score S = harmonic mean of (ES, PS, NS), all in percent.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from scipy.stats import hmean

from encore.progress import Progress
from encore.tokens import answer_token_ids, encode, pad_id, pad_right


def _log_probs(model, hidden: torch.Tensor) -> torch.Tensor:
    """log softmax of the LM head on hidden states (n, d) -> (n, vocab), in float32 (float64 kept)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return torch.log_softmax(logits.to(dtype), dim=-1)


@torch.no_grad()
def answer_nll(
    model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 64, description: str | None = None
) -> torch.Tensor:
    """Mean per-token NLL of each answer after its prompt: -(1/m) Σ_j log p(a_j | prompt, a_<j).

    The sequence is encode(prompt) + answer_token_ids(answer); the token a_j is predicted at
    position len(prompt) - 1 + j (0-based j). The last answer token is never an input, so it is
    not fed. Sequences are sorted by length, right padded with an attention mask, and the LM head
    is applied only at the scored positions. Returns a CPU tensor (len(prompts),) in the input order
    (float32, or float64 for a float64 model).

    Works with any model exposing ``base_model(input_ids=, attention_mask=, use_cache=)`` returning
    ``.last_hidden_state``, ``get_output_embeddings()`` and ``config``.
    """

    def token_nll(hidden_rows, labels):
        return -_log_probs(model, hidden_rows).gather(1, labels[:, None])[:, 0]

    return mean_answer_token_score(model, tokenizer, prompts, answers, token_nll, batch_size, description)


def mean_answer_token_score(model, tokenizer, prompts: list[str], answers: list[str], token_score,
                            batch_size: int = 64, description: str | None = None) -> torch.Tensor:  # fmt: skip
    """Mean over each answer's tokens of ``token_score(hidden_rows, labels)`` (one value per scored
    position, computed from the final hidden states at the positions predicting the answer tokens).

    Teacher forced: input = encode(prompt) + answer_ids[:-1]; sequences sorted by length, right padded.
    Returns a CPU tensor (len(prompts),) in input order. ``description``: report progress under that name.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    items = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = encode(tokenizer, prompt)
        if not prompt_ids:
            raise ValueError(f"prompt {prompt!r} has no tokens: nothing predicts the first answer token")
        items.append((prompt_ids, answer_token_ids(tokenizer, answer)))
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
    result: torch.Tensor | None = None
    progress = Progress(len(order), description, "prompts") if description else None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_right([items[i][0] + items[i][1][:-1] for i in chunk], pad_id(tokenizer), device)
        hidden = model.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        rows, cols, labels = [], [], []
        for row, i in enumerate(chunk):
            prompt_ids, answer_ids = items[i]
            for j, token in enumerate(answer_ids):
                rows.append(row)
                cols.append(len(prompt_ids) - 1 + j)
                labels.append(token)
        rows_t = torch.tensor(rows, device=device)
        scores = token_score(hidden[rows_t, torch.tensor(cols, device=device)], torch.tensor(labels, device=device))
        sums = torch.zeros(len(chunk), dtype=scores.dtype, device=device).index_add_(0, rows_t, scores)
        counts = torch.tensor([len(items[i][1]) for i in chunk], dtype=scores.dtype, device=device)
        if result is None:
            result = torch.empty(len(items), dtype=scores.dtype)
        result[torch.tensor(chunk)] = (sums / counts).cpu()
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.close()
    return result if result is not None else torch.empty(0)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def counterfact_record_scores(model, tokenizer, records, batch_size: int = 64) -> pd.DataFrame:
    """Per-record CounterFact scores from one batched ``answer_nll`` pass over all prompts × {new, true}.

    Columns (P = exp(-NLL); a record without paraphrase/neighborhood prompts gets NaN there):
      es = 1[NLL(rewrite, new) < NLL(rewrite, true)]       es_diff = P(rewrite, new) - P(rewrite, true)
      ps = mean_p 1[NLL(p, new) < NLL(p, true)]             ps_diff = mean_p P(p, new) - P(p, true)
      ns = mean_p 1[NLL(p, true) < NLL(p, new)]             ns_diff = mean_p P(p, true) - P(p, new)
      p_new_rewrite, p_true_rewrite = P(rewrite, new), P(rewrite, true)
    """
    prompts, new_answers, true_answers = [], [], []
    groups = []  # per record: prompt indices of (rewrite, paraphrases, neighborhood)
    for record in records:
        spans = []
        for group in ([record.rewrite_prompt], record.paraphrase_prompts, record.neighborhood_prompts):
            spans.append(range(len(prompts), len(prompts) + len(group)))
            prompts.extend(group)
        new_answers += [record.target_new] * (len(prompts) - len(new_answers))
        true_answers += [record.target_true] * (len(prompts) - len(true_answers))
        groups.append(spans)
    n = len(prompts)
    nll = answer_nll(
        model,
        tokenizer,
        prompts + prompts,
        new_answers + true_answers,
        batch_size=batch_size,
        description=f"CounterFact scoring of {len(records)} records",
    ).tolist()
    nll_new, nll_true = nll[:n], nll[n:]

    rows = []
    for record, (rewrite, paraphrases, neighborhood) in zip(records, groups):
        r = rewrite[0]
        rows.append({
            "case_id": record.case_id,
            "es": float(nll_new[r] < nll_true[r]),
            "ps": _mean([float(nll_new[i] < nll_true[i]) for i in paraphrases]),
            "ns": _mean([float(nll_true[i] < nll_new[i]) for i in neighborhood]),
            "es_diff": math.exp(-nll_new[r]) - math.exp(-nll_true[r]),
            "ps_diff": _mean([math.exp(-nll_new[i]) - math.exp(-nll_true[i]) for i in paraphrases]),
            "ns_diff": _mean([math.exp(-nll_true[i]) - math.exp(-nll_new[i]) for i in neighborhood]),
            "p_new_rewrite": math.exp(-nll_new[r]),
            "p_true_rewrite": math.exp(-nll_true[r]),
        })  # fmt: skip
    columns = ["case_id", "es", "ps", "ns", "es_diff", "ps_diff", "ns_diff", "p_new_rewrite", "p_true_rewrite"]
    return pd.DataFrame(rows, columns=columns)


def summarise_counterfact(scores: pd.DataFrame) -> dict:
    """Aggregate record scores: ES, PS, NS = 100 · mean over records (NaN rows skipped);
    S = hmean(ES, PS, NS) (0 if any of them is 0); ES_diff, PS_diff, NS_diff = 100 · mean; n_records."""
    summary = {name.upper(): 100.0 * float(scores[name].mean()) for name in ("es", "ps", "ns")}
    parts = [summary["ES"], summary["PS"], summary["NS"]]
    if any(math.isnan(part) for part in parts):
        summary["S"] = math.nan
    else:
        summary["S"] = 0.0 if min(parts) <= 0 else float(hmean(parts))
    for name in ("es", "ps", "ns"):
        summary[f"{name.upper()}_diff"] = 100.0 * float(scores[f"{name}_diff"].mean())
    summary["n_records"] = len(scores)
    return summary
