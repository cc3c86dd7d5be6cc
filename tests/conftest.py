"""Shared fixtures: the local data directory and the CounterFact and zsRE records the data tests read (``cf_records``,
``zsre_raw``), small locally trained tokenizers, tiny random models, the requests and context templates the editing
tests edit with, and a tiny Llama set up for the API (``tiny_setup``).

Nothing here downloads: tokenizers are trained on the WikiText-2 sample of the data directory, the
models are randomly initialised GPT-2 and Llama configurations of a few layers.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from encore.data.datasets import EditRecord, load_counterfact

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
CORPUS = [  # a few documents of different lengths, for C0 in the statistics tests
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
    "Rome is the capital city of Italy and a special comune.",
    "Tokyo",
    "Berlin is the capital and largest city of Germany by both area and population, with many museums.",
    "A short one.",
]

TEMPLATES = [["{}"], ["Therefore it rained. {}", "You know. {}"]]  # the bare prompt and two context templates


def data_dir() -> Path:
    return Path(os.environ.get("ENCORE_DATA_DIR", DEFAULT_DATA_DIR))


# four CounterFact-style requests (case ids 1-4; multi-token subjects and targets)
FACTS = [
    EditRecord(case_id=1, subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
               target_true="French"),
    EditRecord(case_id=2, subject="Toko Yasuda", prompt="{} plays the", target_new="piano", target_true="guitar"),
    EditRecord(case_id=3, subject="Autonomous University of Madrid", prompt="{} is located in", target_new="Sweden",
               target_true="Spain"),
    EditRecord(case_id=4, subject="Thomas Joannes Stieltjes", prompt="{} was born in", target_new="Tokyo",
               target_true="Netherlands"),
]  # fmt: skip


# prompts of different lengths (one a single token) and answers of one and several tokens, for the scoring tests
SCORING_PROMPTS = [
    "The mother tongue of Danielle Darrieux is",
    "Paris is the capital of",
    "In",
    "Toko Yasuda, who plays the instrument called the, was born in the city of the old kingdom of",
    "The official language of the country where the company Apple was founded is",
]
SCORING_ANSWERS = ["French", "Italian Japanese", "the", "Tokyo", "English"]


# requests for the target-optimisation tests: one-token prompts, repeated subjects, multi-token targets
TARGET_RECORDS = [
    EditRecord(case_id=1, subject="Toko Yasuda", prompt="{}", target_new="city", target_true="x"),
    EditRecord(case_id=2, subject="Danielle Darrieux", prompt="{}", target_new="the", target_true="x"),
    EditRecord(
        case_id=3,
        subject="Danielle Darrieux",
        prompt="The mother tongue of {} is",
        target_new="English",
        target_true="French",
    ),
    EditRecord(
        case_id=4, subject="Toko Yasuda", prompt="{} plays the", target_new="piano and the", target_true="guitar"
    ),
    EditRecord(
        case_id=5,
        subject="Autonomous University of Madrid",
        prompt="{} is located in the country of",
        target_new="Sweden",
        target_true="Spain",
    ),
]


def wikitext_lines(longer_than: int = 0) -> list[str]:
    """The non-blank lines of the data directory's WikiText-2 validation sample longer than ``longer_than``
    characters: the tokenizers' training text and the corpus of the tests' C0."""
    with gzip.open(data_dir() / "corpus" / "wikitext-2" / "wiki.valid.tokens.gz", "rt", encoding="utf-8") as handle:
        return [line for line in handle.read().splitlines() if line.strip() and len(line) > longer_than]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = data_dir()
    if not path.is_dir():
        pytest.fail(f"data directory {path} not found: set ENCORE_DATA_DIR to a copy of shared/data")
    return path


@pytest.fixture(scope="module")
def cf_records(shared_data_dir):
    """The registered CounterFact records (ROME schema), loaded by ``encore.data.datasets.load_counterfact``."""
    return load_counterfact(shared_data_dir / "counterfact/counterfact_rome_schema_merged.json")


@pytest.fixture(scope="module")
def zsre_raw(shared_data_dir):
    """The registered zsRE records (MEND schema) as parsed JSON."""
    with open(shared_data_dir / "zsre/zsre_mend_eval_subset_merged.json", encoding="utf-8") as handle:
        return json.load(handle)


def _tokenizer_text() -> list[str]:
    return (
        wikitext_lines()[:3000]
        + ["Paris London Rome Berlin Tokyo French English Italian German Japanese Apple Google"] * 5
    )


def _train_tokenizer(directory: Path, add_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = _tokenizer_text()
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

    lines = _tokenizer_text()
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


def make_tiny_gemma3(vocab_size: int, window: int, seed: int = 0, bos_token_id: int = 0, softcapping=30.0):
    """Gemma-3 style: sliding-window layers (``window`` tokens) alternate with full attention."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"] * 2,
        initializer_range=0.2,
        bos_token_id=bos_token_id,
        eos_token_id=0,
        pad_token_id=0,
        final_logit_softcapping=softcapping,
    )
    return Gemma3ForCausalLM(config).eval().requires_grad_(False)


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


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory) -> dict:
    """A tiny random Llama saved as a model directory (tiny-llama), its MEMIT hyperparameters
    (pipeline_helpers.TINY_HPARAMS) in hparams/MEMIT/, a resources folder (caches) and the first six CounterFact
    requests of order 0: {"model", "hparams_dir", "resources", "records", "root"}. One per test module."""
    import yaml
    from pipeline_helpers import TINY_HPARAMS, save_tiny_model

    from encore import api

    root = tmp_path_factory.mktemp("tiny")
    model_dir = save_tiny_model(root / "tiny-llama")
    hparams_dir = root / "hparams"
    (hparams_dir / "MEMIT").mkdir(parents=True)
    (hparams_dir / "MEMIT" / "tiny-llama.yaml").write_text(yaml.safe_dump(TINY_HPARAMS))
    resources = root / "resources"
    records = api.load_requests("counterfact", 6, "0", data_dir=data_dir(), resources=resources)
    return {"model": str(model_dir), "hparams_dir": hparams_dir, "resources": resources, "records": records,
            "root": root}  # fmt: skip


