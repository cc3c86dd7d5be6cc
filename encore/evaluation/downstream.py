"""Downstream (GLUE + MMLU) evaluation of an edited model, following the authors' ``glue_eval`` (algorithms.md §8).

Six tasks, each read from ``<data_dir>/downstream/<task>.jsonl``: the first 10 lines are the few-shot pool,
of which the first ``shots`` (4) are rendered with their answers (each block ends with "\\n") and
concatenated before the query; the test items are the following lines (the first ``n_tests``, 100).

Two protocols are computed on the same prompts:

* ``generate`` (plotted in the paper): greedy generation of 3 new tokens; the text after the last answer
  cue is searched case-insensitively for the label keywords (an answer matching none is invalid, -1);
  sklearn weighted F1 with -1 kept as its own class (invalid = wrong), accuracy, MCC, invalid count.
* ``loglik`` (the reference's ``f1_new``): the label word with the lowest mean per-token NLL after the
  prompt (as ``encore.evaluation.counterfact.answer_nll`` scores it); weighted F1 and accuracy.

Both come from one pass per batch with the few-shot context's key/value cache computed once per task
(``encore.evaluation.prefix_scoring``).

Quirks of the reference kept for comparable numbers (algorithms.md §13 #10) are marked "QUIRK".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import f1_score, matthews_corrcoef

from encore.evaluation import protocols
from encore.evaluation.prefix_scoring import score_with_shared_prefix
from encore.models.tokens import encode
from encore.progress import log

POOL_SIZE = 10  # glue_eval FEW_SHOT_TEST_SPLIT: the first 10 lines of each file are the few-shot pool
GEN_LEN = 3  # new tokens generated per test item (GLUEEval passes 3 to every task)
INVALID = -1


@dataclass(frozen=True)
class TaskFormat:
    """How one task is prompted and parsed.

    ``label_words[c]`` is the answer word of class ``c`` as the shots render it; ``keywords`` lists the
    lower-cased (keyword, class) pairs in the order the parser tries them; ``cue`` is the answer cue
    whose last occurrence starts the searched text (None: the whole generated text, MMLU).
    """

    fields: tuple[str, ...]
    label_words: tuple[str, ...]
    keywords: tuple[tuple[str, int], ...]
    cue: str | None


FORMATS: dict[str, TaskFormat] = {
    "sst2": TaskFormat(("sentence", "label"), ("negative", "positive"),
                       (("positive", 1), ("negative", 0)), "Sentiment :"),
    "mrpc": TaskFormat(("sentence1", "sentence2", "label"), ("No", "Yes"), (("yes", 1), ("no", 0)), "Answer:"),
    "cola": TaskFormat(("sentence", "label"), ("No", "Yes"), (("yes", 1), ("no", 0)), "Answer:"),
    # QUIRK (RTE): label 0 is verbalised "False" and 1 "True", although GLUE's 0 means entailment; the
    # parser maps "false" -> 0 (tried first) and "true" -> 1 accordingly. Kept for faithful numbers.
    "rte": TaskFormat(("sentence1", "sentence2", "label"), ("False", "True"),
                      (("false", 0), ("true", 1)), "answer:"),
    "nli": TaskFormat(("sentence1", "sentence2", "label"), ("False", "True"),
                      (("true", 1), ("false", 0)), "True or False? Answer:"),
    # QUIRK (MMLU): a letter counts only when followed by a newline inside the generated text, searched
    # lower-cased, so e.g. "data\n" also reads as "a". No cue split and no strip (it would eat the "\n").
    "mmlu": TaskFormat(("question", "choices", "answer"), ("A", "B", "C", "D"),
                       (("a\n", 0), ("b\n", 1), ("c\n", 2), ("d\n", 3)), None),
}  # fmt: skip
TASKS = tuple(FORMATS)  # the six tasks, in the authors' order


def _format(name: str) -> TaskFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown downstream task {name!r}; known: {', '.join(TASKS)}")
    return FORMATS[name]


# ---------------------------------------------------------------------------------------------- data


def _item_problem(name: str, item: dict) -> str | None:
    """A one-phrase description of what is wrong with ``item`` for task ``name``, or None."""
    for field in _format(name).fields:
        if field not in item:
            return f"missing field {field!r}"
    if name == "nli":
        if item["label"] not in ("entailment", "not_entailment"):
            return f"field 'label' must be 'entailment' or 'not_entailment', got {item['label']!r}"
    elif name == "mmlu":
        if not (isinstance(item["choices"], list) and len(item["choices"]) == 4):
            return "field 'choices' must be a list of 4 strings"
        if item["answer"] not in (0, 1, 2, 3):
            return f"field 'answer' must be 0-3, got {item['answer']!r}"
    elif item["label"] not in (0, 1):
        return f"field 'label' must be 0 or 1, got {item['label']!r}"
    return None


def load_task(name: str, data_dir=None) -> tuple[list[dict], list[dict]]:
    """(few-shot pool, test items) of task ``name``: lines 1-10 and 11+ of ``<data_dir>/downstream/<name>.jsonl``.

    ``data_dir`` defaults to $ENCORE_DATA_DIR. Raises ValueError for an unknown task or a malformed line
    (naming file, line and field) and FileNotFoundError for a missing file.
    """
    _format(name)
    data_dir = data_dir if data_dir is not None else os.environ.get("ENCORE_DATA_DIR")
    if not data_dir:
        raise FileNotFoundError(f"no data directory for task {name!r}: pass data_dir or set ENCORE_DATA_DIR")
    path = Path(data_dir) / "downstream" / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass data_dir / set ENCORE_DATA_DIR to a copy of shared/data "
            "(it must contain downstream/<task>.jsonl)"
        )
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid JSON ({error})") from None
            problem = _item_problem(name, item) if isinstance(item, dict) else "not a JSON object"
            if problem:
                raise ValueError(f"{path}:{number}: {problem} (task {name!r})")
            items.append(item)
    return items[:POOL_SIZE], items[POOL_SIZE:]


def gold_label(name: str, item: dict) -> int:
    """Class id of an item: the int label (SST-2 1 = positive, MRPC/CoLA 1 = Yes, RTE GLUE 0/1),
    NLI 1 = "entailment" else 0, MMLU the answer index 0-3."""
    _format(name)
    if name == "nli":
        return 1 if item["label"] == "entailment" else 0
    if name == "mmlu":
        return int(item["answer"])
    return int(item["label"])


# ------------------------------------------------------------------------------------------- prompts


def render_query(name: str, item: dict, shot: bool = False) -> str:
    """The prompt of one item up to (and including) its answer cue, as a query or (``shot``) as a shot."""
    _format(name)
    if name == "sst2":
        # QUIRK (SST-2): shots read "Review : {s}", the query "Review :{s}" (no space).
        return f"Review :{' ' if shot else ''}{item['sentence']}\nSentiment :"
    if name == "mrpc":
        return (
            f"Are the sentences paraphrases of each other.\nSentence 1: {item['sentence1']}\n"
            f"Sentence 2: {item['sentence2']}\nAnswer:"
        )
    if name == "cola":
        # QUIRK (CoLA): the query ends with "Answer: " (trailing space); the shot's answer follows it directly.
        return f"Is this sentence linguistically acceptable?\nSentence: {item['sentence']}\nAnswer: "
    if name == "rte":
        return f"{item['sentence1']}\nquestion: {item['sentence2']} True or False?\nanswer:"
    if name == "nli":
        return f"{item['sentence1']} entails the {item['sentence2']} True or False? Answer:"
    options = "".join(f"({letter}) {choice}\n" for letter, choice in zip("ABCD", item["choices"]))
    return f"Question: {item['question']}\n{options}Answer:"


def render_shot(name: str, item: dict) -> str:
    """One few-shot block: the item's prompt, " " + its answer word (no extra space after CoLA's cue), "\\n"."""
    prompt = render_query(name, item, shot=True)
    word = _format(name).label_words[gold_label(name, item)]
    return f"{prompt}{'' if prompt.endswith(' ') else ' '}{word}\n"


def _fit_query(tokenizer, query: str, max_tokens: int) -> str:
    """``query`` with characters dropped from its front until it encodes to at most ``max_tokens`` tokens.

    Only tiny-context models need this (the reference would exceed the context); the answer cue at the
    end is kept."""
    if len(encode(tokenizer, query)) <= max_tokens:
        return query
    low, high = 0, len(query)  # invariant: query[high:] fits (an empty query is assumed to fit)
    while high - low > 1:
        middle = (low + high) // 2
        if len(encode(tokenizer, query[middle:])) <= max_tokens:
            high = middle
        else:
            low = middle
    return query[high:]


def prompt_parts(
    name: str, item: dict, pool: list[dict], shots: int = 4, tokenizer=None, max_tokens: int | None = None
) -> tuple[str, str]:
    """(context, query): the first ``shots`` pool items rendered with answers, concatenated, and the
    item's query.

    With a tokenizer and a token budget, shots are kept in order while the whole prompt fits, and the
    remaining ones dropped, as the reference does (it keeps a prefix of the shot list); a query that
    alone exceeds the budget is cut from its front (see ``_fit_query``).
    """
    query = render_query(name, item)
    blocks = [render_shot(name, shot) for shot in pool[:shots]]
    if tokenizer is None or max_tokens is None:
        return "".join(blocks), query
    query = _fit_query(tokenizer, query, max_tokens)
    context = ""
    for block in blocks:
        if len(encode(tokenizer, context + block + query)) > max_tokens:
            break
        context += block
    return context, query


def build_prompt(
    name: str, item: dict, pool: list[dict], shots: int = 4, tokenizer=None, max_tokens: int | None = None
) -> str:
    """The whole prompt, context + query (see ``prompt_parts``)."""
    return "".join(prompt_parts(name, item, pool, shots, tokenizer, max_tokens))


def context_length(model) -> int | None:
    """The model's maximum number of positions (``max_position_embeddings`` or ``n_positions``)."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


