"""Per-family module names of the edited MLP down-projection, the blocks, the final norm and the head.

The edited matrix is always viewed as W : R^{d_ff} -> R^{d_model} (shape d_model x d_ff), whatever
the storage: GPT-2's ``Conv1D`` stores its weight as d_ff x d_model (transposed), Llama-family
``nn.Linear`` stores d_model x d_ff. :func:`read_weight` / :func:`write_weight` hide the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Architecture:
    family: str
    blocks: str  # ModuleList of transformer blocks
    down_proj: str  # "{}" = layer index
    attention: str
    mlp: str
    final_norm: str
    lm_head: str
    transposed: bool  # weight stored d_ff x d_model (GPT-2 Conv1D)

    def block(self, layer: int) -> str:
        return f"{self.blocks}.{layer}"

    def down_proj_name(self, layer: int) -> str:
        return self.down_proj.format(layer)


GPT2 = Architecture(
    family="gpt2",
    blocks="transformer.h",
    down_proj="transformer.h.{}.mlp.c_proj",
    attention="transformer.h.{}.attn",
    mlp="transformer.h.{}.mlp",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    transposed=True,
)

LLAMA = Architecture(
    family="llama",
    blocks="model.layers",
    down_proj="model.layers.{}.mlp.down_proj",
    attention="model.layers.{}.self_attn",
    mlp="model.layers.{}.mlp",
    final_norm="model.norm",
    lm_head="lm_head",
    transposed=False,
)

# model_type (transformers config) -> architecture
ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": GPT2,
    "llama": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "mistral": LLAMA,
    "gemma3_text": LLAMA,
    "gemma2": LLAMA,
    "gemma": LLAMA,  # Gemma-1 (docs/adding-a-model-family.md, tests/models/test_gemma.py)
}


def architecture_of(model: torch.nn.Module) -> Architecture:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported model_type {model_type!r}: add an entry to encore.models.architecture.ARCHITECTURES "
            f"(known: {sorted(ARCHITECTURES)})"
        )
    return ARCHITECTURES[model_type]


def num_layers(model: torch.nn.Module) -> int:
    return len(model.get_submodule(architecture_of(model).blocks))


def down_proj_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return model.get_submodule(architecture_of(model).down_proj_name(layer))


def read_weight(model: torch.nn.Module, layer: int) -> torch.Tensor:
    """W_l as a (d_model x d_ff) tensor (a view of the stored parameter)."""
    weight = down_proj_module(model, layer).weight
    return weight.T if architecture_of(model).transposed else weight


def write_weight(model: torch.nn.Module, layer: int, new_weight: torch.Tensor) -> None:
    """Overwrite W_l (given as d_model x d_ff) in place, in the parameter's dtype."""
    parameter = down_proj_module(model, layer).weight
    stored = new_weight.T if architecture_of(model).transposed else new_weight
    if stored.shape != parameter.shape:
        raise ValueError(
            f"layer {layer}: weight of shape {tuple(new_weight.shape)} does not fit {tuple(parameter.shape)}"
        )
    with torch.no_grad():
        parameter.copy_(stored.to(parameter.dtype))


def block_output_tensor(output):
    """Decoder blocks return a tensor (transformers >= 5) or a tuple whose first item is it."""
    return output[0] if isinstance(output, tuple) else output


def replace_block_output(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
