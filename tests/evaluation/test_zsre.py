"""zsRE metrics (§7.3): teacher-forced token top-1 accuracy equals a direct per-token argmax, scores exactly
the answer tokens (never BOS), and records/summary aggregate as defined, on a hand-made model."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import SCORING_ANSWERS as ANSWERS
from conftest import SCORING_PROMPTS as PROMPTS

from encore.data.datasets import EditRecord
from encore.evaluation.zsre import answer_token_accuracy, summarise_zsre, zsre_record_scores
from encore.models.tokens import answer_token_ids, encode


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when the machine is busy; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def direct_accuracy(model, tokenizer, prompt, answer):
    """Unbatched reference: one forward per answer token j on encode(prompt) + y_<j, argmax at the end."""
    prompt_ids, answer_ids = encode(tokenizer, prompt), answer_token_ids(tokenizer, answer)
    hits = 0
    with torch.no_grad():
        for j, token in enumerate(answer_ids):
            hits += int(model(torch.tensor([prompt_ids + answer_ids[:j]])).logits[0, -1].argmax()) == token
    return hits / len(answer_ids)


def greedy_text(model, tokenizer, prompt, n=4):
    ids = encode(tokenizer, prompt)
    start = len(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return tokenizer.decode(ids[start:])


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_accuracy_equals_direct_computation(request, model_name, tok_name):
    model, tok = request.getfixturevalue(model_name), request.getfixturevalue(tok_name)
    # the model's own greedy continuations as answers, so that some (not all) tokens are top-1
    prompts = PROMPTS + PROMPTS
    answers = ANSWERS + [greedy_text(model, tok, p) for p in PROMPTS]
    expected = [direct_accuracy(model, tok, p, a) for p, a in zip(prompts, answers)]
    assert any(0 < e for e in expected) and any(e < 1 for e in expected)
    for batch_size in (3, 64):
        got = answer_token_accuracy(model, tok, prompts, answers, batch_size=batch_size)
        assert got.dtype == torch.float64 and got.shape == (len(prompts),)
        assert got.tolist() == pytest.approx(expected, abs=1e-12)


class ArgmaxBigramLM(torch.nn.Module):
    """logits(x_t) = table[x_t]: the top-1 next token depends on the current token only; an all-zero row
    predicts token 0 (the end-of-text token, never part of an answer)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab, _weight=torch.zeros(vocab, vocab))
        self.head = torch.nn.Linear(vocab, vocab, bias=False)
        self.head.weight.data = torch.eye(vocab)
        self.config = SimpleNamespace()

    def enable(self, previous: int, following: int):
        self.embed.weight.data[previous, following] = 1.0

    def base_model(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))

    def get_output_embeddings(self):
        return self.head


NEW, LOC = "Paris London Rome", "Berlin Tokyo"


def zsre_record(case_id, rewrite_template, subject, paraphrases, neighborhood):
    return EditRecord(case_id=case_id, subject=subject, prompt=rewrite_template, target_new=NEW, target_true="x",
                      paraphrase_prompts=paraphrases, neighborhood_prompts=neighborhood,
                      neighborhood_target=LOC)  # fmt: skip


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
def test_records_and_summary_on_a_hand_made_model(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    new_ids, loc_ids = answer_token_ids(tok, NEW), answer_token_ids(tok, LOC)
    assert len(new_ids) == len(set(new_ids)) == 8 and len(loc_ids) == len(set(loc_ids)) == 8
    assert tok.bos_token_id not in new_ids + loc_ids
    model = ArgmaxBigramLM(len(tok))
    # inside the answers: NEW tokens 2, 3 and 5 and LOC token 1 are predicted from their predecessors
    for j in (2, 3, 5):
        model.enable(new_ids[j - 1], new_ids[j])
    model.enable(loc_ids[0], loc_ids[1])
    # the first answer token is predicted after prompts ending in " in", " at", " from" (NEW) and " is" (LOC)
    enabled = {"S1 is in": NEW, "Where is S1? It is at": NEW, "S1 came from": NEW, "Q1: the city is": LOC}
    for prompt, answer in enabled.items():
        model.enable(encode(tok, prompt)[-1], answer_token_ids(tok, answer)[0])

    records = [
        zsre_record(
            1, "{} is in", "S1", ["Where is S1? It is at", "S1 lies near", "S1 came from"], ["Q1: the city is"]
        ),
        zsre_record(2, "{} sits by", "S2", [], ["Q2 answer of"]),
    ]
    scores = zsre_record_scores(model, tok, records, batch_size=2)
    assert scores.columns.tolist() == ["case_id", "efficacy", "paraphrase", "specificity"]
    assert scores["case_id"].tolist() == [1, 2]
    assert scores["efficacy"].tolist() == pytest.approx([4 / 8, 3 / 8])
    assert scores["paraphrase"][0] == pytest.approx((4 / 8 + 3 / 8 + 4 / 8) / 3)
    assert math.isnan(scores["paraphrase"][1])
    assert scores["specificity"].tolist() == pytest.approx([2 / 8, 1 / 8])

    summary = summarise_zsre(scores)
    assert summary == pytest.approx({"ES": 43.75, "PS": 100 * 11 / 24, "NS": 18.75, "n_records": 2})


def test_missing_neighborhood_target_and_empty_prompt_are_rejected(tokenizer, tiny_gpt2):
    record = EditRecord(case_id=0, subject="S", prompt="{} is", target_new="Paris", target_true="Rome",
                        neighborhood_prompts=["Q is"])  # fmt: skip
    with pytest.raises(ValueError, match="neighborhood_target"):
        zsre_record_scores(tiny_gpt2, tokenizer, [record])
    with pytest.raises(ValueError, match="no tokens"):
        answer_token_accuracy(tiny_gpt2, tokenizer, [""], ["Paris"])
