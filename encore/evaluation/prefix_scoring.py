"""Few-shot scoring with a shared, cached prefix: greedy generation and label log-likelihoods in one pass.

Every test prompt of a downstream task is ``context + query``, where the context (the rendered shots)
is the same for all items. The context is run once; its key/value cache is repeated over a batch of
queries, which are LEFT padded *after* the context (padding holes are masked and position ids are
given explicitly, so each query sees exactly ``context + query``). From that one query forward:

* the label words' mean per-token NLL, teacher forced (the first token from the last query position,
  further tokens of multi-token words from a copy of the cache); this equals
  ``encore.evaluation.counterfact.answer_nll(context + stem, word)``;
* greedy generation of ``new_tokens`` tokens (first from the same logits, the rest with the cache),
  cut after the first EOS as ``model.generate`` would stop.

A context whose own encoding is not a prefix of ``encode(context + query)`` (a token merging across
the boundary) is not split: that item is scored as a whole prompt without a cached prefix, so the
result is always the one of the unsplit prompt.

Sliding-window attention (Gemma-3, some Mistral/Qwen configurations) counts its window in cache
slots, so a padding hole would shift the window of a padded row. When a prompt can exceed the window,
only queries of equal length share a batch (no padding at all).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from encore.evaluation.counterfact import head_log_probs
from encore.models.precision import with_matmul_precision
from encore.models.tokens import answer_token_ids, encode, pad_id


@dataclass
class PrefixScores:
    generated: list[str]  # decoded new tokens per item (special tokens skipped)
    label_nll: torch.Tensor  # (items, labels): mean per-token NLL of " " + label word after the stem


def _split(tokenizer, context: str, text: str) -> tuple[tuple[int, ...], list[int]]:
    """(context ids, rest) with context ids + rest == encode(context + text), or ((), whole encoding)."""
    whole = encode(tokenizer, context + text)
    head = tuple(encode(tokenizer, context))
    if head and list(head) == whole[: len(head)] and len(whole) > len(head):
        return head, whole[len(head) :]
    return (), whole


class _Prefix:
    """A context's cache, repeated over batches; ``length`` tokens (0: no prefix)."""

    def __init__(self, model, ids: tuple[int, ...]):
        self.model, self.length, self.cache = model, len(ids), None
        if ids:
            device = next(model.parameters()).device
            output = model.base_model(input_ids=torch.tensor([ids], device=device), use_cache=True)
            self.cache = output.past_key_values

    def forward(self, sequences: list[list[int]], padding: int):
        """Run left-padded ``sequences`` after the prefix: (last hidden state per row, cache, mask, next position)."""
        device = next(self.model.parameters()).device
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), padding, dtype=torch.long)
        query_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            query_mask[row, width - len(seq) :] = 1
        positions = (self.length + query_mask.cumsum(1) - 1).clamp(min=self.length)
        mask = torch.cat([torch.ones((len(sequences), self.length), dtype=torch.long), query_mask], dim=1)
        cache = None
        if self.cache is not None:
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(len(sequences))
        output = self.model.base_model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        )
        return output.last_hidden_state[:, -1], output.past_key_values, mask.to(device), positions[:, -1].to(device) + 1


def _step(model, tokens: torch.Tensor, cache, mask: torch.Tensor, position: torch.Tensor):
    """Feed ``tokens`` (rows, k) after the cached sequence: hidden states (rows, k, d), extended mask."""
    rows, k = tokens.shape
    mask = torch.cat([mask, torch.ones((rows, k), dtype=mask.dtype, device=mask.device)], dim=1)
    positions = position[:, None] + torch.arange(k, device=tokens.device)
    output = model.base_model(
        input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
    )
    return output.last_hidden_state, mask


def _label_nll(model, last_hidden, cache, mask, position, label_ids: list[list[int]]) -> torch.Tensor:
    """(rows, labels) mean NLL of each label's tokens after the cached sequence (cache left untouched)."""
    first = head_log_probs(model, last_hidden)
    columns = []
    for ids in label_ids:
        nll = -first[:, ids[0]]
        if len(ids) > 1:
            forced = torch.tensor(ids[:-1], device=last_hidden.device).expand(last_hidden.shape[0], -1)
            hidden, _ = _step(model, forced, copy.deepcopy(cache), mask, position)
            log_probs = head_log_probs(model, hidden.reshape(-1, hidden.shape[-1])).reshape(*forced.shape, -1)
            targets = torch.tensor(ids[1:], device=last_hidden.device).expand_as(forced)
            nll = nll - log_probs.gather(2, targets[..., None])[..., 0].sum(1)
        columns.append(nll / len(ids))
    return torch.stack(columns, dim=1)


