"""Gemma (model_type "gemma", Gemma-1), added by following docs/adding-a-model-family.md: the family resolves to its
down-projections, keys are the down-projection inputs at the subject, one MEMIT batch makes the new targets more
probable and changes only the edited layers, the shared-prefix paths (target optimisation, answer scoring) equal the
whole-sequence ones, every evaluation part runs and the activation shares are the sub-layers' own outputs. An
unlisted family gets the error that names ARCHITECTURES."""

import dataclasses
import gzip
from types import SimpleNamespace

import pytest
import torch
from conftest import data_dir

from encore.data.datasets import EditRecord, load_counterfact
from encore.editing.covariance import second_moments
from encore.editing.editors import make_editor
from encore.editing.hparams import Hyperparameters
from encore.editing.keys import compute_keys
from encore.editing.sequential import EditorState, edit_batch
from encore.editing.targets import TargetSettings, optimise_targets
from encore.evaluation import counterfact as metrics
from encore.evaluation.analysis import COMPONENTS, activation_norm_shares
from encore.evaluation.counterfact import answer_nll
from encore.models.architecture import (
    LLAMA,
    architecture_of,
    block_output_tensor,
    down_proj_module,
    read_weight,
    write_weight,
)
from encore.models.tokens import encode, fill_subject, subject_last_index
from encore.session import evaluate_model

TEMPLATES = [["{}"], ["Therefore it rained. {}", "You know. {}"]]
RECORDS = [
    EditRecord(case_id=1, subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
               target_true="French"),
    EditRecord(case_id=2, subject="Toko Yasuda", prompt="{} plays the", target_new="piano", target_true="guitar"),
    EditRecord(case_id=3, subject="Autonomous University of Madrid", prompt="{} is located in", target_new="Sweden",
               target_true="Spain"),
]  # fmt: skip
HPARAMS = Hyperparameters(editor="memit", layers=[1, 2], v_num_grad_steps=20, v_lr=1.0, mom2_update_weight=10.0,
                          mom2_n_samples=40, clamp_norm_factor=4.0)  # fmt: skip


def make_tiny_gemma(vocab_size: int, seed: int = 0):
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(seed)
    config = GemmaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         initializer_range=0.2, bos_token_id=0, eos_token_id=0, pad_token_id=0)  # fmt: skip
    return GemmaForCausalLM(config).eval().requires_grad_(False)


@pytest.fixture()
def gemma(bos_tokenizer):  # Gemma's tokenizer adds a BOS token, as this one does
    return make_tiny_gemma(len(bos_tokenizer))


def test_the_family_resolves_to_its_down_projections(gemma):
    assert gemma.config.model_type == "gemma" and architecture_of(gemma) is LLAMA
    module = down_proj_module(gemma, 2)
    assert module is gemma.model.layers[2].mlp.down_proj
    assert read_weight(gemma, 2).shape == (64, 96)  # d_model x d_ff, nn.Linear as stored
    write_weight(gemma, 2, torch.ones(64, 96))
    assert torch.equal(module.weight, torch.ones(64, 96))


def test_an_unlisted_family_is_refused_with_where_to_add_it():
    model = SimpleNamespace(config=SimpleNamespace(model_type="not-a-family"))
    with pytest.raises(ValueError, match=r"^unsupported model_type 'not-a-family': add an entry to "
                                         r"encore\.models\.architecture\.ARCHITECTURES \(known: \["):  # fmt: skip
        architecture_of(model)


def test_keys_are_the_down_projection_inputs_at_the_last_subject_token(gemma, bos_tokenizer):
    keys = compute_keys(gemma, bos_tokenizer, RECORDS, 1, [["{}"]])
    seen = {}
    handle = down_proj_module(gemma, 1).register_forward_pre_hook(lambda _m, args: seen.update(x=args[0]))
    try:
        for row, record in enumerate(RECORDS):
            gemma(input_ids=torch.tensor([encode(bos_tokenizer, record.rewrite_prompt)]))
            expected = seen["x"][0, subject_last_index(bos_tokenizer, record.prompt, record.subject)]
            assert torch.allclose(keys[row], expected, atol=1e-5)
            assert encode(bos_tokenizer, fill_subject(record.prompt, record.subject))[0] == bos_tokenizer.bos_token_id
    finally:
        handle.remove()


def test_one_memit_batch_edits_the_facts_and_only_the_edited_layers(gemma, bos_tokenizer):
    with gzip.open(data_dir() / "corpus" / "wikitext-2" / "wiki.valid.tokens.gz", "rt") as handle:
        documents = [line for line in handle.read().splitlines() if len(line) > 200][:40]
    covariances, _ = second_moments(gemma, bos_tokenizer, documents, HPARAMS.layers, max_length=64)
    prompts, targets = [r.rewrite_prompt for r in RECORDS], [r.target_new for r in RECORDS]
    before_nll = answer_nll(gemma, bos_tokenizer, prompts, targets)
    before = {layer: read_weight(gemma, layer).clone() for layer in range(4)}
    state = EditorState.initial(TEMPLATES, HPARAMS.layers, before[1].shape[1])
    edit_batch(gemma, bos_tokenizer, RECORDS, HPARAMS, make_editor(HPARAMS), state, covariances)
    after_nll = answer_nll(gemma, bos_tokenizer, prompts, targets)
    assert torch.all(after_nll < before_nll), (before_nll, after_nll)
    changed = {layer for layer in range(4) if not torch.equal(read_weight(gemma, layer), before[layer])}
    assert changed == set(HPARAMS.layers)


