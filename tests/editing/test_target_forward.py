"""Prefix reuse in target optimisation equals the whole-sequence path: targets, MPES stops and Delta (float64)."""

import dataclasses

import pytest
import torch
from conftest import TARGET_RECORDS as RECORDS
from conftest import TEMPLATES, make_tiny_gemma3, make_tiny_gpt2, make_tiny_llama, wikitext_lines

from encore.editing.covariance import second_moments
from encore.editing.editors import make_editor
from encore.editing.hparams import Hyperparameters
from encore.editing.sequential import EditorState, edit_batch
from encore.editing.targets import TargetSettings, optimise_targets
from encore.models.architecture import read_weight
from encore.models.prefix_attention import _allowed

MODELS = {
    "llama": lambda vocab: make_tiny_llama(vocab),
    "gpt2": lambda vocab: make_tiny_gpt2(vocab),
    "gemma3-window4": lambda vocab: make_tiny_gemma3(vocab, window=4),  # windows shorter than the prefixes
    "gemma3-window512": lambda vocab: make_tiny_gemma3(vocab, window=512),
}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.mark.parametrize("architecture", sorted(MODELS))
@pytest.mark.parametrize("mpes", [None, 0, 2])
def test_prefix_reuse_gives_the_whole_sequence_targets_and_stops(architecture, mpes, bos_tokenizer):
    model = MODELS[architecture](len(bos_tokenizer)).double()
    settings = TargetSettings(
        layer=1,
        steps=12,
        lr=1.0,
        mpes=mpes,
        kl_factor=0.1,
        weight_decay=0.5,
        clamp_norm_factor=4.0,
        tokens_per_microbatch=48,
    )  # several micro-batches, regrouped as requests finish
    reused = optimise_targets(model, bos_tokenizer, RECORDS, settings, TEMPLATES)
    whole = optimise_targets(
        model, bos_tokenizer, RECORDS, dataclasses.replace(settings, prefix_reuse=False), TEMPLATES
    )
    assert relative(reused.z, whole.z) <= 1e-5
    assert relative(reused.h_init, whole.h_init) <= 1e-12
    assert reused.iterations == whole.iterations and reused.stop_reason == whole.stop_reason
    if mpes is not None:
        assert "mpes" in reused.stop_reason, "the constructed records must reach the MPES criterion"
    assert [t["num_correct"] for t in reused.trace] == [t["num_correct"] for t in whole.trace]


def test_prefix_reuse_with_the_last_block_as_target_layer(bos_tokenizer):
    """l* = the last block: nothing above it, the suffix runs through the head only."""
    model = make_tiny_llama(len(bos_tokenizer)).double()
    settings = TargetSettings(layer=3, steps=6, lr=1.0, mpes=0)
    reused = optimise_targets(model, bos_tokenizer, RECORDS, settings, TEMPLATES)
    whole = optimise_targets(
        model, bos_tokenizer, RECORDS, dataclasses.replace(settings, prefix_reuse=False), TEMPLATES
    )
    assert relative(reused.z, whole.z) <= 1e-5 and reused.iterations == whole.iterations


def test_eager_attention_masks_give_the_same_targets(bos_tokenizer):
    """Additive (eager) masks instead of boolean (sdpa) ones; eager softmax runs in float32, hence 1e-5."""
    model = make_tiny_llama(len(bos_tokenizer)).double()
    model.config._attn_implementation = "eager"
    settings = TargetSettings(layer=1, steps=8, lr=1.0, mpes=0)
    reused = optimise_targets(model, bos_tokenizer, RECORDS, settings, TEMPLATES)
    whole = optimise_targets(
        model, bos_tokenizer, RECORDS, dataclasses.replace(settings, prefix_reuse=False), TEMPLATES
    )
    assert relative(reused.z, whole.z) <= 1e-5 and reused.iterations == whole.iterations


def test_mask_lets_each_query_see_its_prefix_and_earlier_suffix_within_the_window():
    allowed = _allowed([2, 0], [3, 1], prefix_width=2, suffix_width=3, window=3, device="cpu")[:, 0]
    # row 0: prefix positions 0, 1; suffix tokens at true positions 2, 3, 4; window 3 (q - k < 3)
    expected_row0 = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    # row 1: no prefix, one suffix token; padding queries see the real token and themselves (no empty row)
    expected_row1 = torch.tensor([[0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(allowed[0], expected_row0) and torch.equal(allowed[1], expected_row1)


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "gemma3-window4"])
@pytest.mark.parametrize("editor", ["memit", "alphaedit"])
def test_prefix_reuse_gives_the_same_weight_update(architecture, editor, bos_tokenizer):
    """A whole batch (targets, keys, residual spreading, solves) with and without prefix reuse: same Delta."""
    from encore.editing.editors import null_space_projector

    layers = [1, 2]
    documents = wikitext_lines(200)[:30]
    hparams = Hyperparameters(
        editor=editor,
        layers=layers,
        v_num_grad_steps=10,
        v_lr=1.0,
        mom2_update_weight=10.0,
        mom2_n_samples=30,
        clamp_norm_factor=4.0,
        mpes=1,
    )
    updates = {}
    for prefix_reuse in (True, False):
        model = MODELS[architecture](len(bos_tokenizer)).double()
        covariances, _ = second_moments(model, bos_tokenizer, documents, layers, max_length=64)
        covariances = {layer: c.double() for layer, c in covariances.items()}
        # a projector onto the lower half of C0's spectrum (the default tau would keep nothing of these random keys)
        projectors = {
            layer: null_space_projector(c, float(torch.linalg.eigvalsh(c).median())) for layer, c in covariances.items()
        }
        before = {layer: read_weight(model, layer).clone() for layer in layers}
        state = EditorState.initial(TEMPLATES, layers, before[1].shape[1])
        chosen = hparams.with_overrides(prefix_reuse=prefix_reuse)
        edit_batch(model, bos_tokenizer, RECORDS, chosen, make_editor(chosen), state, covariances, projectors)
        updates[prefix_reuse] = {layer: read_weight(model, layer) - before[layer] for layer in layers}
    for layer in layers:
        change = updates[False][layer]
        assert float(change.norm()) > 0
        assert float((updates[True][layer] - change).norm() / change.norm()) <= 1e-5
