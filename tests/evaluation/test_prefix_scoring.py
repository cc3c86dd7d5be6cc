"""The cached-prefix scorer equals scoring each whole prompt alone (HF greedy generate, answer_nll)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_gemma3

from encore.evaluation.counterfact import answer_nll
from encore.evaluation.downstream import FORMATS, GEN_LEN, load_task, predict, prompt_parts
from encore.evaluation.prefix_scoring import _split, score_with_shared_prefix
from encore.models.tokens import encode


def _alone(model, tokenizer, prompt: str, words: list[str], stem: str):
    """Reference: unbatched, uncached greedy generation and per-word answer_nll of one prompt."""
    ids = torch.tensor([encode(tokenizer, prompt)])
    output = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=GEN_LEN,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    text = tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
    return text, answer_nll(model, tokenizer, [stem] * len(words), words)


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
@pytest.mark.parametrize("task", ["sst2", "cola", "mmlu"])
def test_cached_prefix_equals_each_prompt_scored_alone(request, tok_name, task, tiny_model, shared_data_dir):
    tok = request.getfixturevalue(tok_name)
    pool, tests = load_task(task, shared_data_dir)
    parts = [prompt_parts(task, item, pool, shots=2, tokenizer=tok, max_tokens=250) for item in tests[:5]]
    assert len({len(encode(tok, q)) for _, q in parts}) > 1  # batches really are padded
    words = list(FORMATS[task].label_words)
    assert any(len(tok(" " + w, add_special_tokens=False).input_ids) > 1 for w in words) or task == "mmlu"
    stems = [q[:-1] if q.endswith(" ") else q for _, q in parts]
    scores = score_with_shared_prefix(
        tiny_model, tok, [c for c, _ in parts], [q for _, q in parts], stems, words, GEN_LEN, batch_size=3
    )
    for i, (context, query) in enumerate(parts):
        text, nll = _alone(tiny_model, tok, context + query, words, context + stems[i])
        assert scores.generated[i] == text
        torch.testing.assert_close(scores.label_nll[i].float(), nll.float(), rtol=1e-4, atol=1e-4)
    generated, classes = predict(tiny_model, tok, task, parts, batch_size=2)
    assert generated == scores.generated and classes == scores.label_nll.argmin(1).tolist()


def test_a_context_merging_with_its_query_is_scored_unsplit(tokenizer, tiny_llama):
    text = "Review: Paris London\n"
    cut = next(
        k
        for k in range(1, len(text))
        if tuple(encode(tokenizer, text[:k])) != tuple(encode(tokenizer, text)[: len(encode(tokenizer, text[:k]))])
    )  # a token spans the cut
    assert _split(tokenizer, text[:cut], text[cut:]) == ((), encode(tokenizer, text))
    head, rest = _split(tokenizer, text, "Sentiment:")
    assert head and list(head) + rest == encode(tokenizer, text + "Sentiment:")
    contexts, queries = [text[:cut], text], [text[cut:], "Sentiment:"]
    scores = score_with_shared_prefix(tiny_llama, tokenizer, contexts, queries, queries, ["Yes", "No"], 2)
    for i in range(2):
        _, nll = _alone(tiny_llama, tokenizer, contexts[i] + queries[i], ["Yes", "No"], contexts[i] + queries[i])
        torch.testing.assert_close(scores.label_nll[i].float(), nll.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [32, 512])
def test_sliding_window_models_equal_each_prompt_alone(bos_tokenizer, shared_data_dir, window):
    """Gemma-3 style: sliding-window layers count cache slots, so prompts longer than the window must not
    be padded; shorter ones may be."""
    model = make_tiny_gemma3(len(bos_tokenizer), window, bos_token_id=bos_tokenizer.bos_token_id, softcapping=None)
    pool, tests = load_task("sst2", shared_data_dir)
    parts = [prompt_parts("sst2", item, pool, shots=2, tokenizer=bos_tokenizer, max_tokens=250) for item in tests[:6]]
    assert max(len(encode(bos_tokenizer, c + q)) for c, q in parts) > 32
    words = list(FORMATS["sst2"].label_words)
    queries = [q for _, q in parts]
    scores = score_with_shared_prefix(
        model, bos_tokenizer, [c for c, _ in parts], queries, queries, words, GEN_LEN, batch_size=3
    )
    for i, (context, query) in enumerate(parts):
        text, nll = _alone(model, bos_tokenizer, context + query, words, context + query)
        assert scores.generated[i] == text
        torch.testing.assert_close(scores.label_nll[i].float(), nll.float(), rtol=1e-4, atol=1e-4)