def test_shared_prefix_paths_equal_whole_sequences(bos_tokenizer):
    model = make_tiny_gemma(len(bos_tokenizer)).double()
    settings = TargetSettings(layer=1, steps=8, lr=1.0, mpes=0, kl_factor=0.1, weight_decay=0.5,
                              clamp_norm_factor=4.0, tokens_per_microbatch=48)  # fmt: skip
    reused = optimise_targets(model, bos_tokenizer, RECORDS, settings, TEMPLATES)
    whole = optimise_targets(model, bos_tokenizer, RECORDS, dataclasses.replace(settings, prefix_reuse=False),
                             TEMPLATES)  # fmt: skip
    assert float(((reused.z - whole.z).norm(dim=-1) / whole.z.norm(dim=-1)).max()) <= 1e-5
    assert reused.iterations == whole.iterations
    prompt_ids = [encode(bos_tokenizer, r.rewrite_prompt) for r in RECORDS]
    candidates = [[(0, [20, 21, 22]), (1, [23])], [(2, [24, 25])], [(3, [26, 27, 28, 29])]]
    pairs, hidden, labels = metrics._score_chunk(model, bos_tokenizer, prompt_ids, candidates)
    pairs_whole, hidden_whole, labels_whole = metrics._score_chunk_whole(model, bos_tokenizer, prompt_ids, candidates)
    assert pairs == pairs_whole and torch.equal(labels, labels_whole)
    torch.testing.assert_close(hidden, hidden_whole, atol=1e-10, rtol=0)


def test_every_evaluation_part_runs(gemma, bos_tokenizer, tmp_path):
    records = load_counterfact(data_dir() / "counterfact" / "counterfact_rome_schema_merged.json")[:3]
    evaluation = {"generation": "final", "generation_records": 2, "generation_efficacy": "final", "downstream": "none",
                  "analysis": "final", "analysis_records": 3, "perplexity_tokens": 0}  # fmt: skip
    result = evaluate_model(gemma, bos_tokenizer, dataset="counterfact", records=records, unedited=False, final=True,
                            evaluation=evaluation, data_dir=None, resources=tmp_path, seed=0)  # fmt: skip
    rows = {row["metric"]: row["value"] for row in result.rows}
    assert {"ES", "PS", "NS", "S", "GE", "ES_gen", "PS_gen", "down_proj_norm.L03"} <= set(rows)
    shares = [rows[f"activation_share.L01.{c}"] for c in ("residual", "attention", "mlp")]
    assert sum(shares) == pytest.approx(1.0) and min(shares) > 0  # Gemma-1's pre-MLP norm is found


def test_activation_shares_are_the_sublayer_outputs(gemma, bos_tokenizer):
    """Gemma-1 adds its attention and MLP outputs to the stream as they are (no post-norms, blocks not parallel), so
    the analysis's differences of the stream equal the sub-layers' own outputs (Architecture.attention / .mlp)."""
    arch, prompt = architecture_of(gemma), "The mother tongue of Danielle Darrieux is"
    seen, handles = {}, []
    for layer in range(4):
        handles += [
            gemma.get_submodule(arch.block(layer)).register_forward_pre_hook(
                lambda _m, args, kwargs, layer=layer: seen.__setitem__(
                    (layer, 0), kwargs.get("hidden_states", args and args[0])
                ),
                with_kwargs=True,
            ),
            gemma.get_submodule(arch.attention.format(layer)).register_forward_hook(
                lambda _m, _a, out, layer=layer: seen.__setitem__((layer, 1), block_output_tensor(out))
            ),
            gemma.get_submodule(arch.mlp.format(layer)).register_forward_hook(
                lambda _m, _a, out, layer=layer: seen.__setitem__((layer, 2), out)
            ),
        ]
    gemma(input_ids=torch.tensor([encode(bos_tokenizer, prompt)]))
    for handle in handles:
        handle.remove()
    shares = activation_norm_shares(gemma, bos_tokenizer, [prompt])
    for layer in range(4):
        norms = torch.stack([seen[(layer, c)][0].double().norm(dim=-1) for c in range(3)], dim=-1)
        expected = (norms / norms.sum(-1, keepdim=True)).mean(0)
        for c, component in enumerate(COMPONENTS):
            assert shares[(layer, component)] == pytest.approx(float(expected[c]), abs=1e-6)
