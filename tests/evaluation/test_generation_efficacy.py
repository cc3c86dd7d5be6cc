"""Generation-based efficacy (§7.6): greedy decoding starts with target_new, compared as ids.

A model whose greedy continuation is forced (a lookup table of successors) scores 100% when the table spells every
target and 0% when it gets any token of a target wrong; on tiny random models the batched, cached, left-padded decoding
equals one whole forward per step, and greedy exact match agrees fact by fact with teacher-forced top-1 (es_top1,
ps_top1_hits of counterfact_record_scores) on facts built to be hits, near misses and CounterFact's own; the config
key evaluation.generation_efficacy switches the part on at the snapshots it names and its rows recompute from the
records file."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, make_tiny_gpt2, make_tiny_llama

from encore.data.datasets import EditRecord, load_counterfact
from encore.data.record_formats import missing_metrics
from encore.evaluation.counterfact import counterfact_record_scores
from encore.evaluation.generation_efficacy import (
    generation_efficacy_of_records,
    greedy_token_ids,
    summarise_generation_efficacy,
)
from encore.models.tokens import answer_token_ids, encode
from encore.session import evaluate_model, write_evaluation

COUNTERFACT = "counterfact/counterfact_rome_schema_merged.json"
# prompts end in distinct tokens; targets of 1, 2 and 4 tokens (the tokenizer of tests/conftest.py)
FORCED_RECORDS = [
    EditRecord(case_id=1, subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="Japanese",
               target_true="French", paraphrase_prompts=["Danielle Darrieux was born speaking",
                                                         "Where Danielle Darrieux grew up, people spoke"]),
    EditRecord(case_id=2, subject="Toko Yasuda", prompt="{} plays the", target_new="Rome",
               target_true="guitar", paraphrase_prompts=["Toko Yasuda is known for her work on the instrument:"]),
    EditRecord(case_id=3, subject="Apple", prompt="{} was founded in", target_new="new album",
               target_true="California", paraphrase_prompts=[]),
]  # fmt: skip


def successor_model(vocab_size: int, table: dict[int, int], seed: int = 0):
    """A GPT-2 whose next token after token x is table[x], whatever came before: its one block adds nothing (zero
    output projections), positions add nothing, and the untied head's row of token v is the sum of the final-norm
    outputs of the tokens x with table[x] = v (logit ~ 128 there, ~N(0, 11) elsewhere)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=128, n_layer=1, n_head=4, n_positions=256,
                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(config).eval().requires_grad_(False)
    block = model.transformer.h[0]
    for projection in (block.attn.c_proj, block.mlp.c_proj):
        projection.weight.zero_()
        projection.bias.zero_()
    model.transformer.wpe.weight.zero_()
    model.transformer.wte.weight.normal_()
    normed = model.transformer.ln_f(model.transformer.wte.weight)
    model.lm_head.weight.zero_()
    for token, successor in table.items():
        model.lm_head.weight[successor] += normed[token]
    for token, successor in table.items():  # the construction holds: every listed token is followed by its successor
        assert int(model(torch.tensor([[token]])).logits[0, -1].argmax()) == successor
    return model


def spell(tokenizer, records, wrong_last: int | None = None) -> dict[int, int]:
    """Successor table: each prompt's last token -> the target's first token, each target token -> the next; with
    ``wrong_last`` every target's last token is replaced by that token (all tokens but the last stay right)."""
    table = {}

    def link(a, b):
        assert table.setdefault(a, b) == b, "the records' prompts and targets must not share tokens"

    for record in records:
        target = answer_token_ids(tokenizer, record.target_new)
        spelled = target[:-1] + [wrong_last] if wrong_last is not None else target
        for prompt in (record.rewrite_prompt, *record.paraphrase_prompts):
            link(encode(tokenizer, prompt)[-1], spelled[0])
        for a, b in zip(spelled, spelled[1:]):
            link(a, b)
        if wrong_last is None:
            link(spelled[-1], spelled[0])  # decoding goes on past the target (rows of a batch run as long as the
            # longest): what follows it does not count
    return table


