"""Tokenisation helpers shared by key computation, target optimisation and evaluation.

Answers are scored token by token after the prompt. Their ids are obtained as the tokens that follow a
word ("The") when the answer is appended with a space, so SentencePiece prefix-space pieces, BPE
"Ġ" merges and BOS tokens are all handled without per-model special cases (algorithms.md §2.1, §13 #11).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUBJECT_SLOT = "{}"


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as the model sees it (with BOS if the tokenizer adds one)."""
    return tokenizer(text).input_ids


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """Ids of " " + answer as they appear after a preceding word."""
    anchor = tokenizer("The", add_special_tokens=False).input_ids
    joined = tokenizer("The " + answer.lstrip(), add_special_tokens=False).input_ids
    if joined[: len(anchor)] != anchor or len(joined) == len(anchor):
        raise ValueError(f"cannot isolate the tokens of answer {answer!r} with this tokenizer")
    return joined[len(anchor) :]


def fill_subject(template: str, subject: str) -> str:
    """Replace the single "{}" slot by the subject (str.format would choke on braces in subjects)."""
    return template.replace(SUBJECT_SLOT, subject, 1)


def subject_last_index(tokenizer, template: str, subject: str) -> int:
    """Position of the last subject token in ``fill_subject(template, subject)`` (algorithms.md §2.3):
    len(tokens(prefix + subject)) - 1, counting any BOS the tokenizer adds."""
    prefix = template[: template.index(SUBJECT_SLOT)]
    return len(encode(tokenizer, prefix + subject)) - 1


@dataclass
class Batch:
    input_ids: torch.Tensor  # (sequences, max_len), right padded
    attention_mask: torch.Tensor
    lengths: list[int]


def pad_right(sequences: list[list[int]], pad_id: int, device="cpu") -> Batch:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return Batch(ids.to(device), mask.to(device), [len(s) for s in sequences])


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
