"""Downstream evaluation (algorithms.md §8): prompt formats, answer parsing, metrics, both protocols."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from encore.evaluation import protocols
from encore.evaluation.downstream import (
    INVALID,
    TASKS,
    build_prompt,
    classification_metrics,
    evaluate_task,
    evaluate_tasks,
    gold_label,
    load_task,
    parse_generation,
    render_query,
    render_shot,
)
from encore.models.tokens import encode


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models gain nothing from threads, and on a busy 2-core machine two threads are ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (task, which pool item is rendered as a shot, expected shot, expected query of the first test item)
EXPECTED = [
    ("sst2", 1,
     "Review : try as i may , i ca n't think of a single good reason to see this movie , even though everyone in "
     "my group extemporaneously shouted , ` thank you ! ' \nSentiment : negative\n",
     # no space after "Review :" in the query (reference quirk)
     "Review :what better message than ` love thyself ' could young women of any size receive ? \nSentiment :"),
    ("mrpc", 1,
     "Are the sentences paraphrases of each other.\n"
     "Sentence 1: In the year-ago quarter , the steelmaker recorded a profit of $ 16.2 million , or 15 cents per "
     "share , on sales of $ 1.14 billion .\n"
     "Sentence 2: In the second quarter last year , AK Steel reported a profit of $ 16.2 million , or 15 cents "
     "a share .\nAnswer: No\n",
     "Are the sentences paraphrases of each other.\n"
     "Sentence 1: \" The idea that Tony Abbott is in some way a one-dimensional political head-kicker couldn 't be "
     "more wrong , \" Mr Howard said .\n"
     "Sentence 2: \" The idea that Tony Abbott is in some way a one-dimensional political head kicker couldn 't be "
     "more wrong . \"\nAnswer:"),
    ("cola", 0,
     "Is this sentence linguistically acceptable?\nSentence: The evidence assembled by the prosecution convinced "
     "the jury.\nAnswer: Yes\n",
     # trailing space after the cue in the query
     "Is this sentence linguistically acceptable?\nSentence: That is the reason why he resigned.\nAnswer: "),
    ("rte", 0,
     # GLUE label 1 (not_entailment) is rendered "True" (reference quirk)
     "The town is also home to the Dalai Lama and to more than 10,000 Tibetans living in exile.\n"
     "question: The Dalai Lama has been living in exile since 10,000. True or False?\nanswer: True\n",
     "The latest attacks targeted the U-S embassy and a top prosecutor's office in the Uzbek capital.\n"
     "question: Yesterday's terrorist bombings killed two people at the entrance to the Israeli Embassy in "
     "Uzbekistan's capital. True or False?\nanswer:"),
    ("nli", 0,
     "Turkey is unlikely to become involved in, or allow U.S. forces to use Turkish territory in a Middle East "
     "war that does not threaten her territory directly. entails the U.S. to use Turkish military bases. "
     "True or False? Answer: False\n",
     "Wal-Mart has received a lot of negative publicity recently, including allegations that it used illegal "
     "workers and made employees work without pay during lunch breaks, as well as complaints that it generally "
     "underpays employees. entails the Wal-Mart complains about negative publicity. True or False? Answer:"),
    ("mmlu", 0,
     "Question: Which expression is equivalent to 4 x 9?\n(A) (4x 4) + (4x5)\n(B) (4+4) x (4+5)\n"
     "(C) (4+4)+(4+5)\n(D) (4x 4) x (4x5)\nAnswer: A\n",
     "Question: According to the levels of processing model of memory, words and other information may be "
     "encoded at different levels, with _______ processing being the deepest level.\n"
     "(A) orthographic\n(B) phonemic\n(C) semantic\n(D) perceptual\nAnswer:"),
]  # fmt: skip


@pytest.mark.parametrize("task, shot_index, shot, query", EXPECTED, ids=[row[0] for row in EXPECTED])
def test_prompts_follow_the_reference_format(shared_data_dir, task, shot_index, shot, query):
    pool, tests = load_task(task, shared_data_dir)
    assert len(pool) == 10
    assert render_shot(task, pool[shot_index]) == shot
    assert render_query(task, tests[0]) == query
    expected_prompt = "".join(render_shot(task, item) for item in pool[:4]) + query
    assert build_prompt(task, tests[0], pool, shots=4) == expected_prompt


def test_gold_labels_and_rte_verbalisation(shared_data_dir):
    rte_pool, _ = load_task("rte", shared_data_dir)
    assert rte_pool[0]["label"] == 1 and render_shot("rte", rte_pool[0]).endswith("answer: True\n")
    assert rte_pool[1]["label"] == 0 and render_shot("rte", rte_pool[1]).endswith("answer: False\n")
    assert gold_label("nli", {"label": "entailment"}) == 1
    assert gold_label("nli", {"label": "not_entailment"}) == 0
    assert gold_label("mmlu", {"answer": 2}) == 2


def test_context_budget_keeps_a_prefix_of_the_shots(shared_data_dir, tokenizer):
    pool, tests = load_task("mrpc", shared_data_dir)
    query = render_query("mrpc", tests[0])
    two_shots = render_shot("mrpc", pool[0]) + render_shot("mrpc", pool[1])
    budget = len(encode(tokenizer, two_shots + query))
    assert build_prompt("mrpc", tests[0], pool, 4, tokenizer, budget) == two_shots + query
    assert build_prompt("mrpc", tests[0], pool, 4, tokenizer, budget - 1) == render_shot("mrpc", pool[0]) + query
    # a query longer than the budget loses its beginning but keeps the answer cue
    short = build_prompt("mrpc", tests[0], pool, 4, tokenizer, 20)
    assert short.endswith("\nAnswer:") and query.endswith(short)
    assert len(encode(tokenizer, short)) <= 20 < len(encode(tokenizer, query[-len(short) - 1 :]))


@pytest.mark.parametrize(
    "task, text, expected",
    [
        ("sst2", "positive", 1),
        ("sst2", " Positive.", 1),
        ("sst2", " NEGATIVE", 0),
        ("sst2", "neg", INVALID),
        ("sst2", " positive\nReview :bad\nSentiment : negative", 0),  # text after the last cue counts
        ("sst2", "#@! zzz", INVALID),
        ("mrpc", " Yes", 1),
        ("mrpc", " Not", 0),  # substring search: "not" contains "no" (faithful)
        ("cola", "yes.", 1),
        ("rte", " False", 0),
        ("rte", " true", 1),
        ("rte", " True or False", 0),  # "false" is tried first for RTE
        ("nli", " True or False", 1),  # ... and "true" first for NLI
        ("nli", "maybe", INVALID),
        ("mmlu", "\nB\n", 1),
        ("mmlu", " c\n", 2),
        ("mmlu", " B", INVALID),  # a letter needs a newline after it
        ("mmlu", "", INVALID),
    ],
)
def test_parser_follows_the_authors_rules(task, text, expected):
    assert parse_generation(task, text) == expected


def test_weighted_f1_counts_invalid_answers_as_wrong():
    labels = [1, 1, 0, 0]
    predictions = [1, INVALID, 0, 1]
    # class 1: TP 1, FP 1, FN 1 -> F1 1/2; class 0: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3; supports 2 and 2
    result = classification_metrics(labels, predictions)
    assert result["f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["invalid"] == 1
    # an invalid answer is not silently mapped to a class: reading it as 0 would give F1 1/2
    assert classification_metrics(labels, [1, 0, 0, 1])["f1"] == pytest.approx(0.5)
    assert classification_metrics(labels, labels) == {"f1": 1.0, "accuracy": 1.0, "mcc": 1.0, "invalid": 0}


def test_unknown_task_and_missing_or_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"'squad'.*sst2, mrpc, cola, rte, nli, mmlu"):
        load_task("squad", tmp_path)
    with pytest.raises(FileNotFoundError) as missing:
        load_task("sst2", tmp_path)
    assert str(tmp_path / "downstream" / "sst2.jsonl") in str(missing.value)
    assert "ENCORE_DATA_DIR" in str(missing.value)
    (tmp_path / "downstream").mkdir()
    lines = [{"sentence": "fine", "label": 1}, {"sentence": "bad"}, {"sentence": "x", "label": 0}]
    (tmp_path / "downstream" / "sst2.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(ValueError, match=r"sst2\.jsonl:2: missing field 'label'"):
        load_task("sst2", tmp_path)


def test_evaluate_task_end_to_end_on_tiny_gpt2(tiny_gpt2, tokenizer, shared_data_dir):
    for task in TASKS:
        result = evaluate_task(tiny_gpt2, tokenizer, task, shared_data_dir, n_tests=4, batch_size=4)
        assert result["task"] == task and result["n"] == 4 and result["seconds"] > 0
        assert set(result["generate"]) == {"f1", "accuracy", "mcc", "invalid"}
        assert set(result["loglik"]) == {"f1", "accuracy"}
        assert 0 <= result["generate"]["invalid"] <= 4
        for key in ("generate", "loglik"):
            assert 0.0 <= result[key]["f1"] <= 1.0 and result[key]["accuracy"] in (0, 0.25, 0.5, 0.75, 1.0)


def test_evaluate_tasks_gives_rows_of_every_task_and_their_average_f1(tiny_gpt2, tokenizer, shared_data_dir):
    table, _ = evaluate_tasks(tiny_gpt2, tokenizer, shared_data_dir, tasks=("sst2", "rte"), n_tests=2)
    assert list(table.columns) == ["task", "metric", "value", "protocol"]
    for protocol, metrics in (
        (protocols.DOWNSTREAM_GENERATE, {"f1", "accuracy", "mcc", "invalid"}),
        (protocols.DOWNSTREAM_LOGLIK, {"f1", "accuracy"}),
    ):
        rows = table[table.protocol == protocol]
        per_task = rows[rows.task != "average"]
        assert set(per_task.task) == {"sst2", "rte"} and set(per_task.metric) == metrics
        average = rows[rows.task == "average"]
        assert list(average.metric) == ["f1_x100"]
        expected = 100 * per_task[per_task.metric == "f1"].value.mean()
        assert average.value.iloc[0] == pytest.approx(expected)
    assert not table.value.isna().any() and isinstance(table, pd.DataFrame)


def test_per_item_predictions_recompute_every_metric_row(tiny_gpt2, tokenizer, shared_data_dir):
    """The published per-item frame is what the metrics were computed from: F1, accuracy, MCC and invalid
    recomputed from its labels and predictions equal the metric rows, for both protocols, item by item."""
    table, items = evaluate_tasks(tiny_gpt2, tokenizer, shared_data_dir, tasks=("sst2", "mmlu"), n_tests=6)
    assert list(items.columns) == ["task", "item", "label", "prediction", "protocol"]
    assert len(items) == 2 * 2 * 6  # tasks x protocols x items
    for (task, protocol), rows in items.groupby(["task", "protocol"]):
        assert list(rows["item"]) == list(range(6))
        pool, tests = load_task(task, shared_data_dir)
        assert list(rows["label"]) == [gold_label(task, item) for item in tests[:6]]
        recomputed = classification_metrics(list(rows["label"]), list(rows["prediction"]))
        reported = table[(table.task == task) & (table.protocol == protocol)].set_index("metric")["value"]
        for metric, value in reported.items():
            assert value == pytest.approx(recomputed[metric]), (task, protocol, metric)
    loglik = items[items.protocol == protocols.DOWNSTREAM_LOGLIK]
    assert (loglik["prediction"] >= 0).all()  # the log-likelihood class is never invalid