def test_a_model_forced_to_say_the_targets_scores_100_and_one_wrong_token_scores_0(tokenizer):
    lengths = [len(answer_token_ids(tokenizer, r.target_new)) for r in FORCED_RECORDS]
    assert lengths == [1, 2, 4]
    forced = successor_model(len(tokenizer), spell(tokenizer, FORCED_RECORDS))
    scores = generation_efficacy_of_records(forced, tokenizer, FORCED_RECORDS)
    assert list(scores["es_gen"]) == [1.0, 1.0, 1.0] and list(scores["ps_gen_hits"]) == [2, 1, 0]
    assert list(scores["n_paraphrase"]) == [2, 1, 0]
    assert summarise_generation_efficacy(scores) == {"ES_gen": 100.0, "PS_gen": 100.0, "n_records": 3}
    # teacher-forced top-1 on the same model says the same
    top1 = counterfact_record_scores(forced, tokenizer, FORCED_RECORDS)
    assert list(top1["es_top1"]) == [1.0, 1.0, 1.0] and list(top1["ps_top1_hits"]) == [2, 1, 0]

    other = encode(tokenizer, " London")[-1]
    assert all(other not in answer_token_ids(tokenizer, r.target_new) for r in FORCED_RECORDS)
    wrong = successor_model(len(tokenizer), spell(tokenizer, FORCED_RECORDS, wrong_last=other))
    # every token but the last of each target is right: still a miss (exact match of all m tokens)
    for record in FORCED_RECORDS:
        target = answer_token_ids(tokenizer, record.target_new)
        decoded = greedy_token_ids(wrong, tokenizer, [record.rewrite_prompt], [len(target)])[0]
        assert decoded[:-1] == target[:-1] and decoded[-1] == other
    scores = generation_efficacy_of_records(wrong, tokenizer, FORCED_RECORDS)
    assert summarise_generation_efficacy(scores) == {"ES_gen": 0.0, "PS_gen": 0.0, "n_records": 3}
    assert scores["ps_gen_hits"].sum() == 0


