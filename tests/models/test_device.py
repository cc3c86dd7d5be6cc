"""Device and precision settings: resolution, errors naming the key, placement, what results record; and the
CPU/CUDA equality check that runs where a GPU is present (skipped otherwise)."""

import dataclasses

import pytest
import torch
from conftest import make_tiny_llama

from encore.models.device import Execution, resolve_execution, state_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_runs_on_the_cpu_without_cuda_and_cuda_is_refused_naming_the_key():
    execution = resolve_execution("auto")
    assert execution.device == "cpu" and execution.dtype == "float32" and not execution.tf32
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"^device: '{device}' requested but CUDA is not available"):
            resolve_execution(device)


@pytest.mark.parametrize("device, dtype, message", [("gpu", "float32", "device: 'gpu'"),
                                                     ("cuda:x", "float32", "device: 'cuda:x'"),
                                                     ("cpu", "float8", "dtype: 'float8'")])  # fmt: skip
def test_bad_settings_name_the_key(device, dtype, message):
    with pytest.raises(ValueError, match=message):
        resolve_execution(device, dtype)


def test_cpu_execution_records_device_dtype_and_keeps_solves_on_the_cpu():
    execution = resolve_execution("cpu", "bfloat16")
    record = execution.describe()
    assert record["device"] == "cpu" and record["dtype"] == "bfloat16" and "gpu_name" not in record
    assert execution.torch_dtype == torch.bfloat16
    assert state_device(execution, d_ff=14336, n_layers=5, with_projector=True) == "cpu"


def test_models_load_in_the_requested_dtype(tmp_path, tokenizer):
    from encore.models.loading import load_model

    directory = tmp_path / "tiny"
    make_tiny_llama(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    loaded = load_model(directory, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.model.device.type == "cpu" and not any(p.requires_grad for p in loaded.model.parameters())


def test_state_placement_counts_every_float64_matrix(monkeypatch):
    """C0 and S_P (and P) per layer plus three working matrices must fit in half the free GPU memory (the other
    half is left to target optimisation's activations)."""
    gib = 2**30
    execution = Execution(device="cuda:0", dtype="float32")
    matrix = 14336**2 * 8  # 1.64 GB
    needed_memit, needed_alphaedit = (5 * 2 + 3) * matrix, (5 * 3 + 3) * matrix
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(needed_memit / 0.5) + gib, 80 * gib))
    assert state_device(execution, 14336, 5, with_projector=False) == "cuda:0"
    assert state_device(execution, 14336, 5, with_projector=True) == "cpu"  # 18 matrices do not fit
    assert needed_alphaedit > needed_memit


@needs_cuda
@pytest.mark.parametrize("mpes", [None, 1])
def test_cuda_and_cpu_compute_the_same_targets_keys_and_update(bos_tokenizer, mpes):
    """The GPU check: the same batch edited on the CPU and on CUDA (float64 model) gives the same z, keys,
    stops and Delta to float tolerance."""
    import gzip

    from conftest import TARGET_RECORDS as RECORDS
    from conftest import TEMPLATES, data_dir

    from encore.editing.covariance import second_moments
    from encore.editing.editors import make_editor
    from encore.editing.hparams import Hyperparameters
    from encore.editing.keys import BatchKeys
    from encore.editing.sequential import EditorState, edit_batch

    with gzip.open(data_dir() / "corpus" / "wikitext-2" / "wiki.valid.tokens.gz", "rt") as handle:
        documents = [line for line in handle.read().splitlines() if len(line) > 200][:30]
    hparams = Hyperparameters(editor="memit", layers=[1, 2], v_num_grad_steps=10, v_lr=1.0, mom2_update_weight=10.0,
                              mom2_n_samples=30, clamp_norm_factor=4.0, mpes=mpes, norm_lambda=5.0)  # fmt: skip
    results = {}
    for device in ("cpu", "cuda"):
        model = make_tiny_llama(len(bos_tokenizer)).double().to(device)
        covariances, _ = second_moments(model, bos_tokenizer, documents, hparams.layers, max_length=64)
        keys = BatchKeys(model, bos_tokenizer, RECORDS, TEMPLATES, first_layer=1).keys(2).cpu()
        before = {layer: model.model.layers[layer].mlp.down_proj.weight.detach().cpu().clone() for layer in (1, 2)}
        state = EditorState.initial(TEMPLATES, hparams.layers, before[1].shape[1], device=device)
        out = edit_batch(model, bos_tokenizer, RECORDS, hparams, make_editor(hparams), state, covariances)
        delta = {
            layer: model.model.layers[layer].mlp.down_proj.weight.detach().cpu() - before[layer] for layer in (1, 2)
        }
        results[device] = (out["targets"], keys, delta, {k: v.cpu() for k, v in covariances.items()})
    (cpu_t, cpu_k, cpu_d, cpu_c), (gpu_t, gpu_k, gpu_d, gpu_c) = results["cpu"], results["cuda"]
    torch.testing.assert_close(gpu_t.z.cpu(), cpu_t.z, rtol=1e-6, atol=1e-8)
    assert gpu_t.iterations == cpu_t.iterations and gpu_t.stop_reason == cpu_t.stop_reason
    torch.testing.assert_close(gpu_k, cpu_k, rtol=1e-9, atol=1e-10)
    for layer in (1, 2):
        torch.testing.assert_close(gpu_c[layer], cpu_c[layer], rtol=1e-5, atol=1e-7)
        assert float((gpu_d[layer] - cpu_d[layer]).norm() / cpu_d[layer].norm()) <= 1e-5
    assert dataclasses.is_dataclass(gpu_t)


def test_a_cpu_result_records_the_cpu_features_and_kernel_caps_that_decide_its_rounding(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    cpu = resolve_execution("cpu", "float32").describe()["cpu"]
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(cpu["features"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert cpu["kernel_settings"] == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
