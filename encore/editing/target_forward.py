"""Forward passes of target optimisation: whole sequences, or only the part that delta changes.

delta is added to the output of block l* at the last subject token p of a sequence. Attention is
causal, so every activation at positions < p, in every block, is the same at every iteration; only
positions p .. end-1 (the suffix; end = one past the last scored position) change. Two strategies
return the final hidden states at the scored positions:

* ``FullSequences`` (the reference path): blocks 0..l* run once, on the first iteration, and are
  replayed afterwards; the blocks above l* run over whole sequences at every iteration.
* ``PrefixReuse``: the first iteration runs whole sequences without gradients and records the
  block-l* outputs and, for every block above l*, the keys and values of the positions before p.
  Every iteration (the first included) then runs the blocks above l* on the suffix only, attending
  to the recorded prefix. Position ids and the 4-D attention mask are built
  here from true positions, so rows of different prefix lengths share a batch (masked holes) and
  sliding windows count real tokens, not cache slots. Positions after the last scored one are never
  computed (the KL prompt needs only its subject position).

Both give the same hidden states up to floating-point rounding (tests/editing/test_target_forward.py, float64).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from encore.models.architecture import architecture_of, num_layers
from encore.models.hooks import edit_output, replay_blocks
from encore.models.prefix_attention import KeyValueRecorder, PrefixKeyValues, attention_mask, grouped_query_sdpa
from encore.models.tokens import pad_right


@dataclass(eq=False)
class TargetSequence:
    """One sequence of one request: a rewriting prompt (+ target tokens but the last) or the KL prompt."""

    request: int
    ids: list[int]
    lookup: int  # last subject token: delta is added here
    prompt_index: int  # 0 = bare rewriting prompt, 1.. = context-prefixed, -1 = KL prompt "{} is a"
    scored: list[int]  # positions whose next-token distribution enters the loss
    labels: list[int]  # target token predicted at each scored position (-1 for the KL prompt)

    @property
    def end(self) -> int:
        return self.scored[-1] + 1


def _pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack (length_i, ...) tensors into (rows, width, ...), zero-padded at the end of dim 1."""
    padded = rows[0].new_zeros(len(rows), width, *rows[0].shape[1:])
    for i, row in enumerate(rows):
        padded[i, : row.shape[0]] = row
    return padded


def _scored_positions(micro: list[TargetSequence], offsets: list[int]):
    rows = [row for row, s in enumerate(micro) for _ in s.scored]
    cols = [position - offset for s, offset in zip(micro, offsets) for position in s.scored]
    return rows, cols


def _microbatches(sequences: list[TargetSequence], length, budget: int) -> list[list[TargetSequence]]:
    """Length-sorted groups whose padded size (rows x longest ``length``) stays within ``budget`` tokens."""
    ordered = sorted(sequences, key=length)
    batches, current = [], []
    for sequence in ordered:
        if current and length(sequence)[0] * (len(current) + 1) > budget:
            batches.append(current)
            current = []
        current.append(sequence)
    return batches + ([current] if current else [])


class FullSequences:
    """Blocks 0..l* once (then replayed), blocks above l* over whole sequences at every iteration."""

    def __init__(self, model, layer: int, padding: int, budget: int):
        self.model, self.layer, self.padding, self.budget = model, layer, padding, budget
        self.block = model.get_submodule(architecture_of(model).block(layer))
        self.lower_output: dict[TargetSequence, torch.Tensor] = {}  # block-l* output without delta

    def microbatches(self, sequences, first: bool):
        return _microbatches(sequences, lambda s: (len(s.ids),), self.budget)

    def forward(self, micro: list[TargetSequence], first: bool, row_delta: torch.Tensor):
        """(hidden states at the scored positions (n_scored, d), block-l* output at the lookups on the first call)."""
        device = row_delta.device
        batch = pad_right([s.ids for s in micro], self.padding, device)
        rows = torch.arange(len(micro), device=device)
        lookup = torch.tensor([s.lookup for s in micro], device=device)
        recorded = {}

        def add_delta(hidden):
            if first:
                recorded["h"] = hidden.detach()
            hidden = hidden.clone()
            hidden[rows, lookup] = hidden[rows, lookup] + row_delta
            return hidden

        cached = None if first else _pad_rows([self.lower_output[s] for s in micro], batch.input_ids.shape[1])
        with _delta_entry(self.model, self.block, self.layer, cached) as target, edit_output(target, add_delta):
            hidden = self.model.base_model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).last_hidden_state
        if first:
            for row, s in enumerate(micro):
                self.lower_output[s] = recorded["h"][row, : len(s.ids)].clone()
        score_rows, score_cols = _scored_positions(micro, [0] * len(micro))
        return hidden[score_rows, score_cols], (recorded["h"][rows, lookup] if first else None)


@contextmanager
def _delta_entry(model, block, layer: int, cached: torch.Tensor | None):
    """The module whose output receives delta: block l* itself, or the replay of its cached output."""
    if cached is None:
        yield block
        return
    with replay_blocks(model, layer, cached) as replay:
        yield replay


