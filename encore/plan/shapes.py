"""Model shapes the plan knows (their Hugging Face configs), and the shape of any other model from its config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------------------------------------ shapes


@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    tied_head: bool
    gated_mlp: bool = True  # Llama family: gate, up, down; GPT-2: fc, proj

    @property
    def block_params(self) -> int:
        kv_dim = self.d_model * self.n_kv_heads // self.n_heads
        attention = 2 * self.d_model * self.d_model + 2 * self.d_model * kv_dim
        return attention + (3 if self.gated_mlp else 2) * self.d_model * self.d_ff

    @property
    def params(self) -> int:
        return self.n_layers * self.block_params + self.vocab * self.d_model * (1 if self.tied_head else 2)

    @property
    def kv_dim(self) -> int:
        return self.d_model * self.n_kv_heads // self.n_heads


KNOWN_SHAPES = {
    "gpt2-xl": Shape(48, 1600, 6400, 25, 25, 50257, True, gated_mlp=False),
    "meta-llama/Llama-2-7b-hf": Shape(32, 4096, 11008, 32, 32, 32000, False),
    "meta-llama/Meta-Llama-3-8B": Shape(32, 4096, 14336, 32, 8, 128256, False),
    "smollm2-135m": Shape(30, 576, 1536, 9, 3, 49152, True),
    "gemma3-270m": Shape(18, 640, 2048, 4, 1, 262144, True),
    "qwen2.5-coder-1.5b": Shape(28, 1536, 8960, 12, 2, 151936, False),
}


def model_shape(name: str) -> Shape:
    """A known model by name (or its last path component), or a local directory's config.json."""
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    for known, shape in KNOWN_SHAPES.items():
        if Path(name).name == Path(known).name:
            return shape
    config_file = Path(name) / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"model: no shape known for {name!r}; add it to encore.plan.shapes.KNOWN_SHAPES or point at a "
            "local directory with a config.json"
        )
    c = json.loads(config_file.read_text())
    c = c.get("text_config", c)
    heads = c.get("num_attention_heads", c.get("n_head"))
    d_model = c.get("hidden_size", c.get("n_embd"))
    return Shape(n_layers=c.get("num_hidden_layers", c.get("n_layer")), d_model=d_model,
                 d_ff=c.get("intermediate_size") or c.get("n_inner") or 4 * d_model, n_heads=heads,
                 n_kv_heads=c.get("num_key_value_heads", heads), vocab=c["vocab_size"],
                 tied_head=c.get("tie_word_embeddings", True), gated_mlp=c.get("model_type") != "gpt2")  # fmt: skip
