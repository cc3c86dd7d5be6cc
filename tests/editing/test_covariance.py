"""C0 equals a naive per-token accumulation; the cache is content-addressed and verified."""

import pytest
import torch
from conftest import CORPUS

from encore.editing.covariance import load_or_compute_statistics, load_statistic, second_moments, statistics_key
from encore.models.architecture import down_proj_module
from encore.models.tokens import encode


def naive_second_moment(model, tokenizer, documents, layer, max_length):
    captured = {}
    handle = down_proj_module(model, layer).register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    total, count = None, 0
    try:
        for text in documents:
            ids = encode(tokenizer, text)[:max_length]
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
            for k in captured["x"][0].float():
                outer = torch.outer(k, k)
                total = outer if total is None else total + outer
                count += 1
    finally:
        handle.remove()
    return total / count, count


def test_second_moment_equals_naive_per_token_accumulation(tiny_model, tokenizer):
    moments, count = second_moments(tiny_model, tokenizer, CORPUS, layers=[1, 3], max_length=12, batch_size=2)
    for layer in (1, 3):
        expected, expected_count = naive_second_moment(tiny_model, tokenizer, CORPUS, layer, 12)
        assert count == expected_count
        assert moments[layer].dtype == torch.float32
        assert torch.allclose(moments[layer], expected, rtol=1e-5, atol=1e-6)


def _compute(model, tokenizer, tmp_path, calls, n_samples=4, layers=(1, 2)):
    def loader():
        calls.append(1)
        return CORPUS

    identity = {"source": "test", "name": "tiny"}
    return load_or_compute_statistics(
        model, tokenizer, identity, list(layers), loader, "corpus-sha", n_samples, 16, tmp_path
    )


def test_cache_hit_never_recomputes_and_changed_setting_never_reuses(tiny_llama, tokenizer, tmp_path):
    calls = []
    first = _compute(tiny_llama, tokenizer, tmp_path, calls)
    assert len(calls) == 1
    again = _compute(tiny_llama, tokenizer, tmp_path, calls)
    assert len(calls) == 1 and again == first
    other = _compute(tiny_llama, tokenizer, tmp_path, calls, n_samples=3)
    assert len(calls) == 2
    assert set(other.values()).isdisjoint(first.values())
    # a new layer computes only the missing one and keeps the cached file
    before = first[1].stat().st_mtime_ns
    extended = _compute(tiny_llama, tokenizer, tmp_path, calls, layers=(1, 2, 3))
    assert len(calls) == 3 and extended[1].stat().st_mtime_ns == before


def test_corrupted_or_foreign_cache_file_is_rejected(tiny_llama, tokenizer, tmp_path):
    paths = _compute(tiny_llama, tokenizer, tmp_path, [])
    key = statistics_key({"source": "test", "name": "tiny"}, 1, "corpus-sha", 4, 16, "float32")
    assert load_statistic(paths[1], key).shape == (96, 96)
    with pytest.raises(ValueError, match="different setting"):
        load_statistic(paths[1], {**key, "n_samples": 5})
    raw = bytearray(paths[1].read_bytes())
    raw[-5] ^= 0xFF
    paths[1].write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_statistic(paths[1], key)