# ------------------------------------------------------------------------------------------- scoring


def parse_generation(name: str, text: str) -> int:
    """Class read from generated text by the authors' rule, or -1 (invalid).

    The text after the last occurrence of the task's answer cue (the whole text for MMLU) is lower-cased
    and searched for the keywords in the task's order; the first one found wins. Substring search means
    e.g. "Not" reads as "no" (faithful)."""
    fmt = _format(name)
    segment = text.split(fmt.cue)[-1] if fmt.cue else text
    segment = segment.lower()
    for keyword, label in fmt.keywords:
        if keyword in segment:
            return label
    return INVALID


def classification_metrics(labels: list[int], predictions: list[int]) -> dict:
    """Weighted F1 (invalid -1 kept as its own class, hence wrong), accuracy, MCC and invalid count."""
    correct = sum(int(p == y) for p, y in zip(predictions, labels))
    return {
        "f1": float(f1_score(labels, predictions, average="weighted", zero_division=0)),
        "accuracy": correct / len(labels),
        "mcc": float(matthews_corrcoef(labels, predictions)),
        "invalid": sum(int(p == INVALID) for p in predictions),
    }


def predict(model, tokenizer, name: str, parts: list[tuple[str, str]], batch_size: int = 16):
    """(generated texts, log-likelihood classes) for prompts given as (context, query) parts.

    One pass with the shared context cached (``encore.evaluation.prefix_scoring``): greedy generation of ``GEN_LEN``
    tokens after context + query, and per prompt the class whose label word has the lowest mean NLL
    (ties: lower class). The label is scored as " " + word after the cue, which is how the shots render
    it ("Answer: Yes"); CoLA's query already ends with that space, so it is removed for scoring (the
    reference scored "Answer:  Yes", two spaces).
    """
    contexts = [context for context, _ in parts]
    queries = [query for _, query in parts]
    stems = [query[:-1] if query.endswith(" ") else query for query in queries]
    scores = score_with_shared_prefix(
        model, tokenizer, contexts, queries, stems, list(_format(name).label_words), GEN_LEN, batch_size
    )
    return scores.generated, scores.label_nll.argmin(dim=1).tolist()