def _greedy(model, last_hidden, cache, mask, position, new_tokens: int) -> torch.Tensor:
    """(rows, new_tokens) greedy continuation; consumes the cache."""
    tokens = []
    for step in range(new_tokens):
        token = head_log_probs(model, last_hidden).argmax(dim=1)
        tokens.append(token)
        if step + 1 < new_tokens:
            hidden, mask = _step(model, token[:, None], cache, mask, position)
            last_hidden, position = hidden[:, -1], position + 1
    return torch.stack(tokens, dim=1)


def _sliding_window(model) -> int | None:
    """The attention window of a model with sliding-window layers, else None."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if window and (types is None or "sliding_attention" in types) and getattr(config, "use_sliding_window", True):
        return int(window)
    return None


def _chunks(items: list, batch_size: int, exact: bool):
    """Consecutive batches of the length-sorted ``items``; with ``exact``, a batch holds equal lengths only."""
    start = 0
    while start < len(items):
        end = min(start + batch_size, len(items))
        if exact:
            key = (len(items[start][1]), len(items[start][2] or ()))
            end = next((k for k in range(start + 1, end) if (len(items[k][1]), len(items[k][2] or ())) != key), end)
        yield items[start:end]
        start = end


def _eos_ids(model, tokenizer) -> set[int]:
    """The token ids ``generate`` stops at (the generation config's, else the tokenizer's EOS)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = tokenizer.eos_token_id if ids is None else ids
    return {i for i in (ids if isinstance(ids, list) else [ids]) if i is not None}


@torch.no_grad()
@with_matmul_precision  # precision: bf16-mixed: bfloat16 matrix products, log-softmax float32
def score_with_shared_prefix(
    model,
    tokenizer,
    contexts: list[str],
    queries: list[str],
    stems: list[str],
    label_words: list[str],
    new_tokens: int,
    batch_size: int = 16,
) -> PrefixScores:
    """Greedy continuation of ``contexts[i] + queries[i]`` and NLL of each label word after
    ``contexts[i] + stems[i]`` (the stem is the query, or the query without a trailing space).

    Items sharing a context share its cache; within a group, items are sorted by length and batched.
    """
    label_ids = [answer_token_ids(tokenizer, word) for word in label_words]
    stop, padding = _eos_ids(model, tokenizer), pad_id(tokenizer)
    generated: list[str] = [""] * len(queries)
    label_nll = torch.zeros((len(queries), len(label_words)), dtype=torch.float64)
    groups: dict[tuple[int, ...], list[tuple[int, list[int], list[int] | None]]] = {}
    for i, (context, query, stem) in enumerate(zip(contexts, queries, stems)):
        head, query_ids = _split(tokenizer, context, query)
        stem_head, stem_ids = _split(tokenizer, context, stem) if stem != query else (head, None)
        if stem_head != head:  # the two splits disagree: score both without a prefix
            head, query_ids, stem_ids = (), encode(tokenizer, context + query), encode(tokenizer, context + stem)
        groups.setdefault(head, []).append((i, query_ids, stem_ids))
    window = _sliding_window(model)
    for head, items in groups.items():
        prefix = _Prefix(model, head)
        items.sort(key=lambda item: (len(item[1]), len(item[2] or ())))
        longest = len(head) + max(len(q) + new_tokens for _, q, _ in items)
        for chunk in _chunks(items, batch_size, exact=window is not None and longest > window):
            index = [i for i, _, _ in chunk]
            last, cache, mask, position = prefix.forward([q for _, q, _ in chunk], padding)
            if all(s is None for _, _, s in chunk):  # stems are the queries: reuse their forward
                nll = _label_nll(model, last, cache, mask, position, label_ids)
            else:
                stem_batch = [q if s is None else s for _, q, s in chunk]
                nll = _label_nll(model, *prefix.forward(stem_batch, padding), label_ids)
            label_nll[index] = nll.double().cpu()
            for row, tokens in zip(index, _greedy(model, last, cache, mask, position, new_tokens).tolist()):
                cut = next((k + 1 for k, token in enumerate(tokens) if token in stop), len(tokens))
                generated[row] = tokenizer.decode(tokens[:cut], skip_special_tokens=True)
    return PrefixScores(generated, label_nll)
