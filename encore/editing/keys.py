"""Keys k (inputs of the edited down-projection) and hidden states at the last subject token.

k_r = 1/2 k_r(bare prompt) + 1/2 mean_i k_r(context prefix i)  (two-level mean, algorithms.md §2.4).
Forward passes stop right after the block that is read, and ``BatchKeys`` runs the blocks below the
lowest edited layer once per batch: they are never edited, so their output (the input of the lowest
edited block) is the same before and after every layer update of the batch and is replayed.
"""

from __future__ import annotations

import torch

from encore.data.datasets import EditRecord
from encore.models.architecture import architecture_of, down_proj_module
from encore.models.hooks import record_inputs, record_outputs, replay_blocks, run_until
from encore.models.precision import matmul_precision
from encore.models.tokens import encode, fill_subject, pad_id, pad_right, subject_last_index


def _subject_sequences(tokenizer, records: list[EditRecord], templates: list[str]):
    """For each record and template: token ids of the filled prompt and the last-subject-token index."""
    sequences, positions = [], []
    for record in records:
        for context in templates:
            template = context.replace("{}", record.prompt, 1)
            sequences.append(encode(tokenizer, fill_subject(template, record.subject)))
            positions.append(subject_last_index(tokenizer, template, record.subject))
    return sequences, positions


class _Chunks:
    """Right-padded chunks of sequences; optionally the input of block ``first`` per chunk, computed once."""

    def __init__(self, model, tokenizer, sequences, positions, first: int, chunk_size: int):
        self.model, self.first = model, first
        self.chunks = [
            pad_right(sequences[start : start + chunk_size], pad_id(tokenizer), model.device)
            for start in range(0, len(sequences), chunk_size)
        ]
        self.positions = [
            torch.tensor(positions[start : start + chunk_size], device=model.device)
            for start in range(0, len(sequences), chunk_size)
        ]
        self.inputs = [self._block_input(batch) for batch in self.chunks] if first > 0 else None

    @torch.no_grad()
    def _block_input(self, batch) -> torch.Tensor:
        block = self.model.get_submodule(architecture_of(self.model).block(self.first))
        with record_inputs({self.first: block}) as seen, matmul_precision(self.model):
            run_until(self.model, block, before=True, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        return seen[self.first]

    @torch.no_grad()
    def read(self, read) -> torch.Tensor:
        """Concatenated rows of ``read(batch)`` (sequences, len, dim) at each sequence's position."""
        rows = []
        for index, batch in enumerate(self.chunks):
            if self.inputs is None:
                with matmul_precision(self.model):
                    activations = read(batch)
            else:
                with replay_blocks(self.model, self.first - 1, self.inputs[index]), matmul_precision(self.model):
                    activations = read(batch)
            position = self.positions[index].to(activations.device)
            rows.append(activations[torch.arange(len(position), device=activations.device), position])
        return torch.cat(rows)


class BatchKeys:
    """Keys and subject hidden states of one batch under the model's *current* weights.

    Blocks below ``first_layer`` (the lowest edited layer) run once, here; each call runs only the blocks
    from ``first_layer`` up to the one it reads. Exact as long as no block below ``first_layer`` changes."""

    def __init__(
        self,
        model,
        tokenizer,
        records: list[EditRecord],
        context_templates: list[list[str]],
        first_layer: int = 0,
        chunk_size: int = 128,
    ):
        self.model, self.groups = model, [len(group) for group in context_templates]
        flat = [template for group in context_templates for template in group]
        self.n = len(records)
        self.prompts = _Chunks(model, tokenizer, *_subject_sequences(tokenizer, records, flat), first_layer, chunk_size)
        self.bare = _Chunks(model, tokenizer, *_subject_sequences(tokenizer, records, ["{}"]), first_layer, chunk_size)
        self.first_layer = first_layer

    def _check(self, layer: int) -> None:
        if layer < self.first_layer:
            raise ValueError(f"layer {layer} is below the replayed blocks (first layer {self.first_layer})")

    def keys(self, layer: int) -> torch.Tensor:
        """(n_records, d_ff): inputs of the down-projection of ``layer``, two-level template mean."""
        self._check(layer)
        module = down_proj_module(self.model, layer)
        block = self.model.get_submodule(architecture_of(self.model).block(layer))

        def read(batch):
            with record_inputs({layer: module}) as seen:
                run_until(self.model, block, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            return seen[layer]

        keys = self.prompts.read(read).view(self.n, sum(self.groups), -1)
        group_means, start = [], 0
        for size in self.groups:
            group_means.append(keys[:, start : start + size].mean(dim=1))
            start += size
        return torch.stack(group_means, dim=1).mean(dim=1)

    def subject_hidden(self, layer: int) -> torch.Tensor:
        """(n_records, d_model): output of block ``layer`` at the last subject token of each bare prompt."""
        self._check(layer)
        block = self.model.get_submodule(architecture_of(self.model).block(layer))

        def read(batch):
            with record_outputs({layer: block}) as seen:
                run_until(self.model, block, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            return seen[layer]

        return self.bare.read(read)


def compute_keys(
    model, tokenizer, records: list[EditRecord], layer: int, context_templates: list[list[str]], chunk_size: int = 128
) -> torch.Tensor:
    """Keys of the records at ``layer`` as a (n_records, d_ff) float tensor (two-level template mean)."""
    return BatchKeys(model, tokenizer, records, context_templates, 0, chunk_size).keys(layer)


def compute_subject_hidden(
    model, tokenizer, records: list[EditRecord], layer: int, chunk_size: int = 128
) -> torch.Tensor:
    """Output of block ``layer`` at the last subject token of each bare prompt: (n_records, d_model)."""
    return BatchKeys(model, tokenizer, records, [["{}"]], 0, chunk_size).subject_hidden(layer)
