"""Claims about general ability (downstream tasks, perplexity, fluency; Figs. 3, 6, Table 2 GE) and zsRE.

Downstream claims are judged per task, on the tasks the unedited model is above chance on (its MCC interval
lies above 0). Intervals come from per-item predictions (downstream_records.csv); without them, a binary
task's confusion matrix is recovered from its published accuracy, F1, MCC and invalid count (every integer
matrix consistent with them, ``binary_matrices``), and the rule decides only where every consistent data set
decides the same way. Fluency needs per-record generation entropy (records.csv column ``ge``). Perplexity is
one number per model state on a fixed text: the rule uses a fixed margin instead of an interval.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from encore.evaluation import protocols
from encore.evaluation.downstream import FORMATS
from encore.reporting.claims.base import (
    ENCORE,
    MEMIT,
    OURS,
    UNEDITED,
    Claim,
    StudyResults,
    gap,
    horizon,
    missing_records,
    name,
    not_run,
)
from encore.reporting.claims.intervals import (
    INCONCLUSIVE,
    LEVEL,
    NOT_REPRODUCED,
    NOT_RUN,
    NOT_TESTABLE,
    REPRODUCED,
    RESAMPLES,
    SEED,
    TAIL,
    Bounds,
    Interval,
    combine,
    confusion,
    difference_bounds,
    mcc,
    no_data,
    paired_bootstrap,
    unknown,
    weighted_f1,
)

PERPLEXITY_MARGIN = math.log(1.01)  # a change of log-perplexity under 1% counts as no change (ours)
# classes per task: its label words; only binary tasks are recovered
TASK_CLASSES = {task: len(form.label_words) for task, form in FORMATS.items()}
ROUNDING = 1e-6  # metrics.csv keeps 6 decimals: a recovered matrix must give each published value within this
GENERATE, LOGLIK = protocols.DOWNSTREAM_GENERATE, protocols.DOWNSTREAM_LOGLIK


def _interval(values: np.ndarray) -> Interval:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values[1:], [tail, 100 - tail])
    return Interval(float(values[0]), float(low), float(high))


def _item_resamples(study: StudyResults, protocol: str, states) -> dict[str, dict]:
    """Per task with items for every (run, edits) in ``states``: per state an array (1 + RESAMPLES,) of F1 x100
    (entry 0: the data), and the unedited model's MCC likewise; the same item indices for every state."""
    if study.items is None:
        return {}
    items = study.items[study.items["protocol"].str.startswith(protocol)]
    rng = np.random.default_rng(SEED)
    found = {}
    for task, rows in items.groupby("task", sort=True):
        frames = []
        for run, edits in states:
            part = rows[(rows["method"] == run[0]) & (rows["variant"] == run[1]) & (rows["edits"] == edits)]
            frames.append(part.groupby("item")[["label", "prediction"]].first())
        shared = sorted(set.intersection(*(set(frame.index) for frame in frames)))
        if not shared:
            continue
        classes = int(max(frame.loc[shared].to_numpy().max() for frame in frames)) + 2  # + "invalid"
        index = np.vstack([np.arange(len(shared)), rng.integers(0, len(shared), size=(RESAMPLES, len(shared)))])
        found[task] = {}
        for (run, edits), frame in zip(states, frames):
            labels, predictions = (
                frame.loc[shared, column].to_numpy().astype(int) for column in ("label", "prediction")
            )
            predictions = np.where(predictions < 0, classes - 1, predictions)
            matrix = confusion(labels[index], predictions[index], classes)
            found[task][(run, edits)] = {"f1": 100 * weighted_f1(matrix), "mcc": mcc(matrix)}
    return found


def _published(study: StudyResults, protocol: str, state, task: str) -> dict[str, float]:
    """The published accuracy, f1, mcc and invalid count of ``task`` for ``state`` (mean over orderings)."""
    (method, variant), edits = state
    rows = study.metrics[
        (study.metrics["method"] == method)
        & (study.metrics["variant"] == variant)
        & (study.metrics["edits"] == edits)
        & study.metrics["protocol"].str.startswith(protocol)
        & study.metrics["metric"].str.startswith(f"{task}.")
    ]
    return {metric.split(".", 1)[1]: float(value) for metric, value in rows.groupby("metric")["value"].mean().items()}


