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

from encore.models.architecture import ARCHITECTURES, num_layers
from encore.models.precision import matmul_precision
from encore.models.prefix_attention import KeyValueRecorder, PrefixKeyValues, attention_mask, grouped_query_sdpa
from encore.models.tokens import answer_token_ids, encode, pad_id, pad_right
from encore.progress import Progress


def head_log_probs(model, hidden: torch.Tensor) -> torch.Tensor:
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
        return -head_log_probs(model, hidden_rows).gather(1, labels[:, None])[:, 0]

    return mean_answer_token_score(model, tokenizer, prompts, answers, token_nll, batch_size, description)


@torch.no_grad()
def answer_nll_and_top1(
    model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 64, description: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """From one pass: the mean per-token NLL of each answer (as ``answer_nll``) and whether every answer token
    is the argmax of its position (teacher forced; a logit soft-cap is monotonic and keeps the argmax)."""

    def nll_and_hit(hidden_rows, labels):
        log_probs = head_log_probs(model, hidden_rows)
        nll = -log_probs.gather(1, labels[:, None])[:, 0]
        return torch.stack([nll, (log_probs.argmax(dim=-1) == labels).to(nll.dtype)], dim=1)

    scores = mean_answer_token_score(model, tokenizer, prompts, answers, nll_and_hit, batch_size, description)
    if scores.numel() == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.bool)
    return scores[:, 0], scores[:, 1] == 1.0


