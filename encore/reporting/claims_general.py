"""Claims about general ability (downstream tasks, perplexity, fluency; Figs. 3, 6, Table 2 GE) and zsRE.

Downstream intervals need per-item predictions (downstream_records.csv); a task is testable only if the
unedited model is above chance on it (its MCC interval lies above 0). Fluency needs per-record generation
entropy (records.csv column ``ge``). Perplexity is one number per model state on a fixed text: the rule
uses a fixed margin instead of an interval.
"""

from __future__ import annotations

import math

import numpy as np

from encore.reporting.claims_base import ENCORE, MEMIT, UNEDITED, Claim, Study, gap, name, not_run
from encore.reporting.intervals import (
    INCONCLUSIVE,
    LEVEL,
    NOT_REPRODUCED,
    NOT_RUN,
    NOT_TESTABLE,
    REPRODUCED,
    RESAMPLES,
    SEED,
    Interval,
    combine,
    confusion,
    mcc,
    paired_bootstrap,
    weighted_f1,
)

PERPLEXITY_MARGIN = math.log(1.01)  # a change of log-perplexity under 1% counts as no change (ours)


def _interval(values: np.ndarray) -> Interval:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values[1:], [tail, 100 - tail])
    return Interval(float(values[0]), float(low), float(high))


def _item_resamples(study: Study, protocol: str, states) -> dict[str, dict]:
    """Per task with items for every (run, edits) in ``states``: per state an array (1 + RESAMPLES,) of F1 x100
    (entry 0: the data), and the unedited model's MCC likewise; the same item indices for every state."""
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


def downstream(study: Study, column: str, protocol: str) -> Claim:
    paper_ = "MEMIT's average downstream score declines over the edits; ENCORE's declines less"
    source = f"Figs. 3, 6 ({protocol})"
    threshold = "F1 decline of MEMIT > 0 and F1(ENCORE) - F1(MEMIT) > 0, on tasks the unedited model is above chance on"
    rule = (
        "average F1 x100 over the tasks whose unedited MCC interval lies above 0, unedited vs the last common "
        "snapshot, paired over items (the same resample of each task's items for every run); reproduced if both "
        "intervals > 0, not reproduced if either < 0; not testable if no task is above chance"
    )
    if not study.has(MEMIT, ENCORE, UNEDITED):
        return not_run(paper_, source, threshold, rule, [r for r in (MEMIT, ENCORE, UNEDITED) if not study.has(r)])
    edits = study.common_edits(MEMIT, ENCORE)
    base = study.point(UNEDITED, 0, column)
    points = f"published average F1 x100: unedited {base:.1f}, " + ", ".join(
        f"{name(r)} {study.point(r, edits, column):.1f}" for r in (MEMIT, ENCORE)
    )
    prefix = "downstream/generate" if column == "DS_generate" else "downstream/label-loglik"
    if study.items is None:
        mccs = study.metrics[(study.metrics["method"] == "unedited") & study.metrics["metric"].str.endswith(".mcc")]
        mccs = mccs[mccs["protocol"].str.startswith(prefix)]
        mccs = ", ".join(f"{r.metric.split('.')[0]} {r.value:.2f}" for r in mccs.itertuples())
        reason = "per-item downstream predictions not published, so the unedited MCC has no interval"
        measured = f"{points} at {edits} edits; unedited MCC (no interval): {mccs or 'not published'}; {reason}"
        return Claim(paper_, source, measured, threshold, NOT_TESTABLE, rule)
    states = [(UNEDITED, 0), (MEMIT, edits), (ENCORE, edits)]
    tasks = _item_resamples(study, prefix, states)
    if not tasks:
        reason = "per-item downstream predictions not published for " + ", ".join(
            f"{name(r)} at {e}" for r, e in states
        )
        return Claim(paper_, source, f"{points} at {edits} edits; {reason}", threshold, NOT_TESTABLE, rule)
    chance = {task: _interval(values[(UNEDITED, 0)]["mcc"]) for task, values in tasks.items()}
    above = [task for task, interval in chance.items() if interval.low > 0]
    measured = "unedited MCC " + ", ".join(f"{t} {i.text('.2f')}" for t, i in chance.items())
    if not above:
        return Claim(paper_, source, f"{measured}; no task above chance", threshold, NOT_TESTABLE, rule)
    f1 = {state: np.mean([tasks[t][state]["f1"] for t in above], axis=0) for state in states}
    decline = _interval(f1[states[0]] - f1[states[1]])
    advantage = _interval(f1[states[2]] - f1[states[1]])
    measured += (
        f"; on {', '.join(above)} after {edits} edits: MEMIT's decline {decline.text()}, ENCORE - MEMIT "
        f"{advantage.text()}"
    )
    return Claim(paper_, source, measured, threshold, combine([decline.above(0), advantage.above(0)]), rule)


def _margin_outcome(value: float) -> str:
    return REPRODUCED if value > PERPLEXITY_MARGIN else NOT_REPRODUCED if value < -PERPLEXITY_MARGIN else INCONCLUSIVE