def item_count(study: StudyResults) -> int | None:
    """The smallest number of items that every published downstream accuracy of the study (any task, run,
    protocol, edit count: every task is scored on the same items, ``evaluation.downstream`` n_tests) is a whole
    fraction of, and at least every invalid count; None if there is none below 10,000. A larger count (a
    multiple) fits as well; it only narrows every interval."""
    metric = study.metrics["metric"]
    downstream = study.metrics[study.metrics["protocol"].str.startswith(protocols.DOWNSTREAM)]
    count = 1
    for value in downstream[downstream["metric"].str.endswith(".accuracy")]["value"]:
        count = math.lcm(count, Fraction(float(value)).limit_denominator(10_000).denominator)
    invalid = study.metrics[metric.str.endswith(".invalid")]["value"]
    largest = int(invalid.max()) if len(invalid) else 0
    count *= max(1, -(-largest // count))
    return count if count < 10_000 else None


def _matches(matrices: np.ndarray, published: dict[str, float]) -> np.ndarray:
    keep = np.ones(len(matrices), dtype=bool)
    if "f1" in published:
        keep &= np.abs(weighted_f1(matrices) - published["f1"]) <= ROUNDING
    if "mcc" in published:
        keep &= np.abs(mcc(matrices) - published["mcc"]) <= ROUNDING
    return keep


def binary_matrices(items: int, published: dict[str, float], labels: tuple[int, int] | None = None) -> np.ndarray:
    """Every 3x3 confusion matrix (rows: label 0, 1, and no "invalid" label; columns: prediction 0, 1, invalid)
    of ``items`` items that gives the published accuracy, invalid count, F1 and MCC (those published); with
    ``labels``, only those with that many items of label 0 and 1. Shape (matrices, 3, 3)."""
    correct = round(published["accuracy"] * items)
    invalid = round(published.get("invalid", 0.0))
    if abs(correct - published["accuracy"] * items) > ROUNDING * items or correct + invalid > items:
        return np.zeros((0, 3, 3), dtype=int)
    wrong = items - correct - invalid
    a, c, b = np.meshgrid(np.arange(correct + 1), np.arange(invalid + 1), np.arange(wrong + 1), indexing="ij")
    a, b, c = a.ravel(), b.ravel(), c.ravel()
    cells = [a, b, c, wrong - b, correct - a, invalid - c]  # label 0: a b c; label 1: d e f
    matrices = np.zeros((len(a), 3, 3), dtype=int)
    for k, cell in enumerate(cells):
        matrices[:, k // 3, k % 3] = cell
    if labels is not None:
        matrices = matrices[matrices[:, 0].sum(axis=1) == labels[0]]
    return matrices[_matches(matrices, published)]


def _matrix_resamples(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """F1 x100 and MCC of ``matrix`` (entry 0) and of RESAMPLES bootstrap resamples of its items."""
    labels = np.repeat(np.arange(3), matrix.sum(axis=1))
    predictions = np.concatenate([np.repeat(np.arange(3), row) for row in matrix])
    index = np.random.default_rng(SEED).integers(0, len(labels), size=(RESAMPLES, len(labels)))
    resampled = np.concatenate([matrix[None], confusion(labels[index], predictions[index], 3)])
    return {"f1": 100 * weighted_f1(resampled), "mcc": mcc(resampled)}


def _quantile_range(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values[1:], [100 * TAIL, 100 * (1 - TAIL)])
    return float(low), float(high)


def _recovered(study: StudyResults, protocol: str, states, task: str):
    """From the published aggregates of a binary ``task``: (per hypothesis of the label counts, per state, the
    consistent matrices' resamples) and the item count; ({}, reason) if nothing can be recovered."""
    if TASK_CLASSES.get(task) != 2:
        return {}, f"{TASK_CLASSES.get(task, 'an unknown number of')} classes: the matrix is not recovered"
    items = item_count(study)
    if items is None:
        return {}, "no item count fits the published accuracies"
    generate = [_published(study, GENERATE, state, task) for state in states]
    if any("accuracy" not in values or "f1" not in values for values in generate):
        return {}, "accuracy or F1 not published"
    candidates = [binary_matrices(items, values) for values in generate]
    labels = set.intersection(*({int(m[0].sum()) for m in found} for found in candidates))
    if protocol == LOGLIK:  # no MCC or invalid published: the labels come from the generation protocol
        published = [_published(study, LOGLIK, state, task) for state in states]
        if any("accuracy" not in values or "f1" not in values for values in published):
            return {}, "accuracy or F1 not published"
        candidates = [
            np.concatenate([binary_matrices(items, values, (n0, items - n0)) for n0 in sorted(labels)] or
                           [np.zeros((0, 3, 3), dtype=int)])
            for values in published
        ]  # fmt: skip
    hypotheses = {}
    for n0 in sorted(labels):
        per_state = [[m for m in found if m[0].sum() == n0] for found in candidates]
        if all(per_state):
            hypotheses[n0] = [[_matrix_resamples(m) for m in matrices] for matrices in per_state]
    if not hypotheses:
        return {}, f"no {items}-item confusion matrices fit every state's published values"
    return hypotheses, items


def _task_from_aggregates(study: StudyResults, protocol: str, states, task: str):
    """(above chance: True / None = unsettled, decline Bounds, advantage Bounds, text) of one task without items."""
    published = [_published(study, protocol, s, task) for s in states]
    f1 = [100 * values.get("f1", np.nan) for values in published]
    missing = f"per-item predictions of {task.upper()} (downstream_records.csv)"
    decline = unknown(missing, f1[0] - f1[1])
    advantage = unknown(missing, f1[2] - f1[1])
    hypotheses, items = _recovered(study, protocol, states, task)
    if not hypotheses:
        return None, decline, advantage, f"{task.upper()}: chance level unsettled ({items})"
    unedited = [_interval(u["mcc"]) for h in hypotheses.values() for u in h[0]]
    lows = [interval.low for interval in unedited]
    if max(interval.estimate for interval in unedited) <= 0:
        return False, decline, advantage, ""  # every consistent matrix has MCC <= 0: at chance
    above = True if min(lows) > 0 else None
    ranges = {  # per state: the union of every consistent matrix's F1 range
        k: (min(_quantile_range(r["f1"])[0] for h in hypotheses.values() for r in h[k]),
            max(_quantile_range(r["f1"])[1] for h in hypotheses.values() for r in h[k]))
        for k in range(3)
    }  # fmt: skip
    decline = Bounds(f1[0] - f1[1], *difference_bounds(ranges[1], ranges[0]), missing)
    advantage = Bounds(f1[2] - f1[1], *difference_bounds(ranges[1], ranges[2]), missing)
    shown = sorted({interval.text(".2f") for interval in unedited})
    chance = (
        f"unedited MCC {shown[0]}" if len(shown) == 1 else f"unedited MCC lower end {min(lows):.2f}-{max(lows):.2f}"
    )
    text = (
        f"{task.upper()} ({len(unedited)} unedited {items}-item confusion matrices fit the published accuracy, F1"
        f"{', MCC and invalid count' if protocol == GENERATE else ''}; {chance})"
    )
    return above, decline, advantage, text


def downstream(study: StudyResults, column: str, protocol: str) -> Claim:
    paper_ = "MEMIT's average downstream score declines over the edits; ENCORE's declines less"
    source = f"Figs. 3, 6 ({protocol})"
    threshold = (
        f"per task the unedited model is above chance on: F1 decline of MEMIT > 0 and F1(ENCORE) - F1(MEMIT) > 0 "
        f"({OURS}: the paper states the directions, no margin)"
    )
    rule = (
        "per task, F1 x100 unedited vs MEMIT and ENCORE at their last common snapshot, paired over items, on the "
        "tasks whose unedited MCC interval lies above 0 (ours: per task rather than the paper's average over six "
        "tasks, so that a task at chance neither dilutes nor hides a decline; a task with unedited MCC <= 0 is at "
        "chance); without per-item predictions, from every confusion matrix consistent with the published "
        "accuracy, F1, MCC and invalid count, decided only where all of them decide alike; reproduced if both "
        "hold on every such task, not reproduced if either fails on one; not testable if no task is above chance"
    )
    if not study.has(MEMIT, ENCORE, UNEDITED):
        return not_run(paper_, source, threshold, rule, [r for r in (MEMIT, ENCORE, UNEDITED) if not study.has(r)])
    edits = study.common_edits(MEMIT, ENCORE)
    at = horizon(edits)
    prefix = GENERATE if column == "DS_generate" else LOGLIK
    states = [(UNEDITED, 0), (MEMIT, edits), (ENCORE, edits)]
    base = study.point(UNEDITED, 0, column)
    points = f"published average F1 x100: unedited {base:.1f}, " + ", ".join(
        f"{name(r)} {study.point(r, edits, column):.1f}" for r in (MEMIT, ENCORE)
    )
    unedited = study.metrics[(study.metrics["method"] == "unedited") & study.metrics["protocol"].str.startswith(prefix)]
    tasks = sorted({m.split(".")[0] for m in unedited["metric"] if m.endswith(".f1") and not m.startswith("average")})
    if not tasks:
        missing = f"per-task downstream F1 of the unedited model ({protocol})"
        return Claim(paper_, source, f"{points}; needs {missing}", threshold, no_data(missing), rule, at)
    with_items = _item_resamples(study, prefix, states)
    outcomes, texts, at_chance = [], [], []
    for task in tasks:
        published_mcc = _published(study, GENERATE, states[0], task).get("mcc")
        if task in with_items:
            values = with_items[task]
            chance = _interval(values[states[0]]["mcc"])
            above = chance.low > 0 and chance.estimate > 0
            f1 = [values[state]["f1"] for state in states]
            decline, advantage = _interval(f1[0] - f1[1]), _interval(f1[2] - f1[1])
            text = f"{task.upper()} (unedited MCC {chance.text('.2f')})"
        elif prefix == GENERATE and published_mcc is not None and published_mcc <= 0:
            above, decline, advantage, text = False, None, None, ""
        else:
            above, decline, advantage, text = _task_from_aggregates(study, prefix, states, task)
        if above is False:
            at_chance.append(task.upper())
            continue
        if above is None:
            outcomes.append(no_data(f"per-item predictions of the unedited model on {task.upper()} "
                                    "(downstream_records.csv), to settle its chance level"))  # fmt: skip
            texts.append(text)
            continue
        outcomes += [decline.above(0), advantage.above(0)]
        texts.append(f"{text}: MEMIT's F1 decline {decline.text()}; ENCORE - MEMIT {advantage.text()}")
    if at_chance:
        texts.append(f"at chance (unedited MCC <= 0 or its interval reaching 0): {', '.join(at_chance)}")
    measured = f"{points} at {edits:,} edits; " + "; ".join(texts)
    outcome = combine(outcomes) if outcomes else NOT_TESTABLE
    return Claim(paper_, source, measured, threshold, outcome, rule, at)


def _margin_outcome(value: float) -> str:
    return REPRODUCED if value > PERPLEXITY_MARGIN else NOT_REPRODUCED if value < -PERPLEXITY_MARGIN else INCONCLUSIVE


def perplexity(study: StudyResults) -> Claim:
    paper_ = "Edits degrade general ability: MEMIT's perplexity on held-out text rises more than ENCORE's"
    source = "title; general ability (our measure, not a paper table)"
    threshold = (
        f"log-ppl rise of MEMIT > ln 1.01, and exceeds ENCORE's by > ln 1.01 ({OURS}: the paper has no perplexity)"
    )
    rule = (
        "perplexity (metric `perplexity`) at the last common snapshot against the unedited model; one fixed text, "
        "so no interval: a change under 1% (ours) is no change; reproduced if MEMIT's rise and its excess over "
        "ENCORE's are both above it, not reproduced if either is below minus it"
    )
    runs = (UNEDITED, MEMIT, ENCORE)
    paper_horizon = "the paper: no perplexity"
    if not study.has(*runs):
        return not_run(paper_, source, threshold, rule, [r for r in runs if not study.has(r)])
    rows = study.metrics[study.metrics["metric"] == "perplexity"]
    edits = study.common_edits(MEMIT, ENCORE)
    at = horizon(edits, paper=paper_horizon)
    chosen = {}
    for run in runs:
        part = rows[(rows["method"] == run[0]) & (rows["variant"] == run[1])]
        chosen[run] = part[part["edits"] == (0 if run == UNEDITED else edits)].groupby("protocol")["value"].mean()
    shared = sorted(set.intersection(*(set(values.index) for values in chosen.values())))  # same text and budget
    values = {run: float(chosen[run][shared[0]]) for run in runs} if shared else {}
    if len(values) < 3:
        absent = ", ".join(name(r) for r in ([r for r in runs if chosen[r].empty] or runs))
        missing = f"perplexity (metric `perplexity`) of {absent}, on one text and token budget for all three"
        measured = f"needs {missing}, at {edits:,} edits"
        return Claim(paper_, source, measured, threshold, no_data(missing), rule, at)
    rise = {run: math.log(values[run] / values[UNEDITED]) for run in (MEMIT, ENCORE)}
    measured = f"perplexity unedited {values[UNEDITED]:.2f}; after {edits:,} edits " + ", ".join(
        f"{name(r)} {values[r]:.2f} ({100 * (math.exp(rise[r]) - 1):+.1f}%)" for r in (MEMIT, ENCORE)
    )
    outcome = combine([_margin_outcome(rise[MEMIT]), _margin_outcome(rise[MEMIT] - rise[ENCORE])])
    return Claim(paper_, source, measured, threshold, outcome, rule, at)


def fluency(study: StudyResults) -> Claim:
    paper_ = "Generation entropy (fluency) falls for MEMIT and is kept by ENCORE"
    source = "Tables 2, 3 (GE)"
    threshold = f"GE(unedited) - GE(MEMIT) > 0 and GE(ENCORE) - GE(MEMIT) > 0 ({OURS}: the paper gives no margin)"
    rule = (
        "per-record GE (records.csv column ge) paired over the records both states scored; GE has no fixed range, "
        "so the published means bound nothing; reproduced if both intervals > 0, not reproduced if either < 0"
    )
    runs = (UNEDITED, MEMIT, ENCORE)
    if not study.has(*runs):
        return not_run(paper_, source, threshold, rule, [r for r in runs if not study.has(r)])
    edits = study.common_edits(MEMIT, ENCORE)
    states = [(UNEDITED, 0), (MEMIT, edits), (ENCORE, edits)]
    arrays = study.paired(states, columns=("ge",))
    if isinstance(arrays, str):
        values = [study.point(r, e, "GE") for r, e in states]
        points = ", ".join(
            f"{name(r)} {v:.1f}" if v == v else f"{name(r)} not measured" for (r, _), v in zip(states, values)
        )
        missing = missing_records(states, "per-record generation entropy")
        measured = f"published GE x100: {points}; needs {missing}"
        return Claim(paper_, source, measured, threshold, no_data(missing), rule, horizon(edits))
    unedited, memit, encore = arrays
    fall = paired_bootstrap(lambda a, b: a.mean(axis=(1, 2)) - b.mean(axis=(1, 2)), unedited, memit)
    kept = paired_bootstrap(lambda a, b: b.mean(axis=(1, 2)) - a.mean(axis=(1, 2)), memit, encore)
    measured = (
        f"on {len(memit)} records after {edits:,} edits: MEMIT's fall {fall.text()}, ENCORE - MEMIT {kept.text()}"
    )
    outcome = combine([fall.above(0), kept.above(0)])
    return Claim(paper_, source, measured, threshold, outcome, rule, horizon(edits))


def zsre(study: StudyResults) -> Claim:
    paper_ = "On zsRE, ENCORE keeps more neighbourhood accuracy than MEMIT"
    source, threshold = "Tables 12-14", f"NS(ENCORE) - NS(MEMIT) > 0 ({OURS}: the paper gives no margin)"
    rule = (
        "zsRE studies only: NS paired over the facts both runs scored at the last common snapshot (without "
        "records.csv, from the published means where decisive); reproduced if > 0, not reproduced if < 0"
    )
    if set(study.metrics["dataset"].unique()) != {"zsre"}:
        measured = "this study edits CounterFact only; zsRE is out of its scope"
        return Claim(paper_, source, measured, threshold, NOT_RUN, rule, horizon())
    if not study.has(MEMIT, ENCORE):
        return not_run(paper_, source, threshold, rule, [r for r in (MEMIT, ENCORE) if not study.has(r)])
    edits = study.common_edits(MEMIT, ENCORE)
    comparison, text = gap(study, (MEMIT, edits), (ENCORE, edits), "NS")
    return Claim(paper_, source, text, threshold, comparison.above(0.0), rule, horizon(edits))