def mean_answer_token_score(model, tokenizer, prompts: list[str], answers: list[str], token_score,
                            batch_size: int = 64, description: str | None = None) -> torch.Tensor:  # fmt: skip
    """Mean over each answer's tokens of ``token_score(hidden_rows, labels)`` (one value per scored
    position, computed from the final hidden states at the positions predicting the answer tokens).

    Teacher forced: the answer's tokens a_j are predicted after encode(prompt) + a_<j. Each distinct prompt
    runs once, recording its keys/values (``batch_size`` prompts per forward, sorted by length); the last
    prompt position scores every answer's first token, and answers of several tokens continue from the
    recorded prompt with only their own tokens (encore.models.prefix_attention): the same numbers as one whole
    forward per (prompt, answer), at about half the tokens for CounterFact's two candidates per prompt.
    Returns a CPU tensor (len(prompts),) in input order, or (len(prompts), k) when ``token_score`` returns k
    values per position. ``description``: report progress under that name.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    distinct: dict[str, int] = {}
    prompt_ids, candidates = [], []  # per distinct prompt: its ids and [(pair index, answer ids)]
    for pair, (prompt, answer) in enumerate(zip(prompts, answers)):
        if prompt not in distinct:
            ids = encode(tokenizer, prompt)
            if not ids:
                raise ValueError(f"prompt {prompt!r} has no tokens: nothing predicts the first answer token")
            distinct[prompt] = len(prompt_ids)
            prompt_ids.append(ids)
            candidates.append([])
        candidates[distinct[prompt]].append((pair, answer_token_ids(tokenizer, answer)))
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    result: torch.Tensor | None = None
    progress = Progress(len(prompts), description, "prompts") if description else None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        scorer = _score_chunk if _supports_prefix_reuse(model) else _score_chunk_whole
        with matmul_precision(model):  # precision: bf16-mixed: bfloat16 products, log-softmax and scores float32
            pairs, hidden, labels = scorer(
                model, tokenizer, [prompt_ids[i] for i in chunk], [candidates[i] for i in chunk]
            )
            scores = token_score(hidden, labels)
        owner = torch.repeat_interleave(torch.arange(len(pairs)), torch.tensor([len(ids) for _, ids in pairs]))
        sums = torch.zeros((len(pairs), *scores.shape[1:]), dtype=scores.dtype).index_add_(0, owner, scores.cpu())
        counts = torch.tensor([len(ids) for _, ids in pairs], dtype=scores.dtype).view(-1, *([1] * (scores.dim() - 1)))
        if result is None:
            result = torch.empty((len(prompts), *scores.shape[1:]), dtype=scores.dtype)
        result[torch.tensor([pair for pair, _ in pairs])] = sums / counts
        if progress is not None:
            progress.update(len(pairs))
    if progress is not None:
        progress.close()
    return result if result is not None else torch.empty(0)


def _supports_prefix_reuse(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in ARCHITECTURES


def _score_chunk_whole(model, tokenizer, prompt_ids: list[list[int]], candidates: list[list[tuple[int, list[int]]]]):
    """Like ``_score_chunk`` with one whole sequence per (prompt, answer): for any model exposing only
    ``base_model(input_ids=, attention_mask=, use_cache=)`` returning ``.last_hidden_state``."""
    device = next(model.parameters()).device
    pairs = [(row, pair, ids) for row, group in enumerate(candidates) for pair, ids in group]
    batch = pad_right([prompt_ids[row] + ids[:-1] for row, _, ids in pairs], pad_id(tokenizer), device)
    hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    hidden = hidden.last_hidden_state
    rows = [i for i, (_, _, ids) in enumerate(pairs) for _ in ids]
    cols = [len(prompt_ids[row]) - 1 + j for row, _, ids in pairs for j in range(len(ids))]
    labels = torch.tensor([token for _, _, ids in pairs for token in ids], device=device)
    return [(pair, ids) for _, pair, ids in pairs], hidden[rows, cols], labels


def _score_chunk(model, tokenizer, prompt_ids: list[list[int]], candidates: list[list[tuple[int, list[int]]]]):
    """One forward of the prompts (recording keys/values), one of the multi-token answers' continuations.
    Returns (pairs in scoring order, final hidden states at every scored position, the labels there);
    each pair's answer tokens are consecutive."""
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in prompt_ids]
    batch = pad_right(prompt_ids, pad_id(tokenizer), device)
    width = batch.input_ids.shape[1]
    recorder = KeyValueRecorder(range(num_layers(model)))
    with grouped_query_sdpa(device):
        prompt_hidden = model.base_model(
            input_ids=batch.input_ids,
            attention_mask=attention_mask(model, [0] * len(lengths), lengths, 0, width),
            position_ids=torch.arange(width, device=device).expand(len(lengths), -1),
            past_key_values=recorder,
            use_cache=False,
        ).last_hidden_state
    pairs = [(row, pair, ids) for row, group in enumerate(candidates) for pair, ids in group]
    continued = [(row, ids) for row, _, ids in pairs if len(ids) > 1]
    suffix_hidden = None
    if continued:
        owners = torch.tensor([row for row, _ in continued], device=device)
        suffix_lengths = [len(ids) - 1 for _, ids in continued]
        prefix_lengths = [lengths[row] for row, _ in continued]
        suffix_width = max(suffix_lengths)
        suffix = pad_right([ids[:-1] for _, ids in continued], pad_id(tokenizer), device)
        layers = sorted(recorder.keys)
        cache = PrefixKeyValues(
            {layer: recorder.keys[layer][owners] for layer in layers},
            {layer: recorder.values[layer][owners] for layer in layers},
        )
        positions = torch.tensor(prefix_lengths, device=device)[:, None] + torch.arange(suffix_width, device=device)
        with grouped_query_sdpa(device):
            suffix_hidden = model.base_model(
                input_ids=suffix.input_ids,
                position_ids=positions,
                past_key_values=cache,
                use_cache=False,
                attention_mask=attention_mask(model, prefix_lengths, suffix_lengths, width, suffix_width),
            ).last_hidden_state
    rows, labels, continuation = [], [], 0
    for row, _, ids in pairs:
        rows.append(prompt_hidden[row, lengths[row] - 1])  # predicts the first answer token
        if len(ids) > 1:
            rows.extend(suffix_hidden[continuation, : len(ids) - 1])
            continuation += 1
        labels.extend(ids)
    return [(pair, ids) for _, pair, ids in pairs], torch.stack(rows), torch.tensor(labels, device=device)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def counterfact_record_scores(model, tokenizer, records, batch_size: int = 64) -> pd.DataFrame:
    """Per-record CounterFact scores from one batched pass over all prompts × {new, true}.

    Columns (P = exp(-NLL); a record without paraphrase/neighborhood prompts gets NaN there):
      es = 1[NLL(rewrite, new) < NLL(rewrite, true)]       es_diff = P(rewrite, new) - P(rewrite, true)
      ps = mean_p 1[NLL(p, new) < NLL(p, true)]             ps_diff = mean_p P(p, new) - P(p, true)
      ns = mean_p 1[NLL(p, true) < NLL(p, new)]             ns_diff = mean_p P(p, true) - P(p, new)
      p_new_rewrite, p_true_rewrite = P(rewrite, new), P(rewrite, true)
      es_top1, ps_top1_hits, ns_top1_hits: prompts whose answer (new; new; true) is the argmax at every token
      n_paraphrase, n_neighborhood: prompt counts; true_top1_rewrite: the true answer is the argmax after the rewrite
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
    nll, top1 = answer_nll_and_top1(
        model,
        tokenizer,
        prompts + prompts,
        new_answers + true_answers,
        batch_size=batch_size,
        description=f"CounterFact scoring of {len(records)} records",
    )
    nll_new, nll_true = nll[:n].tolist(), nll[n:].tolist()
    top1_new, top1_true = top1[:n].tolist(), top1[n:].tolist()

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
            "es_top1": float(top1_new[r]),
            "ps_top1_hits": sum(top1_new[i] for i in paraphrases),
            "ns_top1_hits": sum(top1_true[i] for i in neighborhood),
            "n_paraphrase": len(paraphrases),
            "n_neighborhood": len(neighborhood),
            "true_top1_rewrite": bool(top1_true[r]),
        })  # fmt: skip
    columns = [
        "case_id",
        "es",
        "ps",
        "ns",
        "es_diff",
        "ps_diff",
        "ns_diff",
        "p_new_rewrite",
        "p_true_rewrite",
        "es_top1",
        "ps_top1_hits",
        "ns_top1_hits",
        "n_paraphrase",
        "n_neighborhood",
        "true_top1_rewrite",
    ]
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