@torch.no_grad()
def evaluate_task(
    model, tokenizer, name: str, data_dir=None, n_tests: int | None = 100, shots: int = 4, batch_size: int = 16
) -> dict:
    """Both protocols on the first ``n_tests`` test items (None = all) of task ``name``.

    Returns {"task", "n", "generate": {f1, accuracy, mcc, invalid}, "loglik": {f1, accuracy}, "labels",
    "predictions": {"generate": [class or -1 per item], "loglik": [class per item]}, "seconds"} (F1 and accuracy as
    fractions; item i is the i-th test item, the (POOL_SIZE + i)-th line of the task file). Prompts are limited to the model's positions minus the 3 generated tokens.
    """
    started = time.perf_counter()
    pool, tests = load_task(name, data_dir)
    tests = tests if n_tests is None else tests[:n_tests]
    if not tests:
        raise ValueError(f"task {name!r}: no test items (n_tests={n_tests})")
    limit = context_length(model)
    budget = None if limit is None else limit - GEN_LEN
    parts = [prompt_parts(name, item, pool, shots, tokenizer, budget) for item in tests]
    labels = [gold_label(name, item) for item in tests]
    generated, loglik_classes = predict(model, tokenizer, name, parts, batch_size)
    generate_classes = [parse_generation(name, text) for text in generated]
    generate_metrics = classification_metrics(labels, generate_classes)
    loglik_metrics = classification_metrics(labels, loglik_classes)
    return {
        "task": name,
        "n": len(tests),
        "generate": generate_metrics,
        "loglik": {"f1": loglik_metrics["f1"], "accuracy": loglik_metrics["accuracy"]},
        "labels": labels,
        "predictions": {"generate": generate_classes, "loglik": [int(c) for c in loglik_classes]},
        "seconds": time.perf_counter() - started,
    }


