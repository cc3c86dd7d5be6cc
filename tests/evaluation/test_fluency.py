"""Generation Entropy (§7.2): word tokens, n-gram entropies and their weighting, and top-k sampling that is
seeded per prompt (reproducible, batch-invariant), left padded, and exactly max_length tokens long."""

import math

import pytest
import torch

from encore.data.datasets import EditRecord
from encore.evaluation.fluency import (
    generation_entropy,
    generation_entropy_of_records,
    ngram_entropy,
    pick_top_k,
    prompt_seed,
    sample_generations,
    sample_token_ids,
    text_entropy,
    word_tokens,
)
from encore.models.tokens import encode


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when the machine is busy; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PROMPTS = ["The mother tongue of Danielle Darrieux is", "In", "Paris is the capital of"]


def test_ngram_entropy_hand_computed():
    assert ngram_entropy(["a"] * 6, 2) == 0.0
    assert ngram_entropy(list("abcde"), 2) == pytest.approx(2.0)  # 4 distinct equiprobable bigrams
    assert ngram_entropy(list("abcdefghi"), 3) == pytest.approx(math.log2(7))
    # bigrams (a,b) (b,a) (a,b): p = 2/3, 1/3
    assert ngram_entropy(list("abab"), 2) == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))
    assert ngram_entropy(["a", "b"], 3) == 0.0  # no trigram
    assert ngram_entropy([], 2) == 0.0


def test_generation_entropy_weighting():
    h2 = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)  # "a b a b": bigrams ab, ba, ab
    h3 = 1.0  # trigrams aba, bab
    e1 = (2 / 3 * h2 + 4 / 3 * h3) / 2
    assert text_entropy("a b a b") == pytest.approx(e1)
    e2 = (2 / 3 * 2.0 + 4 / 3 * math.log2(3)) / 2  # 5 distinct words: 4 bigrams, 3 trigrams
    assert text_entropy("one two three four five") == pytest.approx(e2)
    assert generation_entropy(["a b a b", "one two three four five"]) == pytest.approx((e1 + e2) / 2)
    assert generation_entropy(["same same same same"]) == 0.0
    assert math.isnan(generation_entropy([]))


def test_word_tokens_like_nltk_word_tokenize():
    assert word_tokens("Paris isn't the capital of Italy. It's France's capital, 3.5 km away!") == [
        "Paris", "is", "n't", "the", "capital", "of", "Italy", ".", "It", "'s", "France", "'s", "capital", ",",
        "3.5", "km", "away", "!",
    ]  # fmt: skip
    assert word_tokens('He said "hello" (twice)? Yes.') == [
        "He", "said", "``", "hello", "''", "(", "twice", ")", "?", "Yes", ".",
    ]  # fmt: skip
    assert word_tokens("I can't go; they'll see\nthe U.S. flag") == [
        "I",
        "ca",
        "n't",
        "go",
        ";",
        "they",
        "'ll",
        "see",
        "the",
        "U.S",
        ".",
        "flag",
    ]  # fmt: skip  (the abbreviation deviation: Punkt would keep "U.S.")
    assert word_tokens("") == []


def test_pick_top_k_inverse_cdf():
    probs = torch.tensor([[0.05, 0.5, 0.02, 0.3, 0.1, 0.03]])  # top 5 = 1, 3, 4, 0, 5; sum 0.98
    logits = probs.log().repeat(6, 1)
    cdf = [0.5 / 0.98, 0.8 / 0.98, 0.9 / 0.98, 0.95 / 0.98]
    u = torch.tensor([0.0, cdf[0] - 1e-6, cdf[0] + 1e-6, cdf[1] + 1e-6, cdf[3] + 1e-6, 1 - 1e-12])
    assert pick_top_k(logits, u, 5).tolist() == [1, 1, 3, 4, 5, 5]  # token 2 (outside the top 5) never
    assert pick_top_k(logits, u, 1).tolist() == [1] * 6


