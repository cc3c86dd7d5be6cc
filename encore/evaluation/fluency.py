"""Generation Entropy (fluency), algorithms.md §7.2.

For each record's generation prompts, texts are sampled with top-k (k = 5, temperature 1) until the
total length, prompt included, is ``max_length`` (100) tokens; the text is prompt + continuation. Per
text, with word tokens w and H_n the entropy in bits of the n-gram frequency distribution,

    E = mean(2/3 · H_2, 4/3 · H_3)

the record value is the mean of E over its texts, and the pipeline reports 100 · mean over records.

Word tokens: NLTK's ``word_tokenize`` runs the Punkt sentence splitter (which needs downloaded data)
and then ``NLTKWordTokenizer`` on each sentence. Here the sentences come from a regex split after
".", "?" or "!" (optionally followed by one closing quote/bracket) and whitespace, and the same
``NLTKWordTokenizer`` tokenises each one. Deviation: Punkt knows abbreviations and does not split
after them, so "Mr. Smith" gives ["Mr", ".", "Smith"] here but ["Mr.", "Smith"] with NLTK.

Sampling draws its randomness from one ``torch.Generator`` per prompt, seeded from (seed, key) with key
the prompt's index (or (case_id, index) for records): a text does not depend on the batch size, the
batch composition or the device, and generations of a record do not depend on the other records.
Prompts are batched with left padding built from ``tokens.encode`` ids (the tokenizer is never changed,
so its padding side stays as it was).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from functools import partial

import pandas as pd
import torch

from encore.models.decoding import decode, left_padded
from encore.models.tokens import encode, pad_id
from encore.progress import Progress

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")


def word_tokens(text: str) -> list[str]:
    """Word tokens in the manner of ``nltk.word_tokenize`` without the Punkt data (see module doc)."""
    from nltk.tokenize.destructive import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    sentences = [sentence for sentence in _SENTENCE_END.split(text) if sentence.strip()]
    return [token for sentence in sentences for token in tokenizer.tokenize(sentence)]


def ngram_entropy(tokens: list[str], n: int) -> float:
    """Entropy in bits of the frequency distribution of the n-grams of ``tokens`` (0 if there are none)."""
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def text_entropy(text: str) -> float:
    """mean(2/3 · H_2, 4/3 · H_3) of the word tokens of one text (the reference's weighting)."""
    tokens = word_tokens(text)
    return (2 / 3 * ngram_entropy(tokens, 2) + 4 / 3 * ngram_entropy(tokens, 3)) / 2


def generation_entropy(texts: list[str]) -> float:
    """Mean of ``text_entropy`` over texts (NaN for no text); the pipeline reports it × 100."""
    return sum(map(text_entropy, texts)) / len(texts) if texts else math.nan


def prompt_seed(seed: int, key) -> int:
    """A 63-bit generator seed derived from (seed, key), stable across runs and platforms."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") >> 1


def pick_top_k(logits: torch.Tensor, uniforms: torch.Tensor, top_k: int) -> torch.Tensor:
    """Inverse-CDF draw from softmax over the ``top_k`` largest logits (rows of (B, V)), uniforms (B,) in [0, 1)."""
    values, indices = logits.double().topk(min(top_k, logits.shape[-1]), dim=-1)
    cdf = torch.softmax(values, dim=-1).cumsum(dim=-1)
    choice = (cdf < uniforms.to(cdf.device, torch.float64)[:, None]).sum(dim=-1).clamp(max=values.shape[-1] - 1)
    return indices.gather(1, choice[:, None])[:, 0]


def _sampled(logits: torch.Tensor, step: int, uniforms: torch.Tensor, top_k: int) -> torch.Tensor:
    """Step ``step``'s top-k sample of each row, from its own stream of uniforms."""
    return pick_top_k(logits.float(), uniforms[:, step], top_k)


@torch.no_grad()
def sample_token_ids(model, tokenizer, prompts, seeds, max_length=100, top_k=5, batch_size=16) -> list[list[int]]:
    """encode(prompt) + sampled ids, each max(max_length, len(prompt ids)) long; one generator per seed."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    device = next(model.parameters()).device
    items = [encode(tokenizer, p) for p in prompts]
    if any(not ids for ids in items):
        raise ValueError("a prompt has no tokens: nothing to continue")
    result: list[list[int]] = [list(ids) for ids in items]
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    progress = Progress(len(order), "generation (top-k sampling)", "prompts")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        steps = max(max_length - len(items[i]) for i in chunk)
        if steps <= 0:
            progress.update(len(chunk))
            continue
        uniforms = torch.stack(
            [
                torch.rand(max(max_length, 1), generator=torch.Generator().manual_seed(seeds[i]), dtype=torch.float64)
                for i in chunk
            ]
        )  # fixed length: same stream
        ids, mask = left_padded([items[i] for i in chunk], pad_id(tokenizer), device)
        limit = max(max_length, ids.shape[1]) - 1  # rows that are already long enough may run past; clamp them
        new_tokens = decode(model, ids, mask, steps, partial(_sampled, uniforms=uniforms, top_k=top_k), limit)
        generated = new_tokens.cpu().tolist()
        for row, i in enumerate(chunk):
            result[i] += generated[row][: max(0, max_length - len(items[i]))]
        progress.update(len(chunk))
    progress.close()
    return result


def _texts(tokenizer, sequences: list[list[int]]) -> list[str]:
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in sequences]


def sample_generations(model, tokenizer, prompts, max_length=100, top_k=5, seed=0, batch_size=16) -> list[str]:
    """Prompt + top-k sampled continuation (temperature 1) of each prompt, max_length tokens in all
    (prompt tokens, BOS included, count), decoded without special tokens. The generator of prompt i is
    seeded from (seed, i), so the result does not depend on batch_size."""
    seeds = [prompt_seed(seed, i) for i in range(len(prompts))]
    return _texts(tokenizer, sample_token_ids(model, tokenizer, prompts, seeds, max_length, top_k, batch_size))


def generation_entropy_of_records(model, tokenizer, records, max_length=100, top_k=5, seed=0,
                                  batch_size=16) -> pd.DataFrame:  # fmt: skip
    """One row per record: case_id, ge = generation_entropy of the texts sampled for its generation_prompts
    (NaN without prompts). Prompt j of a record is seeded from (seed, "case_id:j"); all prompts of all
    records are sampled in shared batches."""
    prompts, seeds, owners = [], [], []
    for index, record in enumerate(records):
        for j, prompt in enumerate(record.generation_prompts):
            prompts.append(prompt)
            seeds.append(prompt_seed(seed, f"{record.case_id}:{j}"))
            owners.append(index)
    texts = _texts(tokenizer, sample_token_ids(model, tokenizer, prompts, seeds, max_length, top_k, batch_size))
    per_record: list[list[str]] = [[] for _ in records]
    for owner, text in zip(owners, texts):
        per_record[owner].append(text)
    rows = [{"case_id": r.case_id, "ge": generation_entropy(t)} for r, t in zip(records, per_record)]
    return pd.DataFrame(rows, columns=["case_id", "ge"])
