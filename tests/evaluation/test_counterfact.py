"""CounterFact metrics: answer NLL is exact (vs. direct forwards and a hand-computable bigram model),
batch-invariant, scores exactly the answer tokens, and ES/PS/NS/S aggregate as defined (§7.2)."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import SCORING_ANSWERS as ANSWERS
from conftest import SCORING_PROMPTS as PROMPTS
from scipy.stats import hmean

import encore.evaluation.counterfact as metrics
from encore.data.datasets import EditRecord
from encore.evaluation.counterfact import answer_nll, counterfact_record_scores, summarise_counterfact
from encore.models.tokens import answer_token_ids, encode


def direct_nll(model, tokenizer, prompt, answer):
    """Unbatched reference: full logits of prompt + answer, scored at exactly the answer tokens."""
    prompt_ids, answer_ids = encode(tokenizer, prompt), answer_token_ids(tokenizer, answer)
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    terms = [log_probs[len(prompt_ids) - 1 + j, token] for j, token in enumerate(answer_ids)]
    return -float(sum(terms)) / len(answer_ids)


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_answer_nll_equals_direct_computation(request, model_name, tok_name):
    model, tok = request.getfixturevalue(model_name), request.getfixturevalue(tok_name)
    if tok_name == "bos_tokenizer":  # BOS leads the prompt and is never among the scored tokens
        assert all(encode(tok, p)[0] == tok.bos_token_id for p in PROMPTS)
        assert all(tok.bos_token_id not in answer_token_ids(tok, a) for a in ANSWERS)
    assert len({len(encode(tok, p)) for p in PROMPTS}) == len(PROMPTS)  # different lengths
    got = answer_nll(model, tok, PROMPTS, ANSWERS, batch_size=64)
    expected = torch.tensor([direct_nll(model, tok, p, a) for p, a in zip(PROMPTS, ANSWERS)], dtype=torch.float64)
    assert got.shape == (len(PROMPTS),)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_bos_and_plain_tokenizers_score_the_same_answer_tokens(tokenizer, bos_tokenizer):
    for answer in ANSWERS:
        assert answer_token_ids(bos_tokenizer, answer) == answer_token_ids(tokenizer, answer)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_batch_size_invariance(request, tokenizer, model_name):
    model = request.getfixturevalue(model_name)
    prompts = PROMPTS * 3
    answers = ANSWERS[1:] + ANSWERS[:1] + ANSWERS + ANSWERS[2:] + ANSWERS[:2]
    reference = answer_nll(model, tokenizer, prompts, answers, batch_size=1)
    for batch_size in (4, 64):
        got = answer_nll(model, tokenizer, prompts, answers, batch_size=batch_size)
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)


class BigramLM(torch.nn.Module):
    """Next-token logits depend only on the current token: logits(x_t) = table[x_t]."""

    def __init__(self, table: torch.Tensor, softcap: float | None = None):
        super().__init__()
        vocab = table.shape[0]
        self.embed = torch.nn.Embedding(vocab, vocab, _weight=table.clone())
        self.head = torch.nn.Linear(vocab, vocab, bias=False, dtype=table.dtype)
        self.head.weight.data = torch.eye(vocab, dtype=table.dtype)
        self.config = SimpleNamespace(final_logit_softcapping=softcap)

    def base_model(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))

    def get_output_embeddings(self):
        return self.head


def hand_nll(table, prev_token, answer_ids, softcap=None):
    """-(1/m) Σ_j [z(prev_j, a_j) - log Σ_v exp z(prev_j, v)], with plain Python floats."""
    total = 0.0
    for token in answer_ids:
        row = table[prev_token].tolist()
        if softcap:
            row = [softcap * math.tanh(z / softcap) for z in row]
        total += row[token] - math.log(sum(math.exp(z) for z in row))
        prev_token = token
    return -total / len(answer_ids)


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer"])
def test_answer_nll_of_bigram_model_matches_hand_computation(request, tok_name, softcap):
    tok = request.getfixturevalue(tok_name)
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(len(tok), len(tok), generator=generator, dtype=torch.float64) * 3
    model = BigramLM(table, softcap)
    got = answer_nll(model, tok, PROMPTS, ANSWERS, batch_size=2)
    assert got.dtype == torch.float64
    for value, prompt, answer in zip(got.tolist(), PROMPTS, ANSWERS):
        answer_ids = answer_token_ids(tok, answer)
        expected = hand_nll(table, encode(tok, prompt)[-1], answer_ids, softcap)
        assert value == pytest.approx(expected, abs=1e-9)
    # a one-token answer after a one-token context: exactly -log softmax(table[prev])[answer]
    single = answer_nll(model, tok, ["In"], ["the"])[0].item()
    prev, (answer_token,) = encode(tok, "In")[-1], answer_token_ids(tok, "the")
    row = table[prev] if softcap is None else softcap * torch.tanh(table[prev] / softcap)
    assert single == pytest.approx(-(row[answer_token] - torch.logsumexp(row, 0)).item(), abs=1e-12)


def test_empty_prompt_without_bos_is_rejected(tokenizer, tiny_gpt2):
    with pytest.raises(ValueError, match="no tokens"):
        answer_nll(tiny_gpt2, tokenizer, [""], ["Paris"])


def record(case_id, paraphrases, neighborhood):
    return EditRecord(case_id=case_id, subject=f"S{case_id}", prompt="{} rewrite", target_new="new",
                      target_true="true", paraphrase_prompts=paraphrases, neighborhood_prompts=neighborhood)  # fmt: skip


def test_scores_and_summary_on_a_constructed_case(monkeypatch):
    # NLL[(prompt, answer)], chosen so that ES = 1/2, PS = 3/4, NS = 1/4 over two records.
    nll = {
        ("S1 rewrite", "new"): 0.5, ("S1 rewrite", "true"): 1.0,  # ES hit
        ("p1a", "new"): 0.1, ("p1a", "true"): 0.2,  # PS hit
        ("p1b", "new"): 0.3, ("p1b", "true"): 0.9,  # PS hit
        ("n1a", "new"): 0.2, ("n1a", "true"): 0.4,  # NS miss
        ("n1b", "new"): 0.7, ("n1b", "true"): 0.7,  # NS miss (tie)
        ("S2 rewrite", "new"): 2.0, ("S2 rewrite", "true"): 2.0,  # ES miss (tie)
        ("p2a", "new"): 0.4, ("p2a", "true"): 0.1,  # PS miss
        ("p2b", "new"): 0.2, ("p2b", "true"): 0.6,  # PS hit
        ("n2a", "new"): 0.9, ("n2a", "true"): 0.3,  # NS hit
        ("n2b", "new"): 0.1, ("n2b", "true"): 1.5,  # NS miss
    }  # fmt: skip
    calls = []

    top1 = {("S1 rewrite", "true"), ("p1a", "new"), ("n1a", "true"), ("n2a", "true"), ("n2b", "true")}

    def fake_answer_nll_and_top1(model, tokenizer, prompts, answers, batch_size=64, description=None):
        calls.append(len(prompts))
        values = torch.tensor([nll[(p, a)] for p, a in zip(prompts, answers)], dtype=torch.float64)
        return values, torch.tensor([(p, a) in top1 for p, a in zip(prompts, answers)])

    monkeypatch.setattr(metrics, "answer_nll_and_top1", fake_answer_nll_and_top1)
    records = [record(1, ["p1a", "p1b"], ["n1a", "n1b"]), record(2, ["p2a", "p2b"], ["n2a", "n2b"])]
    scores = counterfact_record_scores(None, None, records)
    assert calls == [20]  # every prompt × {new, true} of every record in one call
    assert scores["case_id"].tolist() == [1, 2]
    assert scores["es"].tolist() == [1.0, 0.0]
    assert scores["ps"].tolist() == [1.0, 0.5]
    assert scores["ns"].tolist() == [0.0, 0.5]
    P = lambda prompt, answer: math.exp(-nll[(prompt, answer)])  # noqa: E731
    assert scores["es_diff"][0] == pytest.approx(P("S1 rewrite", "new") - P("S1 rewrite", "true"))
    ps_diff = (P("p2a", "new") - P("p2a", "true") + P("p2b", "new") - P("p2b", "true")) / 2
    ns_diff = (P("n2a", "true") - P("n2a", "new") + P("n2b", "true") - P("n2b", "new")) / 2
    assert scores["ps_diff"][1] == pytest.approx(ps_diff)
    assert scores["ns_diff"][1] == pytest.approx(ns_diff)
    assert scores["p_new_rewrite"][1] == pytest.approx(math.exp(-2.0))
    assert scores["p_true_rewrite"][0] == pytest.approx(math.exp(-1.0))
    # top-1 counts from the same pass: new answers for rewrite/paraphrases, true answers for neighbours
    assert scores["es_top1"].tolist() == [0.0, 0.0] and scores["ps_top1_hits"].tolist() == [1, 0]
    assert scores["ns_top1_hits"].tolist() == [1, 2] and scores["true_top1_rewrite"].tolist() == [True, False]

    summary = summarise_counterfact(scores)
    assert (summary["ES"], summary["PS"], summary["NS"]) == (50.0, 75.0, 25.0)
    assert summary["S"] == pytest.approx(3 / (1 / 50 + 1 / 75 + 1 / 25))
    assert summary["S"] == pytest.approx(hmean([50, 75, 25]))
    assert summary["ES_diff"] == pytest.approx(100 * scores["es_diff"].mean())
    assert summary["NS_diff"] == pytest.approx(100 * scores["ns_diff"].mean())
    assert summary["n_records"] == 2


def frame(es, ps, ns):
    return metrics.pd.DataFrame(
        {"es": [es], "ps": [ps], "ns": [ns], "es_diff": [0.1], "ps_diff": [0.0], "ns_diff": [-0.1]}
    )


def test_score_is_zero_when_one_metric_is_zero():
    summary = summarise_counterfact(frame(1.0, 0.5, 0.0))
    assert summary["S"] == 0.0 and summary["NS"] == 0.0


def test_paper_rebuttal_check_value():
    assert summarise_counterfact(frame(0.8503, 0.7506, 0.4908))["S"] == pytest.approx(65.99, abs=0.005)


def test_record_scores_on_a_real_model_agree_with_answer_nll(tiny_gpt2, bos_tokenizer):
    model = tiny_gpt2
    records = [
        EditRecord(case_id=7, subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
                   target_true="French", paraphrase_prompts=["Darrieux speaks", "In Paris she spoke"],
                   neighborhood_prompts=["Tokyo people speak", "The language of Rome is", "Berlin speaks"]),
    ]  # fmt: skip
    row = counterfact_record_scores(model, bos_tokenizer, records, batch_size=3).iloc[0]
    rec = records[0]

    def nll(prompts, answer):
        return answer_nll(model, bos_tokenizer, prompts, [answer] * len(prompts), batch_size=1)

    assert row["es"] == float(nll([rec.rewrite_prompt], "English")[0] < nll([rec.rewrite_prompt], "French")[0])

    def hit_rate(prompts, better, worse):
        return (nll(prompts, better) < nll(prompts, worse)).double().mean().item()

    assert row["ps"] == pytest.approx(hit_rate(rec.paraphrase_prompts, "English", "French"))
    assert row["ns"] == pytest.approx(hit_rate(rec.neighborhood_prompts, "French", "English"))
    assert row["p_new_rewrite"] == pytest.approx(math.exp(-nll([rec.rewrite_prompt], "English")[0].item()), abs=1e-6)
    assert row["p_true_rewrite"] == pytest.approx(math.exp(-nll([rec.rewrite_prompt], "French")[0].item()), abs=1e-6)


@pytest.mark.parametrize("tok_name", ["tokenizer", "bos_tokenizer", "sp_tokenizer"])
def test_scored_tokens_are_the_answer_tokens_of_the_joined_text(request, tok_name):
    """For every tokenizer family (byte-level BPE without BOS like GPT-2/SmolLM2/Qwen, with BOS like
    Llama-3/Gemma, SentencePiece "▁" pieces with BOS like Llama-2) the scored ids are exactly the ids the
    model sees for the answer in prompt + " " + answer, and never include BOS."""
    tok = request.getfixturevalue(tok_name)
    for prompt, answer in zip(PROMPTS, ANSWERS):
        answer_ids = answer_token_ids(tok, answer)
        assert encode(tok, prompt) + answer_ids == encode(tok, f"{prompt} {answer}")
        assert tok.bos_token_id is None or tok.bos_token_id not in answer_ids
        assert tok.decode(answer_ids).strip() == answer


def test_sentencepiece_family_nll_is_exact_on_a_hand_computable_model(sp_tokenizer):
    from conftest import make_tiny_llama

    assert all(encode(sp_tokenizer, p)[0] == sp_tokenizer.bos_token_id for p in PROMPTS)
    table = (
        torch.randn(
            len(sp_tokenizer), len(sp_tokenizer), generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
        * 3
    )
    got = answer_nll(BigramLM(table), sp_tokenizer, PROMPTS, ANSWERS, batch_size=2)
    for value, prompt, answer in zip(got.tolist(), PROMPTS, ANSWERS):
        expected = hand_nll(table, encode(sp_tokenizer, prompt)[-1], answer_token_ids(sp_tokenizer, answer))
        assert value == pytest.approx(expected, abs=1e-9)
    model = make_tiny_llama(len(sp_tokenizer))
    got = answer_nll(model, sp_tokenizer, PROMPTS, ANSWERS, batch_size=3)
    expected = torch.tensor(
        [direct_nll(model, sp_tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)], dtype=torch.float64
    )
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_nll_and_top1_from_one_pass_equal_the_separate_scorers(tiny_gpt2, tokenizer):
    from encore.evaluation.counterfact import answer_nll_and_top1
    from encore.evaluation.zsre import answer_token_accuracy

    model = tiny_gpt2.double()
    prompts = ["The capital of France is", "Paris is the capital of", "The mother tongue of Danielle Darrieux is"]
    answers = ["Paris", "France and Italy", "French"]
    nll, top1 = answer_nll_and_top1(model, tokenizer, prompts, answers, batch_size=2)
    torch.testing.assert_close(nll, metrics.answer_nll(model, tokenizer, prompts, answers), rtol=1e-12, atol=1e-12)
    assert top1.tolist() == (answer_token_accuracy(model, tokenizer, prompts, answers) == 1.0).tolist()


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "gemma3-window4"])
def test_shared_prompt_scoring_equals_one_whole_forward_per_answer(architecture, bos_tokenizer):
    """Each prompt runs once and multi-token answers continue from its recorded keys/values; the NLLs equal
    a plain forward of prompt + answer for every (prompt, answer), sliding windows shorter than the prompts
    included."""
    from conftest import make_tiny_gemma3, make_tiny_gpt2, make_tiny_llama

    makers = {"llama": make_tiny_llama, "gpt2": make_tiny_gpt2,
              "gemma3-window4": lambda vocab: make_tiny_gemma3(vocab, window=4)}  # fmt: skip
    model = makers[architecture](len(bos_tokenizer)).double()
    prompts = ["The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the", "Paris"] * 2
    answers = ["French", "English and Italian", "piano", "guitar of the", "is a city", "London"]
    got = metrics.answer_nll(model, bos_tokenizer, prompts, answers, batch_size=2)
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        prompt_ids, answer_ids = encode(bos_tokenizer, prompt), answer_token_ids(bos_tokenizer, answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + answer_ids[:-1]])).logits[0].double()
        log_probs = torch.log_softmax(logits, dim=-1)
        expected = -sum(log_probs[len(prompt_ids) - 1 + j, t] for j, t in enumerate(answer_ids)) / len(answer_ids)
        assert float(got[i]) == pytest.approx(float(expected), rel=1e-9, abs=1e-9)