def direct_greedy(model, ids, max_length):
    ids = list(ids)
    with torch.no_grad():
        while len(ids) < max_length:
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_top1_sampling_equals_unbatched_greedy(request, model_name, tok_name):
    """top_k = 1 is greedy: left padding, position ids and the KV cache must reproduce an uncached forward."""
    model, tok = request.getfixturevalue(model_name), request.getfixturevalue(tok_name)
    lengths = [len(encode(tok, p)) for p in PROMPTS]
    assert len(set(lengths)) == len(PROMPTS)
    got = sample_token_ids(model, tok, PROMPTS, [0, 1, 2], max_length=20, top_k=1, batch_size=3)
    assert got == [direct_greedy(model, encode(tok, p), 20) for p in PROMPTS]


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
def test_sampling_is_seeded_batch_invariant_and_exact_length(request, tiny_llama, tok_name):
    tok = request.getfixturevalue(tok_name)
    for side in ("right", "left"):
        tok.padding_side = side
        first = sample_generations(tiny_llama, tok, PROMPTS, max_length=24, seed=3, batch_size=3)
        assert tok.padding_side == side
    assert sample_generations(tiny_llama, tok, PROMPTS, max_length=24, seed=3, batch_size=1) == first
    other = sample_generations(tiny_llama, tok, PROMPTS, max_length=24, seed=4, batch_size=3)
    assert all(a != b for a, b in zip(first, other))
    for prompt, text in zip(PROMPTS, first):
        assert text.startswith(prompt) and len(text) > len(prompt)
        assert "<s>" not in text

    seeds = [prompt_seed(3, i) for i in range(len(PROMPTS))]
    ids = sample_token_ids(tiny_llama, tok, PROMPTS, seeds, max_length=24, batch_size=2)
    assert [tok.decode(x, skip_special_tokens=True) for x in ids] == first
    for prompt, sequence in zip(PROMPTS, ids):
        prompt_ids = encode(tok, prompt)
        assert len(sequence) == 24 and sequence[: len(prompt_ids)] == prompt_ids
        # every sampled token is among the 5 most likely after its (uncached, unpadded) prefix
        with torch.no_grad():
            logits = tiny_llama(torch.tensor([sequence])).logits[0]
        for position in range(len(prompt_ids), 24):
            assert sequence[position] in logits[position - 1].topk(5).indices.tolist()
    # a prompt already longer than max_length is returned as it is
    assert sample_token_ids(tiny_llama, tok, PROMPTS[:1], [0], max_length=3) == [encode(tok, PROMPTS[0])]


def test_generation_entropy_of_records(tiny_gpt2, tokenizer):
    def rec(case_id, prompts):
        return EditRecord(case_id=case_id, subject="S", prompt="{} is", target_new="a", target_true="b",
                          generation_prompts=prompts)  # fmt: skip

    records = [rec(5, PROMPTS[:2]), rec(9, []), rec(11, PROMPTS[1:])]
    table = generation_entropy_of_records(tiny_gpt2, tokenizer, records, max_length=20, seed=1, batch_size=2)
    assert table.columns.tolist() == ["case_id", "ge"] and table["case_id"].tolist() == [5, 9, 11]
    assert math.isnan(table["ge"][1])
    for row, record in ((0, records[0]), (2, records[2])):
        seeds = [prompt_seed(1, f"{record.case_id}:{j}") for j in range(len(record.generation_prompts))]
        ids = sample_token_ids(tiny_gpt2, tokenizer, record.generation_prompts, seeds, max_length=20)
        texts = [tokenizer.decode(x, skip_special_tokens=True) for x in ids]
        assert table["ge"][row] == pytest.approx(generation_entropy(texts))
        assert table["ge"][row] > 0
    # a record's value does not depend on the other records in the call
    alone = generation_entropy_of_records(tiny_gpt2, tokenizer, records[2:], max_length=20, seed=1)
    assert alone["ge"][0] == pytest.approx(table["ge"][2])