def reference_greedy(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """One whole, unpadded forward per decoded token, no cache."""
    ids = encode(tokenizer, prompt)
    for _ in range(steps):
        with torch.no_grad():
            ids = ids + [int(model(torch.tensor([ids])).logits[0, -1].argmax())]
    return ids[-steps:]


def probe_records(model, tokenizer, records: list[EditRecord]) -> list[EditRecord]:
    """CounterFact's records, plus per record (where the text round-trips through the tokenizer) one whose target is
    the model's greedy continuation of its rewrite prompt (a hit) and one that shares only its first token (a near
    miss)."""
    built = list(records)
    for record in records:
        greedy = reference_greedy(model, tokenizer, record.rewrite_prompt, 3)
        for k in (3, 2, 1):
            text = tokenizer.decode(greedy[:k])
            if text.startswith(" ") and text.strip() and _ids(tokenizer, text) == greedy[:k]:
                built.append(dataclasses.replace(record, case_id=10_000 + record.case_id, target_new=text.strip()))
                near = text.strip() + " Kyoto"
                if _ids(tokenizer, near)[:k] == greedy[:k] and len(_ids(tokenizer, near)) > k:
                    built.append(dataclasses.replace(record, case_id=20_000 + record.case_id, target_new=near))
                break
    return built


def _ids(tokenizer, text):
    try:
        return answer_token_ids(tokenizer, text)
    except ValueError:
        return None


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_greedy_exact_match_agrees_with_teacher_forced_top1_fact_by_fact(architecture, tokenizer, shared_data_dir):
    model = (make_tiny_gpt2 if architecture == "gpt2" else make_tiny_llama)(len(tokenizer))
    records = probe_records(model, tokenizer, load_counterfact(shared_data_dir / COUNTERFACT)[:24])
    greedy = generation_efficacy_of_records(model, tokenizer, records)
    top1 = counterfact_record_scores(model, tokenizer, records)
    assert list(greedy["case_id"]) == list(top1["case_id"]) == [r.case_id for r in records]
    assert list(greedy["es_gen"]) == list(top1["es_top1"])
    assert list(greedy["ps_gen_hits"]) == list(top1["ps_top1_hits"])
    assert list(greedy["n_paraphrase"]) == list(top1["n_paraphrase"])
    built = greedy["case_id"] >= 10_000
    assert greedy.loc[greedy["case_id"].between(10_000, 19_999), "es_gen"].eq(1).all()  # the greedy targets: hits
    assert greedy.loc[greedy["case_id"] >= 20_000, "es_gen"].eq(0).all() and (greedy["case_id"] >= 20_000).any()
    assert 3 <= built.sum() and greedy["es_gen"].sum() >= 3 and not greedy["es_gen"].all()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_batched_cached_decoding_equals_one_whole_forward_per_token(architecture, bos_tokenizer, shared_data_dir):
    model = (make_tiny_gpt2 if architecture == "gpt2" else make_tiny_llama)(len(bos_tokenizer))
    records = load_counterfact(shared_data_dir / COUNTERFACT)[:8]
    prompts = [p for r in records for p in (r.rewrite_prompt, *r.paraphrase_prompts)]
    lengths = [1 + i % 4 for i in range(len(prompts))]  # rows of one batch stop at different lengths
    assert len({len(encode(bos_tokenizer, p)) for p in prompts}) > 5  # left padding of different widths
    expected = [reference_greedy(model, bos_tokenizer, p, n) for p, n in zip(prompts, lengths)]
    for batch_size in (1, 5, 64):
        assert greedy_token_ids(model, bos_tokenizer, prompts, lengths, batch_size=batch_size) == expected


def evaluate(model, tokenizer, records, tmp_path, final: bool, unedited: bool = False, dataset="counterfact",
             **evaluation):  # fmt: skip
    evaluation = {"generation": "none", "downstream": "none", "analysis": "none", "perplexity_tokens": 0, **evaluation}
    return evaluate_model(model, tokenizer, dataset=dataset, records=records, unedited=unedited, final=final,
                          evaluation=evaluation, data_dir=None, resources=tmp_path, seed=0)  # fmt: skip


@pytest.mark.parametrize("setting", ["none", "final", "all", None])
def test_the_config_key_switches_the_part_at_the_snapshots_it_names(setting, tiny_gpt2, tokenizer, shared_data_dir,
                                                                    tmp_path):  # fmt: skip
    records = load_counterfact(shared_data_dir / COUNTERFACT)[:6]
    switch = {} if setting is None else {"generation_efficacy": setting}  # None: the default, final
    for final, unedited in ((False, False), (True, False), (True, True)):
        result = evaluate(tiny_gpt2, tokenizer, records, tmp_path, final, unedited, **switch)
        subset = "to-be-edited" if unedited else "edited-so-far"
        protocol = f"counterfact/{subset}/greedy-exact-match"
        rows = {row["metric"]: row["value"] for row in result.rows if row["protocol"] == protocol}
        expected = {"none": False, "final": final, "all": True, None: final}[setting]
        assert bool(rows) == expected and (set(rows) == {"ES_gen", "PS_gen", "n_records"} or not expected)
        assert any(name.startswith("generation efficacy") for name in result.seconds) == expected
    schema = yaml.safe_load((REPO / "encore" / "schemas" / "config.schema.yaml").read_text())
    key = schema["properties"]["evaluation"]["properties"]["generation_efficacy"]
    assert key["default"] == "final" and key["enum"] == ["none", "final", "all"]


def test_rows_recompute_from_the_records_file_and_missing_paraphrases_are_named(tokenizer, shared_data_dir, tmp_path):
    records = FORCED_RECORDS + load_counterfact(shared_data_dir / COUNTERFACT)[:4]
    model = successor_model(len(tokenizer), spell(tokenizer, FORCED_RECORDS))  # hits on the first three
    result = evaluate(model, tokenizer, records, tmp_path, final=True)
    output = tmp_path / "metrics" / "edits_00007.csv"
    labels = {"method": "memit", "variant": "plain", "order": "0", "edits": 7}
    table = write_evaluation(result, output, labels=labels, experiment="t", model_name="tiny", dataset="counterfact",
                             provenance={})  # fmt: skip
    protocol = "counterfact/edited-so-far/greedy-exact-match"
    expected = table[table["protocol"] == protocol].set_index("metric")["value"]
    scores = pd.read_csv(Path(output).with_name("edits_00007.records.csv"))
    scores = scores[scores["protocol"] == protocol]
    assert list(scores["case_id"]) == [r.case_id for r in records] and set(scores["subset"]) == {"edited-so-far"}
    assert len(scores) == expected["n_records"] == len(records)
    assert 0 < expected["ES_gen"] < 100  # the forced facts hit, CounterFact's own (almost surely) not
    assert 100 * scores["es_gen"].mean() == pytest.approx(expected["ES_gen"], abs=1e-9)
    pooled = 100 * scores["ps_gen_hits"].sum() / scores["n_paraphrase"].sum()
    assert pooled == pytest.approx(expected["PS_gen"], abs=1e-9)

    bare = [dataclasses.replace(r, paraphrase_prompts=[]) for r in FORCED_RECORDS]
    assert missing_metrics(bare, "counterfact", generation=False, generation_efficacy=True)["PS_gen"] == (
        "no record has paraphrase (rephrase) prompts"
    )
    assert "PS_gen" not in missing_metrics(bare, "counterfact", generation=False)
    result = evaluate(model, tokenizer, bare, tmp_path, final=True)
    rows = {row["metric"]: row["value"] for row in result.rows if row["protocol"] == protocol}
    assert rows["ES_gen"] == 100.0 and pd.isna(rows["PS_gen"]) and "PS_gen" in result.skipped


def test_zsre_facts_are_scored_under_their_own_protocol(tiny_gpt2, tokenizer, shared_data_dir, tmp_path):
    from encore.data.datasets import load_zsre

    records = load_zsre(shared_data_dir / "zsre" / "zsre_mend_eval_subset_merged.json")[:5]
    result = evaluate(tiny_gpt2, tokenizer, records, tmp_path, final=True, dataset="zsre")
    protocols = {row["protocol"] for row in result.rows if row["metric"] in ("ES_gen", "PS_gen")}
    assert protocols == {"zsre/edited-so-far/greedy-exact-match"}
    frame = pd.concat(result.record_frames)
    assert len(frame[frame["protocol"] == "zsre/edited-so-far/greedy-exact-match"]) == len(records)