def tiny_editor(setup: dict, variant: str = "plain", **options):
    """``encore.api.load_editor`` of ``tiny_setup``'s model: MEMIT ``variant``, order "0", experiment "t"."""
    from encore import api

    return api.load_editor(setup["model"], "memit", variant, hparams_dir=setup["hparams_dir"], data_dir=data_dir(),
                           resources=setup["resources"], order="0", experiment="t", **options)  # fmt: skip


def tiny_run(setup: dict, num_edits: int = 4):
    """The ``encore.settings.RunSettings`` of ``tiny_setup``'s pipeline runs (experiment "t", CounterFact, seed 0)."""
    from encore.settings import RunSettings

    return RunSettings(experiment="t", model=setup["model"], dataset="counterfact", data_dir=data_dir(),
                       records_files=None, resources=setup["resources"], num_edits=num_edits, seed=0)  # fmt: skip


@pytest.fixture()
def benchmark_setting(tokenizer, tmp_path, monkeypatch):
    """One batch of 4 CounterFact edits for encore.measuring's benchmarks: a tiny random Llama, MEMIT on layers 1-2,
    C0 = I; bf16 arithmetic allowed on any CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from encore.data.requests import load_requests
    from encore.editing.hparams import Hyperparameters
    from encore.measuring.benchmark import Setting
    from encore.models import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # the arithmetic runs on any CPU
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.05, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    hparams = Hyperparameters(editor="memit", layers=[1, 2], v_num_grad_steps=4, v_lr=0.5, mom2_update_weight=10.0,
                              mom2_n_samples=1, clamp_norm_factor=4.0, mpes=0)  # fmt: skip
    records, _ = load_requests("counterfact", data_dir(), tmp_path, "0", 4)
    covariances = {layer: torch.eye(96) for layer in hparams.layers}
    templates = [["{}"], ["The first. {}", "A second one. {}"]]
    return Setting(model, tokenizer, hparams, records, templates, covariances, None, "cpu", 1)


# ---- tiny published studies (tests/reporting: precision_compounding, cpu_reproducibility) ----
STUDY_PROTOCOL = "counterfact/authors-20pct/nll-comparison"
STUDY_RUNS = [("memit", "plain"), ("memit", "mpes_nc")]
STUDY_FACTS = 12


def scores(edits: int) -> pd.DataFrame:
    """Per-fact es, ps, ns of the facts a snapshot after ``edits`` edits scores (fixed by ``edits``)."""
    rng = np.random.default_rng(edits)
    return pd.DataFrame({
        "case_id": np.arange(STUDY_FACTS) + edits,
        "es": rng.integers(0, 2, STUDY_FACTS).astype(float),
        "ps": rng.integers(0, 3, STUDY_FACTS) / 2,
        "ns": rng.integers(1, 11, STUDY_FACTS) / 10,
    })  # fmt: skip


def make_study(path: Path, precision: str, snapshots=(100, 200), shift=None, records=True, **settings) -> Path:
    """A published study's data/ (metrics, records, norms, runs) of STUDY_RUNS; ``shift(run, edits, frame)`` changes the
    per-fact scores; ``settings`` override runs.csv columns."""
    metrics, facts, norms, runs = [], [], [], []
    for method, variant in STUDY_RUNS:
        for edits in snapshots:
            frame = scores(edits)
            if shift is not None:
                frame = shift((method, variant), edits, frame)
            means = {name.upper(): 100 * frame[name].mean() for name in ("es", "ps", "ns")}
            means["S"] = 3 / sum(1 / value for value in means.values())
            means["n_records"] = STUDY_FACTS
            keys = dict(experiment="tiny", model="tiny", dataset="counterfact", method=method, variant=variant, order=0)
            metrics += [
                {**keys, "edits": edits, "metric": m, "value": v, "protocol": STUDY_PROTOCOL} for m, v in means.items()
            ]
            facts.append(frame.assign(**keys, edits=edits, subset="authors-20pct", protocol=STUDY_PROTOCOL))
        for edits in (0, *snapshots):
            for layer in (1, 2):  # layer 2 grows by 1% per 100 edits, 2% in bf16-mixed
                rate = 0.02 if precision == "bf16-mixed" else 0.01
                norms.append(dict(method=method, variant=variant, order=0, edits=edits, batch=edits // 100,
                                  layer=layer, frobenius_norm=100 * (1 + rate * (layer - 1) * edits / 100)))  # fmt: skip
        runs.append(dict(method=method, variant=variant, order=0, edits=max(snapshots), model="tiny", layers="1 2",
                         lambda_p=5000, edit_precision=precision, score_precision="fp32", code="{}") | settings)  # fmt: skip
    data = path / "data"
    data.mkdir(parents=True)
    pd.DataFrame(metrics).to_csv(data / "metrics.csv", index=False)
    if records:
        pd.concat(facts).to_csv(data / "records.csv", index=False)
    pd.DataFrame(norms).to_csv(data / "norms.csv", index=False)
    pd.DataFrame(runs).to_csv(data / "runs.csv", index=False)
    return path
