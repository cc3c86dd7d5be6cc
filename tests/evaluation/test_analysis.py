"""Norm analyses: down-projection norms of every layer and the activation norm share of each sub-layer."""

from __future__ import annotations

import pytest
import torch

from encore.evaluation.analysis import COMPONENTS, activation_norm_shares, analysis_rows, down_proj_norms
from encore.models.architecture import architecture_of, block_output_tensor, read_weight, write_weight
from encore.models.tokens import encode

PROMPTS = ["The capital of France is", "Apple was founded by Steve Jobs in", "Tokyo"]


def test_down_proj_norms_track_a_rescaled_layer(tiny_model):
    before = down_proj_norms(tiny_model)
    assert before[1] == pytest.approx(float(torch.linalg.matrix_norm(read_weight(tiny_model, 1).double())))
    write_weight(tiny_model, 2, 3.0 * read_weight(tiny_model, 2))
    after = down_proj_norms(tiny_model)
    assert after[2] == pytest.approx(3.0 * before[2], rel=1e-6)
    assert all(after[layer] == before[layer] for layer in before if layer != 2)


def _shares_from_sublayer_outputs(model, tokenizer, prompt):
    """Independent path: h from the block input, a and m from the attention and MLP modules' own outputs
    (for Llama and GPT-2 these are exactly what is added to the residual stream)."""
    arch = architecture_of(model)
    blocks = model.get_submodule(arch.blocks)
    got, handles = {}, []
    for layer, block in enumerate(blocks):
        handles += [
            block.register_forward_pre_hook(
                lambda m, a, k, layer=layer: got.__setitem__((layer, 0), k.get("hidden_states", a[0] if a else None)),
                with_kwargs=True,
            ),
            model.get_submodule(arch.attention.format(layer)).register_forward_hook(
                lambda m, a, out, layer=layer: got.__setitem__((layer, 1), block_output_tensor(out))
            ),
            model.get_submodule(arch.mlp.format(layer)).register_forward_hook(
                lambda m, a, out, layer=layer: got.__setitem__((layer, 2), out)
            ),
        ]
    with torch.no_grad():
        model(input_ids=torch.tensor([encode(tokenizer, prompt)]))
    for handle in handles:
        handle.remove()
    result = {}
    for layer in range(len(blocks)):
        norms = torch.stack([got[(layer, c)][0].double().norm(dim=-1) for c in range(3)], dim=-1)
        shares = (norms / norms.sum(-1, keepdim=True)).mean(0)
        result.update({(layer, name): float(shares[c]) for c, name in enumerate(COMPONENTS)})
    return result


def test_activation_shares_equal_the_sublayer_outputs_and_sum_to_one(tiny_model, tokenizer):
    shares = activation_norm_shares(tiny_model, tokenizer, PROMPTS, batch_size=2)  # padded batches
    expected = [_shares_from_sublayer_outputs(tiny_model, tokenizer, p) for p in PROMPTS]
    for key, value in shares.items():
        assert value == pytest.approx(sum(e[key] for e in expected) / len(PROMPTS), abs=1e-6)
    layers = {layer for layer, _ in shares}
    for layer in layers:
        assert sum(shares[(layer, c)] for c in COMPONENTS) == pytest.approx(1.0)


def test_growing_an_mlp_raises_its_share(tiny_llama, tokenizer):
    before = activation_norm_shares(tiny_llama, tokenizer, PROMPTS)
    write_weight(tiny_llama, 1, 10.0 * read_weight(tiny_llama, 1))
    after = activation_norm_shares(tiny_llama, tokenizer, PROMPTS)
    assert after[(1, "mlp")] > before[(1, "mlp")] + 0.05
    assert after[(0, "mlp")] == pytest.approx(before[(0, "mlp")])  # layers below are unchanged


def test_analysis_rows_name_layers_and_protocols(tiny_gpt2, tokenizer):
    rows = analysis_rows(tiny_gpt2, tokenizer, PROMPTS[:1], "rewrite-prompts")
    metrics = {row["metric"] for row in rows}
    assert {"down_proj_norm.L00", "down_proj_norm.L03", "activation_share.L02.mlp"} <= metrics
    assert len(rows) == 4 + 4 * 3
    assert {row["protocol"] for row in rows} == {
        "analysis/down-proj-frobenius/all-layers",
        "analysis/activation-norm-share/rewrite-prompts",
    }