def perplexity(study: Study) -> Claim:
    paper_ = "Edits degrade general ability: MEMIT's perplexity on held-out text rises more than ENCORE's"
    source = "title; general ability (our measure, not a paper table)"
    threshold = "log-ppl rise of MEMIT > ln 1.01, and exceeds ENCORE's by > ln 1.01"
    rule = (
        "perplexity (metric `perplexity`) at the last common snapshot against the unedited model; one fixed text, "
        "so no interval: a change under 1% (ours) is no change; reproduced if MEMIT's rise and its excess over "
        "ENCORE's are both above it, not reproduced if either is below minus it"
    )
    runs = (UNEDITED, MEMIT, ENCORE)
    if not study.has(*runs):
        return not_run(paper_, source, threshold, rule, [r for r in runs if not study.has(r)])
    rows = study.metrics[study.metrics["metric"] == "perplexity"]
    edits = study.common_edits(MEMIT, ENCORE)
    chosen = {}
    for run in runs:
        part = rows[(rows["method"] == run[0]) & (rows["variant"] == run[1])]
        chosen[run] = part[part["edits"] == (0 if run == UNEDITED else edits)].groupby("protocol")["value"].mean()
    shared = sorted(set.intersection(*(set(values.index) for values in chosen.values())))  # same text and budget
    values = {run: float(chosen[run][shared[0]]) for run in runs} if shared else {}
    if len(values) < 3:
        absent = ", ".join(name(r) for r in ([r for r in runs if chosen[r].empty] or runs))
        measured = (
            f"needs metric `perplexity` of {absent}, on one text and token budget for all three, at {edits} edits"
        )
        return Claim(paper_, source, measured, threshold, NOT_RUN, rule)
    rise = {run: math.log(values[run] / values[UNEDITED]) for run in (MEMIT, ENCORE)}
    measured = f"perplexity unedited {values[UNEDITED]:.2f}; after {edits} edits " + ", ".join(
        f"{name(r)} {values[r]:.2f} ({100 * (math.exp(rise[r]) - 1):+.1f}%)" for r in (MEMIT, ENCORE)
    )
    outcome = combine([_margin_outcome(rise[MEMIT]), _margin_outcome(rise[MEMIT] - rise[ENCORE])])
    return Claim(paper_, source, measured, threshold, outcome, rule)


def fluency(study: Study) -> Claim:
    paper_ = "Generation entropy (fluency) falls for MEMIT and is kept by ENCORE"
    source, threshold = "Tables 2, 3 (GE)", "GE(unedited) - GE(MEMIT) > 0 and GE(ENCORE) - GE(MEMIT) > 0"
    rule = "per-record GE (records.csv column ge) paired over the records both states scored; reproduced if both > 0"
    runs = (UNEDITED, MEMIT, ENCORE)
    if not study.has(*runs):
        return not_run(paper_, source, threshold, rule, [r for r in runs if not study.has(r)])
    edits = study.common_edits(MEMIT, ENCORE)
    states = [(UNEDITED, 0), (MEMIT, edits), (ENCORE, edits)]
    arrays = study.paired(states, columns=("ge",))
    if isinstance(arrays, str):
        points = ", ".join(f"{name(r)} {study.point(r, e, 'GE'):.1f}" for r, e in states)
        reason = arrays.replace("per-fact scores", "per-record generation entropy")
        return Claim(paper_, source, f"published GE x100: {points}; {reason}", threshold, INCONCLUSIVE, rule)
    unedited, memit, encore = arrays
    fall = paired_bootstrap(lambda a, b: a.mean(axis=(1, 2)) - b.mean(axis=(1, 2)), unedited, memit)
    kept = paired_bootstrap(lambda a, b: b.mean(axis=(1, 2)) - a.mean(axis=(1, 2)), memit, encore)
    measured = f"on {len(memit)} records after {edits} edits: MEMIT's fall {fall.text()}, ENCORE - MEMIT {kept.text()}"
    return Claim(paper_, source, measured, threshold, combine([fall.above(0), kept.above(0)]), rule)


def zsre(study: Study) -> Claim:
    paper_ = "On zsRE, ENCORE keeps more neighbourhood accuracy than MEMIT"
    source, threshold = "Tables 12-14", "NS(ENCORE) - NS(MEMIT) > 0"
    rule = "zsRE studies only: NS paired over the facts both runs scored at the last common snapshot; reproduced if > 0"
    if set(study.metrics["dataset"].unique()) != {"zsre"}:
        return Claim(
            paper_, source, "this study edits CounterFact only; zsRE is out of its scope", threshold, NOT_RUN, rule
        )
    if not study.has(MEMIT, ENCORE):
        return not_run(paper_, source, threshold, rule, [r for r in (MEMIT, ENCORE) if not study.has(r)])
    edits = study.common_edits(MEMIT, ENCORE)
    interval, text = gap(study, (MEMIT, edits), (ENCORE, edits), "NS")
    outcome = INCONCLUSIVE if interval is None else interval.above(0.0)
    return Claim(paper_, source, text, threshold, outcome, rule)
