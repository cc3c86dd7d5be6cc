"""Shared fixtures: the local data directory, small locally trained tokenizers, tiny random models.

Nothing here downloads: tokenizers are trained on the WikiText-2 sample of the data directory, the
models are randomly initialised GPT-2 and Llama configurations of a few layers.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def data_dir() -> Path:
    return Path(os.environ.get("ENCORE_DATA_DIR", DEFAULT_DATA_DIR))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = data_dir()
    if not path.is_dir():
        pytest.fail(f"data directory {path} not found: set ENCORE_DATA_DIR to a copy of shared/data")
    return path


def _train_tokenizer(directory: Path, add_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    text_file = data_dir() / "corpus" / "wikitext-2" / "wiki.valid.tokens.gz"
    with gzip.open(text_file, "rt", encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()][:3000]
    lines += ["Paris London Rome Berlin Tokyo French English Italian German Japanese Apple Google"] * 5
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(lines, trainer)
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token="<s>" if add_bos else None,
    )
    wrapped.save_pretrained(directory)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def _train_sentencepiece_style_tokenizer(directory: Path):
    """Llama-2-style tokenizer: BPE over "▁"-prefixed words (Metaspace, prepend "first"), byte fallback,
    BOS <s> added to every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    text_file = data_dir() / "corpus" / "wikitext-2" / "wiki.valid.tokens.gz"
    with gzip.open(text_file, "rt", encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()][:3000]
    lines += ["Paris London Rome Berlin Tokyo French English Italian German Japanese Apple Google"] * 5
    special = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first")]
    )
    tokenizer.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=1200, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    wrapped.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="session")
def sp_tokenizer(tmp_path_factory):
    """SentencePiece / Llama-2 family: "▁" word pieces, byte fallback, BOS added."""
    return _train_sentencepiece_style_tokenizer(tmp_path_factory.mktemp("tok_sp"))


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """GPT-2-like byte-level BPE tokenizer without BOS."""
    return _train_tokenizer(tmp_path_factory.mktemp("tok"), add_bos=False)


@pytest.fixture(scope="session")
def bos_tokenizer(tmp_path_factory):
    """Same vocabulary, but every encoding starts with a BOS token (Llama-3 / Gemma style)."""
    return _train_tokenizer(tmp_path_factory.mktemp("tok_bos"), add_bos=True)


def make_tiny_llama(vocab_size: int, seed: int = 0, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        initializer_range=0.2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def make_tiny_gpt2(vocab_size: int, seed: int = 0, layers: int = 4):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=64,
        n_layer=layers,
        n_head=4,
        n_positions=256,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(config).eval().requires_grad_(False)


@pytest.fixture()
def tiny_llama(tokenizer):
    return make_tiny_llama(len(tokenizer))


@pytest.fixture()
def tiny_gpt2(tokenizer):
    return make_tiny_gpt2(len(tokenizer))


@pytest.fixture(params=["llama", "gpt2"])
def tiny_model(request, tokenizer):
    """Both architecture families: Linear (Llama) and transposed Conv1D (GPT-2) down-projections."""
    maker = make_tiny_llama if request.param == "llama" else make_tiny_gpt2
    return maker(len(tokenizer))
