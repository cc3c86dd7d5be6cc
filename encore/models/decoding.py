"""Batched decoding with the model's own key/value cache, shared by greedy exact match
(encore.evaluation.generation_efficacy) and the fluency samples (encore.evaluation.fluency).

Prompts of different lengths run together left-padded, so every row's next token is predicted at the last column;
the position of a token counts the real tokens before it (padding takes no position). Each step feeds the chosen
tokens back with the cache: one new token per row per forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def left_padded(items: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token lists ``items``, left-padded with ``pad`` to the longest, on ``device``."""
    width = max(len(ids) for ids in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, tokens in enumerate(items):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        mask[row, width - len(tokens) :] = 1
    return ids.to(device), mask.to(device)


def decode(
    model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    next_token: Callable[[torch.Tensor, int], torch.Tensor],
    max_position: int | None = None,
) -> torch.Tensor:
    """``steps`` new token ids per row (rows x steps) after the left-padded ``ids``: at step s the next ids are
    ``next_token(logits of the last position, s)``. Positions stop growing at ``max_position`` (None: no limit)."""

    def clamped(positions: torch.Tensor) -> torch.Tensor:
        return positions if max_position is None else positions.clamp(max=max_position)

    positions = clamped((mask.cumsum(dim=1) - 1).clamp(min=0))
    past, new_tokens = None, []
    for step in range(steps):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                    use_cache=True, logits_to_keep=1)  # fmt: skip
        past = out.past_key_values
        ids = next_token(out.logits[:, -1], step)[:, None]
        new_tokens.append(ids)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        positions = clamped(positions[:, -1:] + 1)
    return torch.cat(new_tokens, dim=1)