class PrefixReuse:
    """Whole sequences on the first iteration (recording prefix keys/values above l*), suffixes afterwards."""

    def __init__(self, model, layer: int, padding: int, budget: int):
        self.model, self.layer, self.padding, self.budget = model, layer, padding, budget
        self.block = model.get_submodule(architecture_of(model).block(layer))
        self.upper = list(range(layer + 1, num_layers(model)))
        self.lower_output: dict[TargetSequence, torch.Tensor] = {}  # block-l* output at lookup..end-1, no delta
        self.prefix: dict[TargetSequence, tuple[torch.Tensor, torch.Tensor]] = {}  # (upper, heads, lookup, dim) x 2
        self._assembled: dict[tuple, PrefixKeyValues] = {}  # micro-batch -> its padded prefix, reused across iterations
        self._used: dict[tuple, PrefixKeyValues] = {}

    def microbatches(self, sequences, first: bool):
        """Grouped by suffix (then prefix) length; the previous iteration's padded prefixes stay cached."""
        self._assembled, self._used = self._used, {}
        return _microbatches(sequences, lambda s: (s.end - s.lookup, s.lookup), self.budget)

    def forward(self, micro: list[TargetSequence], first: bool, row_delta: torch.Tensor):
        """First call: record the micro-batch without gradients, then (every call) run its suffixes."""
        h_lookup = self._record(micro, row_delta.device) if first else None
        return self._suffix(micro, row_delta), h_lookup

    @torch.no_grad()
    def _record(self, micro, device) -> torch.Tensor:
        """Whole sequences up to their last scored position: block-l* outputs and prefix keys/values above l*."""
        ends = [s.end for s in micro]
        width = max(ends)
        batch = pad_right([s.ids[: s.end] for s in micro], self.padding, device)
        positions = torch.arange(width, device=device).expand(len(micro), -1)
        mask = attention_mask(self.model, [0] * len(micro), ends, 0, width)
        recorder, recorded = KeyValueRecorder(self.upper), {}

        def record(hidden):
            recorded["h"] = hidden
            return hidden

        with edit_output(self.block, record):
            self.model.base_model(
                input_ids=batch.input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=recorder,
                use_cache=False,
            )
        for row, s in enumerate(micro):
            self.lower_output[s] = recorded["h"][row, s.lookup : s.end].clone()
            if self.upper:  # nothing to record when l* is the last block
                self.prefix[s] = tuple(
                    torch.stack([store[layer][row, :, : s.lookup] for layer in self.upper])
                    for store in (recorder.keys, recorder.values)
                )
        rows = torch.arange(len(micro), device=device)
        return recorded["h"][rows, torch.tensor([s.lookup for s in micro], device=device)]

    def _prefix_cache(self, micro, prefix_width: int) -> PrefixKeyValues:
        """The micro-batch's prefix keys/values per upper layer, (rows, heads, P, dim), zero-padded (masked);
        reused while the same sequences form a micro-batch."""
        key = tuple(id(s) for s in micro)
        if key not in self._assembled:
            keys, values = {}, {}
            if self.upper:
                stacked = [_pad_rows([self.prefix[s][i].transpose(0, 2) for s in micro], prefix_width) for i in (0, 1)]
                for index, layer in enumerate(self.upper):  # (rows, P, heads, upper, dim) -> (rows, heads, P, dim)
                    keys[layer] = stacked[0][:, :, :, index].transpose(1, 2).contiguous()
                    values[layer] = stacked[1][:, :, :, index].transpose(1, 2).contiguous()
            self._assembled[key] = PrefixKeyValues(keys, values)
        self._used[key] = self._assembled[key]
        return self._assembled[key]

    def _suffix(self, micro, row_delta):
        device = row_delta.device
        prefix_lengths = [s.lookup for s in micro]
        suffix_lengths = [s.end - s.lookup for s in micro]
        prefix_width, suffix_width = max(prefix_lengths), max(suffix_lengths)
        batch = pad_right([s.ids[s.lookup : s.end] for s in micro], self.padding, device)
        positions = torch.tensor(prefix_lengths, device=device)[:, None] + torch.arange(suffix_width, device=device)
        mask = attention_mask(self.model, prefix_lengths, suffix_lengths, prefix_width, suffix_width)
        cache = self._prefix_cache(micro, prefix_width)
        lower = _pad_rows([self.lower_output[s] for s in micro], suffix_width)

        def add_delta(hidden):
            hidden = hidden.clone()
            hidden[:, 0] = hidden[:, 0] + row_delta
            return hidden

        with (
            replay_blocks(self.model, self.layer, lower) as replay,
            edit_output(replay, add_delta),
            grouped_query_sdpa(device),
        ):
            hidden = self.model.base_model(
                input_ids=batch.input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=False,
            ).last_hidden_state
        score_rows, score_cols = _scored_positions(micro, prefix_lengths)
        return hidden[score_rows, score_cols]
