"""precision: bf16-mixed (encore.models.precision): what runs in bfloat16, what stays float32, that fp32 is untouched,
the hardware check and the config key."""

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from encore.data.datasets import EditRecord
from encore.editing.keys import compute_keys
from encore.editing.targets import TargetSettings, optimise_targets
from encore.evaluation.counterfact import answer_nll
from encore.models import precision
from encore.models.architecture import read_weight, write_weight
from encore.models.device import resolve_execution
from encore.models.precision import matmul_precision, precision_scope

TEMPLATES = [["{}"], ["Therefore it rained. {}", "You know. {}"]]
RECORDS = [
    EditRecord(case_id=3, subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
               target_true="French"),
    EditRecord(case_id=4, subject="Toko Yasuda", prompt="{} plays the", target_new="piano", target_true="guitar"),
]  # fmt: skip
SETTINGS = TargetSettings(layer=2, steps=6, lr=0.5, kl_factor=0.0625, weight_decay=0.5, clamp_norm_factor=4.0)


@pytest.fixture(autouse=True)
def fp32_afterwards():
    yield
    precision.set_precision("fp32")


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def test_fp32_is_bitwise_the_unset_default_and_replaces_no_forward(tiny_llama, tokenizer):
    default = optimise_targets(tiny_llama, tokenizer, RECORDS, SETTINGS, TEMPLATES)
    resolve_execution("cpu", "float32", precision="fp32")
    with precision_scope("fp32"), matmul_precision(tiny_llama):
        assert not any("forward" in module.__dict__ for module in tiny_llama.modules())
        explicit = optimise_targets(tiny_llama, tokenizer, RECORDS, SETTINGS, TEMPLATES)
    assert digest(explicit.z) == digest(default.z) and explicit.iterations == default.iterations


def smooth_llama(vocab_size: int):
    """A tiny Llama with weights of a trained model's scale (std 0.05): the fixtures' std 0.2 amplifies any rounding
    through the blocks (bfloat16 changes h at block 2 by 8% there, by 0.5-1% here and on SmolLM2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.05, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)  # fmt: skip
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def test_bf16_mixed_targets_are_close_to_fp32_but_not_equal_and_delta_stays_float32(tokenizer):
    model = smooth_llama(len(tokenizer))
    reference = optimise_targets(model, tokenizer, RECORDS, SETTINGS, TEMPLATES)
    with precision_scope("bf16-mixed"):
        mixed = optimise_targets(model, tokenizer, RECORDS, SETTINGS, TEMPLATES)
    assert mixed.z.dtype == mixed.delta.dtype == mixed.h_init.dtype == torch.float32
    assert 0 < relative(mixed.z, reference.z) < 5e-2  # bfloat16 is active, and close
    assert max(abs(a - b) / a for a, b in zip(reference.loss, mixed.loss)) < 1e-2
    assert not any("forward" in module.__dict__ for module in model.modules())  # restored on exit


def test_linear_and_conv1d_compute_bf16_products_with_float32_input_output(tiny_llama, tiny_gpt2):
    x = torch.randn(3, 64)
    for model, module in (
        (tiny_llama, tiny_llama.model.layers[0].mlp.up_proj),
        (tiny_gpt2, tiny_gpt2.transformer.h[0].mlp.c_fc),
    ):
        weight = module.weight.T if type(module).__name__ == "Conv1D" else module.weight
        expected = (x.bfloat16() @ weight.bfloat16().T).float() + (0 if module.bias is None else module.bias)
        with precision_scope("bf16-mixed"), matmul_precision(model):
            output = module(x)
        assert output.dtype == torch.float32 and torch.equal(output, expected)
        assert not torch.equal(output, module(x))  # outside the block: float32 again


def test_a_weight_written_inside_the_block_is_used_at_once(tiny_llama):
    """The bfloat16 copy is remade when the weight changes (write_weight's in-place copy moves its version)."""
    module = tiny_llama.model.layers[1].mlp.down_proj
    x = torch.randn(2, module.in_features)
    with precision_scope("bf16-mixed"), matmul_precision(tiny_llama):
        before = module(x)
        write_weight(tiny_llama, 1, read_weight(tiny_llama, 1) * 2)
        after = module(x)
    assert torch.equal(after, (x.bfloat16() @ module.weight.bfloat16().T).float())
    assert not torch.equal(after, before)


def test_keys_and_answer_scores_are_float32_and_close_under_bf16(tokenizer):
    model = smooth_llama(len(tokenizer))
    prompts, answers = ["The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the"], [" English", " piano"]
    keys, nll = compute_keys(model, tokenizer, RECORDS, 2, TEMPLATES), answer_nll(model, tokenizer, prompts, answers)
    with precision_scope("bf16-mixed"):
        mixed_keys = compute_keys(model, tokenizer, RECORDS, 2, TEMPLATES)
        mixed_nll = answer_nll(model, tokenizer, prompts, answers)
    assert mixed_keys.dtype == mixed_nll.dtype == torch.float32
    assert 0 < relative(mixed_keys, keys) < 2e-2
    assert 0 < float((mixed_nll - nll).abs().max()) < 5e-2


def test_resolve_execution_applies_and_records_the_precision(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    mixed = resolve_execution("cpu", precision="bf16-mixed")
    assert precision.get_precision() == "bf16-mixed" and mixed.describe()["precision"] == "bf16-mixed"
    plain = resolve_execution("cpu")
    assert precision.get_precision() == "fp32" and "precision" not in plain.describe()  # fp32 records unchanged


def test_missing_hardware_and_bad_settings_are_one_line_errors_naming_the_key(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match=r"^precision: bf16-mixed needs bfloat16 matrix products, but this CPU .* "
                                         r"has neither AVX512-BF16 nor AMX; set precision: fp32$") as error:  # fmt: skip
        resolve_execution("cpu", precision="bf16-mixed")
    assert "\n" not in str(error.value) and precision.get_precision() == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert precision.bf16_missing("cuda:0") == "Tesla V100 has no native bfloat16 (needs compute capability >= 8.0)"
    with pytest.raises(ValueError, match=r"^precision: 'bf16' is not one of fp32, bf16-mixed$"):
        resolve_execution("cpu", precision="bf16")
    with pytest.raises(ValueError, match=r"^precision: bf16-mixed keeps float32 weights and needs dtype: float32"):
        resolve_execution("cpu", "bfloat16", precision="bf16-mixed")


def test_this_machine_answers_the_capability_query():
    """The query itself runs (torch's CPU query, else /proc/cpuinfo) and agrees with the flags where both exist."""
    flags = precision._cpu_flags()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert precision.cpu_has_bf16()


def test_config_schema_accepts_the_two_precisions_and_rejects_others():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(REPO / "encore" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load(Path(REPO / "config.yaml").read_text())
    assert config["precision"] == "fp32"
    for value in ("fp32", "bf16-mixed"):
        validate({**config, "precision": value}, schema)
    for value in ("bf16", "float32", None):
        with pytest.raises(WorkflowError):
            validate({**config, "precision": value}, schema)
    defaulted = {key: value for key, value in config.items() if key != "precision"}
    validate(defaulted, schema)
    assert defaulted["precision"] == "fp32"