ITEM_COLUMNS = ["task", "item", "label", "prediction", "protocol"]


def evaluate_tasks(
    model, tokenizer, data_dir=None, tasks=TASKS, n_tests: int | None = 100, shots: int = 4, batch_size: int = 16
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy rows (task, metric, value, protocol) for every task and both protocols, and the per-item frame
    (task, item, label, prediction, protocol; prediction -1 = invalid answer) the rows are computed from, so
    that any interval over items can be recomputed later (encore.reporting.claims.general).

    Per task: f1, accuracy, mcc, invalid under ``protocols.DOWNSTREAM_GENERATE`` and f1, accuracy under
    ``protocols.DOWNSTREAM_LOGLIK``. Plus, per protocol, a task "average" row with metric "f1_x100" = mean over the
    evaluated tasks of F1 × 100 (the paper's "average downstream performance").
    """
    rows, items = [], []
    f1s: dict[str, list[float]] = {protocols.DOWNSTREAM_GENERATE: [], protocols.DOWNSTREAM_LOGLIK: []}
    for name in tasks:
        result = evaluate_task(model, tokenizer, name, data_dir, n_tests=n_tests, shots=shots, batch_size=batch_size)
        log(
            f"downstream {name}: F1 {result['generate']['f1']:.3f} (generated), {result['loglik']['f1']:.3f} "
            f"(label log-likelihood), {result['seconds']:.1f} s"
        )
        for key, protocol in (("generate", protocols.DOWNSTREAM_GENERATE), ("loglik", protocols.DOWNSTREAM_LOGLIK)):
            for metric, value in result[key].items():
                rows.append({"task": name, "metric": metric, "value": float(value), "protocol": protocol})
            f1s[protocol].append(result[key]["f1"])
            items += [
                {"task": name, "item": i, "label": label, "prediction": prediction, "protocol": protocol}
                for i, (label, prediction) in enumerate(zip(result["labels"], result["predictions"][key]))
            ]
    for protocol, values in f1s.items():
        if values:
            rows.append(
                {
                    "task": "average",
                    "metric": "f1_x100",
                    "value": 100.0 * sum(values) / len(values),
                    "protocol": protocol,
                }
            )
    table = pd.DataFrame(rows, columns=["task", "metric", "value", "protocol"])
    return table, pd.DataFrame(items, columns=ITEM_COLUMNS)
