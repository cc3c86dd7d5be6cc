"""Perplexity on held-out text: a general-ability measure a small model is not at chance on.

Protocol (issue 18): the WikiText-2 test split (v1, tokenised text, ``wiki.test.tokens``) is tokenised whole with
the model's tokenizer (no special tokens); its first ``tokens`` ids are cut into consecutive, non-overlapping
windows of ``window`` ids (the last one shorter when ``window`` does not divide ``tokens``). Each window is one
sequence, starting at position 0 (after the tokenizer's BOS when it adds one); no token sees another window.
Every id that has a preceding id in its sequence is predicted, teacher forced:

    NLL = -(1/N) Σ_windows Σ_{i ≥ 1 (≥ 0 after a BOS)} log p(x_i | x_<i)        PPL = exp(NLL)

with N the number of predicted tokens (``tokens`` minus one per window without a BOS, ``tokens`` with one).
Log-probabilities come from a float32 (float64 for a float64 model) log softmax of the LM head.
"""

from __future__ import annotations

import math

import torch

from encore.data.datasets import read_text
from encore.data.files import DataError, resolve_data_file
from encore.evaluation import protocols
from encore.evaluation.counterfact import head_log_probs

CORPUS = "wikitext2_test"  # data registry key (encore.data.datasets)
CORPUS_NAME = "wikitext2-test"
WINDOW = 512


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text (a BOS, or nothing)."""
    bare = tokenizer("The", add_special_tokens=False).input_ids
    full = tokenizer("The").input_ids
    return list(full[: len(full) - len(bare)]) if full[len(full) - len(bare) :] == bare else []


def corpus_ids(tokenizer, text: str, tokens: int, source: str = "the text") -> list[int]:
    """The first ``tokens`` ids of ``text`` tokenised whole, without special tokens."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
    if len(ids) < tokens:
        raise ValueError(
            f"{source} has only {len(ids)} tokens with this tokenizer, fewer than evaluation.perplexity_tokens = "
            f"{tokens}: lower it"
        )
    return list(ids[:tokens])


def windows_of(ids: list[int], window: int) -> list[list[int]]:
    """Consecutive non-overlapping slices of ``window`` ids (the last one may be shorter)."""
    if window < 2:
        raise ValueError(f"evaluation.perplexity_window = {window}: a window needs at least 2 tokens")
    return [ids[start : start + window] for start in range(0, len(ids), window)]


def _max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


@torch.no_grad()
def perplexity_of_ids(model, ids: list[int], window: int, prefix: list[int] = (), batch_size: int = 4) -> dict:
    """Mean NLL per predicted token and perplexity of ``ids`` cut into windows (module docstring).

    ``prefix`` (a BOS) is put before every window and predicts its first id. Windows of equal length are run
    ``batch_size`` at a time through ``model.base_model``; the LM head is applied one window at a time.
    Returns nll_per_token, perplexity, predicted_tokens, windows, tokens.
    """
    prefix = list(prefix)
    limit = _max_positions(model)
    if limit is not None and len(prefix) + window > limit:
        raise ValueError(
            f"evaluation.perplexity_window = {window} (+{len(prefix)} BOS) exceeds the model's {limit} positions: "
            f"set it to at most {limit - len(prefix)}"
        )
    device = next(model.parameters()).device
    chunks = windows_of(ids, window)
    total, predicted = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        group = [prefix + chunk for chunk in chunks[start : start + batch_size]]
        by_length: dict[int, list[list[int]]] = {}
        for sequence in group:
            by_length.setdefault(len(sequence), []).append(sequence)
        for sequences in by_length.values():
            batch = torch.tensor(sequences, dtype=torch.long, device=device)
            hidden = model.base_model(input_ids=batch, use_cache=False).last_hidden_state
            for row in range(len(sequences)):
                log_probs = head_log_probs(model, hidden[row, :-1])
                labels = batch[row, 1:]
                total += -float(log_probs.gather(1, labels[:, None]).double().sum())
                predicted += labels.numel()
    if predicted == 0:
        raise ValueError("no token to predict: evaluation.perplexity_tokens must exceed one token per window")
    nll = total / predicted
    return {
        "nll_per_token": nll,
        "perplexity": math.exp(nll),
        "predicted_tokens": predicted,
        "windows": len(chunks),
        "tokens": len(ids),
    }


def corpus_perplexity_rows(model, tokenizer, tokens: int, window: int = WINDOW, data_dir=None,
                           cache_dir="resources/data") -> list[dict]:  # fmt: skip
    """Rows perplexity, nll_per_token, perplexity_predicted_tokens on the first ``tokens`` tokens of the WikiText-2
    test split, protocol ``perplexity/wikitext2-test/tokens<tokens>/window<window>``; none when ``tokens`` is 0."""
    if not tokens:
        return []
    if tokens < 0:
        raise ValueError(f"evaluation.perplexity_tokens = {tokens}: must be >= 0 (0 disables perplexity)")
    try:
        resolved = resolve_data_file(CORPUS, data_dir, cache_dir)
    except DataError as error:
        raise DataError(f"perplexity corpus: {error}") from None
    ids = corpus_ids(tokenizer, read_text(resolved.path), tokens, source=str(resolved.path))
    result = perplexity_of_ids(model, ids, window, prefix=special_prefix(tokenizer))
    protocol = protocols.perplexity(CORPUS_NAME, tokens, window)
    return [
        {"metric": "perplexity", "value": result["perplexity"], "protocol": protocol},
        {"metric": "nll_per_token", "value": result["nll_per_token"], "protocol": protocol},
        {"metric": "perplexity_predicted_tokens", "value": result["predicted_tokens"], "protocol": protocol},
    ]
