"""Batched sequential editing: one batch = target optimisation + residual spreading over the edited layers.

For the batch's requests (algorithms.md §2.6): z = targets at l* = max(layers); then for each edited
layer l (ascending) with i = its rank (keys and cur_z under the current weights; the blocks below the
lowest edited layer never change and run once per batch, encore.editing.keys.BatchKeys):
    K   = keys at l under the current weights,  cur_z = block-l* output at the last subject token,
    R_l = (Z - cur_z) / (|layers| - i),          W_l <- W_l + Delta_l(K, R_l),   S_P,l += K K^T.
Weights are never restored between batches; the state a later batch depends on is ``EditorState``.
An editor that restrains its updates (MEMIT+RECT, MEMIT+PRUNE) gets every Delta_l as above (later layers see the
unrestrained writes of earlier ones) and its restrained updates replace them after the last layer, the order of
the reference code (docs/algorithms-extensions.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from encore.data.datasets import EditRecord
from encore.editing.editors import Editor, LayerState
from encore.editing.hparams import Hyperparameters
from encore.editing.keys import BatchKeys
from encore.editing.targets import TargetResult, optimise_targets
from encore.models.architecture import read_weight, write_weight


@dataclass
class EditorState:
    """Everything the next batch depends on besides the weights.

    S_P lives (float64) on the device of the solves; a snapshot does not store it but the keys of its own
    batches (``segment_keys``), from which S_P is rebuilt exactly (encore.editing.snapshots). ``original_weights``
    (the unedited W_l, model dtype, CPU) only for editors that need them (PRUNE): taken before the first batch,
    stored once, in the first snapshot of the chain."""

    context_templates: list[list[str]]
    previous_key_moment: dict[int, torch.Tensor]  # S_P per layer, float64
    edits_done: int = 0  # position in the edit order
    batches_done: int = 0
    torch_rng_state: torch.Tensor = field(default_factory=torch.get_rng_state)
    segment_keys: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # per layer: (n, d_ff) per batch, CPU
    original_weights: dict[int, torch.Tensor] | None = None  # per layer: unedited W_l (d_model x d_ff), CPU

    @classmethod
    def initial(cls, context_templates, layers, d_ff: int, device="cpu") -> EditorState:
        zeros = {layer: torch.zeros(d_ff, d_ff, dtype=torch.float64, device=device) for layer in layers}
        return cls(context_templates=context_templates, previous_key_moment=zeros)


def edit_batch(
    model,
    tokenizer,
    records: list[EditRecord],
    hparams: Hyperparameters,
    editor: Editor,
    state: EditorState,
    covariances: dict[int, torch.Tensor],
    projectors: dict[int, torch.Tensor] | None = None,
    targets: TargetResult | None = None,
) -> dict:
    """Apply one batch of edits in place; return its targets (per-edit optimisation stats), phase timings and the
    edited layers' norms after the update (``ledger_rows`` turns them into the ledger).

    ``targets`` may be passed precomputed (benchmarks); by default they are optimised here."""
    layers = sorted(hparams.layers)
    torch.set_rng_state(state.torch_rng_state)
    timings = {"targets_s": 0.0, "keys_s": 0.0, "solve_s": 0.0}

    started = time.perf_counter()
    if targets is None:
        targets = optimise_targets(model, tokenizer, records, hparams.target_settings(), state.context_templates)
    timings["targets_s"] = time.perf_counter() - started

    if editor.needs_original_weights and state.original_weights is None:
        if state.batches_done:
            raise ValueError(
                f"editor {editor.name}: the state has no original weights after {state.batches_done} batches; "
                "resume from a snapshot chain written by this editor, or start from the unedited model"
            )
        state.original_weights = {layer: read_weight(model, layer).detach().cpu().clone() for layer in layers}
    restrained = {}  # layer -> weight to write once every layer is solved (restraining editors only)

    z_layer = layers[-1]
    started = time.perf_counter()
    batch_keys = BatchKeys(model, tokenizer, records, state.context_templates, first_layer=layers[0])
    timings["keys_s"] += time.perf_counter() - started
    for rank, layer in enumerate(layers):
        started = time.perf_counter()
        raw_keys = batch_keys.keys(layer)
        current = batch_keys.subject_hidden(z_layer)
        state.segment_keys.setdefault(layer, []).append(raw_keys.detach().cpu())
        timings["keys_s"] += time.perf_counter() - started

        started = time.perf_counter()
        device = state.previous_key_moment[layer].device  # the solves run where S_P lives, in float64
        keys = raw_keys.to(device).double()
        residuals = (targets.z.to(device).double() - current.to(device).double()) / (len(layers) - rank)
        layer_state = LayerState(
            covariance=covariances[layer].to(device),  # float32 C0: the editor builds its float64 system from it
            previous_key_moment=state.previous_key_moment[layer],
            projector=None if projectors is None else projectors[layer].to(device=device, dtype=torch.float64),
        )
        delta = editor.solve(layer_state, keys.T, residuals.T)
        weight = read_weight(model, layer)
        if editor.restrains:
            original = state.original_weights[layer] if editor.needs_original_weights else None
            kept = editor.restrain(delta, weight, original)
            restrained[layer] = weight + kept.to(device=weight.device, dtype=weight.dtype)
        write_weight(model, layer, weight + delta.to(device=weight.device, dtype=weight.dtype))
        editor.update_state(layer_state, keys.T)
        timings["solve_s"] += time.perf_counter() - started
    for layer, new_weight in restrained.items():
        write_weight(model, layer, new_weight)

    state.edits_done += len(records)
    state.batches_done += 1
    state.torch_rng_state = torch.get_rng_state()
    norms = {layer: float(read_weight(model, layer).detach().double().norm()) for layer in layers}
    return {"targets": targets, "timings": timings, "norms": norms}


def ledger_rows(records: list[EditRecord], batch_result: dict, batch_index: int, first_position: int) -> list[dict]:
    """One row per edit: z-optimisation statistics plus the batch's phase timings."""
    targets, rows = batch_result["targets"], []
    for i, record in enumerate(records):
        rows.append(
            {
                "case_id": record.case_id,
                "batch": batch_index,
                "position": first_position + i,
                "iterations": targets.iterations[i],
                "stop_reason": targets.stop_reason[i],
                "target_probability": targets.target_probability[i],
                "final_loss": targets.loss[i],
                "delta_norm": float(targets.delta[i].norm()),
                "z_norm": float(targets.z[i].norm()),
                "h_norm": float(targets.h_init[i].norm()),
                **batch_result["timings"],
            }
        )
    return rows
