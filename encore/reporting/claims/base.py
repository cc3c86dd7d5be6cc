"""What every claim rule needs: the ``Claim`` row, ``StudyResults`` (a study's collected CSVs), paired per-fact scores.

Optional per-unit files next to the four collected CSVs make paired intervals possible:
``records.csv`` (one row per scored fact: experiment, model, dataset, method, variant, order, edits, subset,
protocol, case_id, es, ps, ns in [0, 1]; optional columns p_new, ge) and ``downstream_records.csv`` (one row
per downstream item: method, variant, order, edits, protocol, task, item, label, prediction; -1 = invalid).

Without them, two states published on the same facts (two runs at one edit count, or the unedited model and
a run that has edited every fact the unedited model was scored on) are still compared: the published means
are exact, and ``intervals.Bounds`` says where the paired interval lies for every per-fact data set with those
means. States scored on different facts (one run at two edit counts) cannot be compared without records.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encore.evaluation import protocols
from encore.reporting.claims.intervals import (
    NOT_RUN,
    TAIL,
    Bounds,
    Interval,
    difference_bounds,
    harmonic_score,
    mean_bounds,
    paired_bootstrap,
    s_of_means,
    unknown,
)
from encore.reporting.collect import read_csvs
from encore.reporting.data_files import data_path
from encore.reporting.outputs import (  # noqa: F401 (the runs, for the claim rules: encore.reporting.outputs's)
    ALPHAEDIT,
    ALPHAEDIT_MPES,
    EMMET,
    EMMET_MPES,
    EMMET_NC,
    ENCORE,
    MEMIT,
    UNEDITED,
    label,
)
from encore.reporting.outputs import MEMIT_MPES as MPES  # noqa: F401
from encore.reporting.outputs import MEMIT_NC as NC  # noqa: F401
from encore.reporting.paper_values import PAPER_EDITS
from encore.reporting.summary import summary

NO_RECORDS = "per-fact scores not published for this run (records.csv), so no paired interval"
PAPER = f"the paper: {PAPER_EDITS:,}"
# where a threshold comes from: every threshold text ends with one of these
THE_PAPERS, OURS = "the paper's", "ours"


@dataclass
class Claim:
    paper: str  # the paper's claim, in a sentence
    source: str  # its table or figure
    measured: str  # what this study measured, with 95% intervals
    threshold: str  # the number, and whose it is ("the paper's: ..." or "ours: ...")
    outcome: str  # one of intervals.OUTCOMES ("no data: <what>" with its detail)
    rule: str
    horizon: str = ""  # the edit count it was judged at, and the paper's ("at 3,000 edits; the paper: 10,000")

    @property
    def verdict(self) -> str:
        """The outcome with the horizon it was judged at."""
        return f"{self.outcome} ({self.horizon})" if self.horizon else self.outcome


def horizon(*edits, paper: str = PAPER) -> str:
    """'at 500 and 3,000 edits; the paper: 10,000': the edit counts a verdict was judged at (the unedited
    model's 0 left out), and the paper's."""
    counts = [f"{c:,}" for c in sorted({int(e) for e in edits if e is not None and int(e) > 0})]
    if not counts:
        return f"not judged; {paper}"
    text = counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + f" and {counts[-1]}"
    return f"at {text} edits; {paper}"


def name(run) -> str:
    return "the unedited model" if run == UNEDITED else label(*run)


def not_run(paper: str, source: str, threshold: str, rule: str, runs, context: str = "") -> Claim:
    measured = "needs " + ", ".join(name(run) for run in runs) + (f"; {context}" if context else "")
    return Claim(paper, source, measured, threshold, NOT_RUN, rule, horizon())


class StudyResults:
    """The collected CSVs of one study (one model, one data set), plus records.csv where it exists."""

    def __init__(self, data: Path):
        data = Path(data)
        self.metrics = read_csvs([data_path(data, "metrics.csv")])
        self.norms = read_csvs([data_path(data, "norms.csv")])
        self.ledger = read_csvs([data_path(data, "ledger.csv")])
        runs = read_csvs([data_path(data, "runs.csv")])
        self.layers = {(r.method, r.variant): [int(x) for x in str(r.layers).split()] for r in runs.itertuples()}
        self.records = self._optional(
            data_path(data, "records.csv"), ["method", "variant", "edits", "protocol", "case_id"]
        )  # plain or gzip-compressed (report.write_data_file)
        self.items = self._optional(
            data_path(data, "downstream_records.csv"),
            ["method", "variant", "edits", "protocol", "task", "item", "label"],
        )
        table = summary(self.metrics)
        # which facts each published aggregate scores: ("all" or "authors-20pct", number of facts)
        self.scored = {
            ((r.method, r.variant), 0 if r.method == "unedited" else int(r.edits)): (r.facts, int(r.n_records))
            for r in table.itertuples()
        }
        self.unedited = table[table["method"] == "unedited"].mean(numeric_only=True)
        self.table = table[table["method"] != "unedited"]

    @staticmethod
    def _optional(path: Path, required: list[str]) -> pd.DataFrame | None:
        if not path.exists():
            return None
        frame = pd.read_csv(path)
        missing = [column for column in required if column not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; rewrite it with the collect rule")
        return frame

    def has(self, *runs) -> bool:
        ran = set(zip(self.table["method"], self.table["variant"]))
        return all(run in ran or (run == UNEDITED and (self.metrics["method"] == "unedited").any()) for run in runs)

    def snapshots(self, run) -> pd.DataFrame:
        rows = self.table[(self.table["method"] == run[0]) & (self.table["variant"] == run[1])]
        return rows.groupby("edits").mean(numeric_only=True).sort_index()

    def final(self, run) -> pd.Series:
        return self.unedited if run == UNEDITED else self.snapshots(run).iloc[-1]

    def edits(self, run) -> int:
        return 0 if run == UNEDITED else int(self.snapshots(run).index[-1])

    def common_edits(self, *runs) -> int | None:
        """The largest edit count at which every run (not the unedited model) has a snapshot."""
        counts = [set(self.snapshots(run).index) for run in runs if run != UNEDITED]
        shared = set.intersection(*counts) if counts else {0}
        return int(max(shared)) if shared else None

    def point(self, run, edits: int, column: str) -> float:
        """The published aggregate ``column`` of ``run`` after ``edits`` edits (NaN if absent)."""
        if run == UNEDITED:
            return float(self.unedited.get(column, np.nan))
        snapshots = self.snapshots(run)
        if edits not in snapshots.index or column not in snapshots.columns:
            return float("nan")
        return float(snapshots.loc[edits, column])

    def same_facts(self, a, b) -> bool:
        """Whether the published aggregates of states ``a`` and ``b`` ((run, edits)) score the same facts: two runs
        after the same number of edits on one protocol, or every fact scored by both (the unedited model's facts
        to be edited and a run's facts edited so far, equally many). One run at two edit counts never does (the
        facts edited so far, and the authors' 20% of them, grow with the edits)."""
        if a not in self.scored or b not in self.scored or a == b:
            return False
        (subset_a, count_a), (subset_b, count_b) = self.scored[a], self.scored[b]
        if count_a != count_b or subset_a != subset_b:
            return False
        if UNEDITED in (a[0], b[0]):
            return subset_a == "all"
        return a[1] == b[1] and a[0] != b[0]

    def facts_text(self, state) -> str:
        subset, count = self.scored.get(state, ("", 0))
        return f"{count:,} facts" + (", the authors' 20%" if subset == "authors-20pct" else "")

    def facts(self, run, edits: int, columns=("es", "ps", "ns")) -> pd.DataFrame | None:
        """Per-fact values (index case_id) of ``run`` after ``edits`` edits: the probability comparison
        (nll-comparison; zsRE: token-top1) protocols for es/ps/ns, any protocol for other columns; None if
        not published."""
        if self.records is None or any(column not in self.records.columns for column in columns):
            return None
        rows = self.records[(self.records["method"] == run[0]) & (self.records["variant"] == run[1])]
        rows = rows[rows["edits"] == edits].dropna(subset=list(columns))
        if set(columns) <= {"es", "ps", "ns"}:
            rows = rows[rows["protocol"].str.contains(protocols.EDITING_METHOD)]
        if rows.empty:
            return None
        return rows.groupby("case_id")[list(columns)].mean()

    def paired(self, states, columns=("es", "ps", "ns")):
        """The per-fact values of each (run, edits) in ``states`` on the facts all of them scored: a list of
        (facts, columns) arrays, or a string saying why there is none."""
        frames = [self.facts(run, edits, columns) for run, edits in states]
        absent = [f"{name(run)} at {edits} edits" for (run, edits), frame in zip(states, frames) if frame is None]
        if absent:
            return NO_RECORDS.replace("this run", ", ".join(absent))
        shared = sorted(set.intersection(*(set(frame.index) for frame in frames)))
        if not shared:
            return "no fact was scored in all of " + ", ".join(f"{name(r)} at {e}" for r, e in states)
        return [frame.loc[shared, list(columns)].to_numpy() for frame in frames]


def metric_stat(metric: str):
    """Statistic of one run's per-fact (R, n, 3) es/ps/ns array: S (harmonic mean) or ES/PS/NS (x100)."""
    if metric == "S":
        return lambda x: harmonic_score(x[..., 0], x[..., 1], x[..., 2])
    column = "ES PS NS".split().index(metric)
    return lambda x: 100 * x[..., column].mean(axis=-1)


def s_score(es: float, ps: float, ns: float) -> float:
    """S of three means x100 (``intervals.s_of_means``)."""
    return float(s_of_means(np.array([es, ps, ns])))


def aggregate_range(study: StudyResults, state, metric: str) -> tuple[float, float]:
    """The range (x100) that ``metric`` of a bootstrap resample of ``state``'s facts leaves with probability at
    most ``TAIL`` on either side, for any per-fact scores in [0, 1] with the published means (``mean_bounds``; S from
    the ES, PS, NS bounds at TAIL/3 each, a union bound, since S rises in each: algorithms.md §14.1)."""
    run, edits = state
    count = study.scored[state][1]
    if metric != "S":
        low, high = mean_bounds(study.point(run, edits, metric) / 100, count)
        return 100 * low, 100 * high
    parts = [mean_bounds(study.point(run, edits, m) / 100, count, TAIL / 3) for m in ("ES", "PS", "NS")]
    return s_score(*(100 * p[0] for p in parts)), s_score(*(100 * p[1] for p in parts))  # S rises in each


def missing_records(states, what: str = "per-fact scores") -> str:
    """'per-fact scores of MEMIT at 500 edits, MEMIT at 3,000 edits (records.csv)'."""
    states = sorted(states, key=lambda state: state[1])
    return f"{what} of " + ", ".join(f"{name(run)} at {edits:,} edits" for run, edits in states) + " (records.csv)"


def gap(study: StudyResults, a, b, metric: str = "S") -> tuple[Interval | Bounds, str]:
    """metric(b) - metric(a), paired over the facts both states scored; ``a``, ``b`` = (run, edits).
    Returns (the paired interval, text); without records.csv (Bounds from the published means if both states
    scored the same facts, else unknown bounds naming what is missing, text)."""
    arrays = study.paired([a, b])
    stat = metric_stat(metric)
    if isinstance(arrays, str):
        points = [study.point(run, edits, metric) for run, edits in (a, b)]
        published = ", ".join(f"{name(run)} at {edits:,} {value:.1f}" for (run, edits), value in zip((a, b), points))
        if not study.same_facts(a, b) or any(value != value for value in points):
            missing = missing_records([a, b], "per-fact scores") + " on the same facts"
            facts = " and ".join(study.facts_text(state) for state in (a, b))
            text = f"published {metric}: {published} (on {facts}: not the same facts); no {missing}"
            return unknown(missing), text
        low, high = difference_bounds(aggregate_range(study, a, metric), aggregate_range(study, b, metric))
        bounds = Bounds(points[1] - points[0], low, high, missing_records([a, b]))
        text = (
            f"{metric} on the same {study.facts_text(a)} (published means): {published}; difference "
            f"{bounds.text()} (no records.csv)"
        )
        return bounds, text
    interval = paired_bootstrap(lambda x, y: stat(y) - stat(x), *arrays)
    values = [float(stat(x[None])[0]) for x in arrays]
    text = (
        f"{metric} on the same {len(arrays[0])} facts: {name(a[0])} at {a[1]} {values[0]:.1f}, "
        f"{name(b[0])} at {b[1]} {values[1]:.1f}; difference {interval.text()}"
    )
    return interval, text
