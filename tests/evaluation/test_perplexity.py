"""Perplexity on the WikiText-2 test split: the NLL of a plain forward, the exact token budget, disjoint windows."""

import math
from types import SimpleNamespace

import pytest
import torch

from encore.data.datasets import read_text
from encore.data.files import DataError, resolve_data_file
from encore.evaluation.perplexity import (
    corpus_ids,
    corpus_perplexity_rows,
    perplexity_of_ids,
    special_prefix,
    windows_of,
)


class BigramLM(torch.nn.Module):
    """logits(x_t) = table[x_t]; records every sequence it is given."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        vocab = table.shape[0]
        self.embed = torch.nn.Embedding(vocab, vocab, _weight=table.clone())
        self.head = torch.nn.Linear(vocab, vocab, bias=False, dtype=table.dtype)
        self.head.weight.data = torch.eye(vocab, dtype=table.dtype)
        self.config = SimpleNamespace(final_logit_softcapping=None, max_position_embeddings=64)
        self.seen: list[list[int]] = []

    def base_model(self, input_ids, attention_mask=None, use_cache=False):
        self.seen += input_ids.tolist()
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))

    def get_output_embeddings(self):
        return self.head


def plain_forward_nll(model, ids, window):
    """Sum of -log p over each window's tokens 1.. from the model's own full forward and cross_entropy."""
    total, count = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = torch.tensor(ids[start : start + window])[None]
        logits = model(input_ids=chunk).logits[0].double()
        total += torch.nn.functional.cross_entropy(logits[:-1], chunk[0, 1:], reduction="sum").item()
        count += chunk.shape[1] - 1
    return total / count, count


def test_perplexity_is_exp_of_the_mean_nll_of_a_plain_forward(tiny_llama):
    ids = torch.randint(0, tiny_llama.config.vocab_size, (103,), generator=torch.Generator().manual_seed(1)).tolist()
    expected, count = plain_forward_nll(tiny_llama, ids, window=20)
    for batch_size in (1, 3, 8):
        got = perplexity_of_ids(tiny_llama, ids, window=20, batch_size=batch_size)
        assert got["nll_per_token"] == pytest.approx(expected, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
        assert got["perplexity"] == math.exp(got["nll_per_token"])
        assert (got["predicted_tokens"], got["windows"], got["tokens"]) == (count, 6, 103) and count == 103 - 6
    # the windows matter: windows of 40 see more context and give another value
    assert perplexity_of_ids(tiny_llama, ids, window=40)["nll_per_token"] != pytest.approx(expected, rel=1e-5)


def test_windows_are_disjoint_and_the_budget_is_fed_exactly():
    ids = list(range(10, 40)) + list(range(10, 20))
    windows = windows_of(ids, 7)
    assert [len(w) for w in windows] == [7, 7, 7, 7, 7, 5] and sum(windows, []) == ids
    model = BigramLM(torch.zeros(50, 50, dtype=torch.float64))
    result = perplexity_of_ids(model, ids, window=7, batch_size=4)
    assert sorted(map(tuple, model.seen)) == sorted(map(tuple, windows))  # every token fed once, nothing else
    assert result["predicted_tokens"] == len(ids) - len(windows)
    model.seen.clear()
    with_bos = perplexity_of_ids(model, ids, window=7, prefix=[0])
    assert sorted(map(tuple, model.seen)) == sorted(tuple([0] + w) for w in windows)
    assert with_bos["predicted_tokens"] == len(ids)  # the BOS predicts each window's first token
    with pytest.raises(ValueError, match="perplexity_window"):
        windows_of(ids, 1)


def test_known_logits_give_the_hand_computed_perplexity():
    vocab = 12
    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    ids = torch.randint(0, vocab, (57,), generator=torch.Generator().manual_seed(2)).tolist()
    hand, count = 0.0, 0
    for start in range(0, len(ids), 10):
        chunk = ids[start : start + 10]
        for previous, token in zip(chunk, chunk[1:]):
            row = table[previous].tolist()
            hand -= row[token] - math.log(sum(math.exp(z) for z in row))
            count += 1
    got = perplexity_of_ids(BigramLM(table), ids, window=10)
    assert got["predicted_tokens"] == count and got["nll_per_token"] == pytest.approx(hand / count, abs=1e-12)
    # uniform logits: perplexity = vocabulary size; always predicting the next id (a cycle): perplexity 1
    assert perplexity_of_ids(BigramLM(torch.zeros(vocab, vocab, dtype=torch.float64)), ids, 10)["perplexity"] == (
        pytest.approx(vocab, rel=1e-12)
    )
    successor = torch.full((vocab, vocab), -50.0, dtype=torch.float64)
    successor[torch.arange(vocab), (torch.arange(vocab) + 1) % vocab] = 50.0
    cycle = [i % vocab for i in range(3, 60)]
    assert perplexity_of_ids(BigramLM(successor), cycle, 10)["perplexity"] == pytest.approx(1.0, abs=1e-12)
    assert perplexity_of_ids(BigramLM(successor), cycle[::-1], 10)["nll_per_token"] == pytest.approx(100.0, rel=1e-9)


def test_corpus_ids_are_the_first_tokens_of_the_whole_text(tokenizer, bos_tokenizer, shared_data_dir):
    text = read_text(resolve_data_file("wikitext2_test", shared_data_dir).path)
    assert text.startswith(" \n = Robert <unk> = \n") and len(text) == 1_255_018  # WikiText-2 v1, test
    whole = tokenizer(text[:20_000], add_special_tokens=False).input_ids
    assert corpus_ids(tokenizer, text[:20_000], 500) == whole[:500]
    with pytest.raises(ValueError, match=f"only {len(whole)} tokens.*perplexity_tokens"):
        corpus_ids(tokenizer, text[:20_000], len(whole) + 1)
    assert special_prefix(tokenizer) == [] and special_prefix(bos_tokenizer) == [bos_tokenizer.bos_token_id]


def test_rows_name_corpus_budget_and_window(tiny_llama, tokenizer, shared_data_dir):
    rows = corpus_perplexity_rows(tiny_llama, tokenizer, tokens=300, window=64, data_dir=shared_data_dir)
    by_metric = {row["metric"]: row for row in rows}
    assert {row["protocol"] for row in rows} == {"perplexity/wikitext2-test/tokens300/window64"}
    assert by_metric["perplexity"]["value"] == math.exp(by_metric["nll_per_token"]["value"])
    assert by_metric["perplexity_predicted_tokens"]["value"] == 300 - 5  # windows of 64, 64, 64, 64, 44
    text = read_text(resolve_data_file("wikitext2_test", shared_data_dir).path)
    ids = tokenizer(text, add_special_tokens=False).input_ids[:300]
    assert by_metric["nll_per_token"]["value"] == pytest.approx(plain_forward_nll(tiny_llama, ids, 64)[0], rel=1e-5)
    assert corpus_perplexity_rows(tiny_llama, tokenizer, tokens=0, data_dir=shared_data_dir) == []


def test_a_window_longer_than_the_model_is_refused_with_the_key():
    with pytest.raises(ValueError, match="perplexity_window = 65.*at most 64"):
        perplexity_of_ids(BigramLM(torch.zeros(5, 5)), [1, 2, 3], window=65)


def test_missing_corpus_file_is_a_one_line_error_naming_it(tiny_llama, tokenizer, tmp_path):
    with pytest.raises(DataError) as error:
        corpus_perplexity_rows(tiny_llama, tokenizer, tokens=100, data_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "corpus" / "wikitext-2" / "wiki.test.tokens.gz") in message
    assert message.startswith("perplexity corpus: wikitext2_test:")
