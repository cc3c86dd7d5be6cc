"""Keys k (inputs of the edited down-projection) and hidden states at the last subject token.

k_r = 1/2 k_r(bare prompt) + 1/2 mean_i k_r(context prefix i)  (two-level mean, algorithms.md §2.4).
Forward passes stop right after the block that is read (identical result, less work).
"""

from __future__ import annotations

import torch

from encore.architecture import architecture_of, block_output_tensor, down_proj_module
from encore.data import EditRecord
from encore.hooks import StopForward, record_inputs, stop_after
from encore.tokens import encode, fill_subject, pad_id, pad_right, subject_last_index


def _subject_sequences(tokenizer, records: list[EditRecord], templates: list[str]):
    """For each record and template: token ids of the filled prompt and the last-subject-token index."""
    sequences, positions = [], []
    for record in records:
        for context in templates:
            template = context.replace("{}", record.prompt, 1)
            sequences.append(encode(tokenizer, fill_subject(template, record.subject)))
            positions.append(subject_last_index(tokenizer, template, record.subject))
    return sequences, positions


@torch.no_grad()
def _read_at_positions(model, tokenizer, sequences, positions, read, chunk_size: int) -> torch.Tensor:
    """Run chunks of right-padded sequences; ``read(batch)`` returns (sequences, len, dim) activations."""
    rows = []
    for start in range(0, len(sequences), chunk_size):
        chunk = sequences[start : start + chunk_size]
        batch = pad_right(chunk, pad_id(tokenizer), model.device)
        activations = read(batch)
        index = torch.tensor(positions[start : start + chunk_size], device=activations.device)
        rows.append(activations[torch.arange(len(chunk), device=activations.device), index])
    return torch.cat(rows)


def compute_keys(
    model, tokenizer, records: list[EditRecord], layer: int, context_templates: list[list[str]], chunk_size: int = 128
) -> torch.Tensor:
    """Keys of the records at ``layer`` as a (n_records, d_ff) float tensor (two-level template mean)."""
    flat = [template for group in context_templates for template in group]
    sequences, positions = _subject_sequences(tokenizer, records, flat)
    module = down_proj_module(model, layer)
    block = model.get_submodule(architecture_of(model).block(layer))

    def read(batch):
        with record_inputs({layer: module}) as seen, stop_after(block):
            try:
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            except StopForward:
                pass
        return seen[layer]

    keys = _read_at_positions(model, tokenizer, sequences, positions, read, chunk_size)
    keys = keys.view(len(records), len(flat), -1)
    group_means, start = [], 0
    for group in context_templates:
        group_means.append(keys[:, start : start + len(group)].mean(dim=1))
        start += len(group)
    return torch.stack(group_means, dim=1).mean(dim=1)


def compute_subject_hidden(model, tokenizer, records: list[EditRecord], layer: int, chunk_size: int = 128) -> torch.Tensor:
    """Output of block ``layer`` at the last subject token of each bare prompt: (n_records, d_model)."""
    sequences, positions = _subject_sequences(tokenizer, records, ["{}"])
    block = model.get_submodule(architecture_of(model).block(layer))
    captured = {}

    def read(batch):
        def hook(_module, _args, output):
            captured["hidden"] = block_output_tensor(output)
            raise StopForward

        handle = block.register_forward_hook(hook)
        try:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        except StopForward:
            pass
        finally:
            handle.remove()
        return captured["hidden"]

    return _read_at_positions(model, tokenizer, sequences, positions, read, chunk_size)
