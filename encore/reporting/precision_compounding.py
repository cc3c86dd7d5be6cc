"""How bf16-mixed editing compounds over sequential edits: a study edited in bf16-mixed against the same runs edited
in fp32, snapshot by snapshot, paired over the same facts.

    python -m encore.reporting.precision_compounding docs/results/lifelong-cpu docs/results/lifelong-cpu-fp32

writes ``precision-compounding.csv`` (tidy: run, method, variant, edits, metric, precision, value, low, high, facts,
n_facts) and ``precision-compounding.md`` (made from that CSV alone) into the first study. The bf16-mixed study grows
with every round of snapshots, so rerun this command after each ``make study-collect`` (tools/study.py ``collect``
publishes the study, not this page); tests/reporting/test_precision_compounding.py fails until it is rerun.

For each run (method, variant) and each snapshot (an edit count with editing scores in metrics.csv) of both studies,
with es, ps, ns in [0, 1] the per-fact scores of records.csv:

    ES, PS, NS = 100 · mean over the facts of es, ps, ns           S = 3 / (1/ES + 1/PS + 1/NS)
    Δm = m(bf16-mixed) − m(fp32)                                    (m = ES, PS, NS, S)
    growth_L = 100 · (‖W_L‖_F at the snapshot / ‖W_L‖_F at 0 edits − 1),   L = the last edited layer (norms.csv)
    Δgrowth_L = growth_L(bf16-mixed) − growth_L(fp32)               (no interval: one value per run)

Δm is paired over the facts both studies scored (case_id): all the facts edited so far where both have them, else
the authors' 20% of them. Its 95% interval is the percentile interval of ``intervals.RESAMPLES`` resamples of those
facts, drawn jointly for both runs (``intervals.paired_bootstrap``, seed ``intervals.SEED``), so the page
regenerates exactly. Where either study publishes no records.csv, Δm is the difference of the published means and has
no interval. Refused with one line naming both files: studies that differ in anything but the edit precision (model,
dataset, order, any runs.csv setting both record, scoring precision), a first study not edited in bf16-mixed, a
second not edited in fp32. A run or snapshot in only one study keeps its rows for that precision and is listed on the
page as not compared.
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encore.evaluation import protocols
from encore.reporting.claims.base import metric_stat
from encore.reporting.claims.intervals import LEVEL, RESAMPLES, SEED, Interval, paired_bootstrap
from encore.reporting.data_files import data_path
from encore.reporting.outputs import LABELS, label

CSV, PAGE = "precision-compounding.csv", "precision-compounding.md"
BF16, FP32, DIFFERENCE = "bf16-mixed", "fp32", "bf16-fp32"
METRICS = ("ES", "PS", "NS", "S")
COLUMNS = ["run", "method", "variant", "edits", "metric", "precision", "value", "low", "high", "facts", "n_facts"]
# runs.csv columns that may differ between the two studies; every other column both record must be equal
NOT_SETTINGS = ("method", "variant", "edits", "edit_precision", "code")
DEFAULTS = {"edit_precision": FP32, "score_precision": FP32}  # runs.csv written before the keys: fp32 (as collect)
FACTS = {"all": "all edited", protocols.AUTHORS_SUBSET: "the authors' 20%"}  # the column facts, on the page
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Study:
    path: Path  # the published directory (its data/ holds the CSVs)
    metrics: pd.DataFrame  # editing rows (ES, PS, NS, S, n_records) of the edited runs
    records: pd.DataFrame | None  # per-fact scores, None where not published
    norms: pd.DataFrame
    runs: pd.DataFrame  # one row per run, DEFAULTS filled in
    filled: list[str]  # the runs.csv columns read as DEFAULTS (absent from the file)
    unedited: bool  # whether the unedited model was scored (it is not compared: it is not edited)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return data_path(self.path / "data", name)

    @property
    def precision(self) -> str:
        return str(self.runs["edit_precision"].iloc[0]) if len(self.runs) else FP32


def load(path: Path) -> Study:
    """A published study's data/ CSVs (plain or gzip-compressed)."""
    path = Path(path)
    data = path / "data"
    if not data_path(data, "metrics.csv").exists():
        raise ValueError(f"{data / 'metrics.csv'}: missing; give a published study directory (docs/results/<study>)")
    metrics = pd.read_csv(data_path(data, "metrics.csv"))
    editing = metrics["protocol"].str.match(protocols.EDITING_SNAPSHOT) & metrics["metric"].isin(
        [*METRICS, "n_records"]
    )
    runs = pd.read_csv(data_path(data, "runs.csv"))
    filled = [column for column in DEFAULTS if column not in runs]
    for column, default in DEFAULTS.items():
        runs[column] = runs[column].fillna(default) if column in runs else default
    unedited = metrics["method"] == "unedited"
    records = pd.read_csv(data_path(data, "records.csv")) if data_path(data, "records.csv").exists() else None
    norms = pd.read_csv(data_path(data, "norms.csv"))
    return Study(path, metrics[editing & ~unedited], records, norms, runs, filled, bool(unedited.any()))


# ---- refusals: the two studies differ only in the edit precision ----


def _same(a, b) -> bool:
    """Equal settings: both empty, equal numbers, or equal text."""
    if pd.isna(a) or pd.isna(b):
        return pd.isna(a) and pd.isna(b)
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _refuse(bf16: Study, fp32: Study, name: str, what: str) -> None:
    raise ValueError(
        f"{bf16.file(name)} and {fp32.file(name)}: {what}; the two studies must differ only in the edit precision "
        f"({BF16} first, {FP32} second)"
    )


def check_comparable(bf16: Study, fp32: Study) -> list[str]:
    """Refuse studies that differ in anything but the edit precision; returns the runs.csv columns only one study
    records (written before the key existed), which are not compared."""
    for study, wanted in ((bf16, BF16), (fp32, FP32)):
        found = sorted(set(study.runs["edit_precision"].astype(str)) - {wanted})
        if found:
            _refuse(bf16, fp32, "runs.csv", f"{study.name} is edited in {', '.join(found)}, not only {wanted}")
    for column, frames in (("score_precision", "runs"), ("model", "runs"), ("dataset", "metrics")):
        values = [sorted(set(getattr(study, frames)[column].astype(str))) for study in (bf16, fp32)]
        if values[0] != values[1]:
            name = f"{frames}.csv"
            _refuse(bf16, fp32, name, f"{column} {', '.join(values[0])} against {', '.join(values[1])}")
    shared = [c for c in bf16.runs.columns if c in fp32.runs.columns and c not in NOT_SETTINGS]
    for run in sorted(set(_runs(bf16.runs)) & set(_runs(fp32.runs))):
        a, b = (study.runs.set_index(["method", "variant"]).loc[[run]].iloc[0] for study in (bf16, fp32))
        for column in shared:
            if not _same(a[column], b[column]):
                _refuse(bf16, fp32, "runs.csv", f"{label(*run)} has {column} {a[column]} against {b[column]}")
    return sorted(set(bf16.runs.columns) ^ set(fp32.runs.columns))  # DEFAULTS are filled in both


def _runs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["method"], frame["variant"])))


# ---- the rows of one snapshot ----


def _protocol(studies: list[Study], run, edits: int) -> str:
    """The editing protocol every study scored the snapshot on: all facts edited so far where they all have it."""
    sets = [set(_scores(study, run, edits)["protocol"]) for study in studies]
    shared = sorted(set.intersection(*sets), key=lambda protocol: protocols.EDITED_SO_FAR not in protocol)
    if not shared:
        _refuse(*studies, "metrics.csv", f"{label(*run)} at {edits:,} edits has no editing protocol in both")
    return shared[0]


def _scores(study: Study, run, edits: int | None) -> pd.DataFrame:
    """The editing-score rows of ``run`` after ``edits`` edits (None: every snapshot)."""
    m = study.metrics
    rows = m[(m["method"] == run[0]) & (m["variant"] == run[1])]
    return rows if edits is None else rows[rows["edits"] == edits]


def _published(study: Study, run, edits: int, protocol: str) -> dict[str, float]:
    rows = _scores(study, run, edits)  # ES, PS, NS, S, n_records
    return rows[rows["protocol"] == protocol].groupby("metric")["value"].first().to_dict()


def _facts(study: Study, run, edits: int, protocol: str) -> pd.DataFrame | None:
    """Per-fact es, ps, ns (index case_id), None without records.csv."""
    r = study.records
    if r is None:
        return None
    rows = r[(r["method"] == run[0]) & (r["variant"] == run[1]) & (r["edits"] == edits) & (r["protocol"] == protocol)]
    return rows.groupby("case_id")[["es", "ps", "ns"]].mean() if len(rows) else None


def _row(run, edits, metric, precision, value, low=np.nan, high=np.nan, facts="", n_facts=pd.NA) -> dict:
    return dict(zip(COLUMNS, (label(*run), *run, edits, metric, precision, value, low, high, facts, n_facts)))


def _paired(metric: str, arrays) -> Interval:
    """metric(bf16-mixed) − metric(fp32) on per-fact (facts, 3) arrays, with its paired bootstrap interval."""
    stat = metric_stat(metric)
    return paired_bootstrap(lambda a, b: stat(a) - stat(b), *arrays)


def score_rows(studies: list[Study], run, edits: int, labels=None, difference: str = DIFFERENCE) -> list[dict]:
    """ES, PS, NS, S of each study's snapshot and, with two studies, their differences (first − second): paired over
    the facts both scored where both publish per-fact scores, else of the published means (no interval). Each row's
    ``precision`` column is its study's edit precision, or its entry of ``labels``; the differences' ``difference``."""
    labels = labels or [study.precision for study in studies]
    protocol = _protocol(studies, run, edits)
    subset = "all" if protocols.EDITED_SO_FAR in protocol else protocols.AUTHORS_SUBSET
    frames = [_facts(study, run, edits, protocol) for study in studies]
    if all(frame is not None for frame in frames):
        shared = sorted(set.intersection(*(set(frame.index) for frame in frames)))
        arrays = [frame.loc[shared].to_numpy() for frame in frames]
        count = len(shared)
        values = [{m: float(metric_stat(m)(x[None])[0]) for m in METRICS} for x in arrays]
        deltas = {m: _paired(m, arrays) for m in METRICS} if len(arrays) == 2 else {}
    else:
        published = [_published(study, run, edits, protocol) for study in studies]
        counts = sorted({int(values["n_records"]) for values in published})
        if len(counts) > 1:
            _refuse(*studies, "metrics.csv", f"{label(*run)} at {edits:,} edits is scored on {counts} facts")
        count = counts[0]
        values = [{m: p[m] for m in METRICS} for p in published]
        deltas = {m: Interval(values[0][m] - values[-1][m], np.nan, np.nan) for m in METRICS}
    rows = []
    for metric in METRICS:
        rows += [_row(run, edits, metric, name, v[metric], facts=subset, n_facts=count)
                 for name, v in zip(labels, values)]  # fmt: skip
        if len(studies) == 2:
            d = deltas[metric]
            rows.append(_row(run, edits, metric, difference, d.estimate, d.low, d.high, subset, count))
    return rows


def growth_rows(studies: list[Study], run, edits: int, labels=None, difference: str = DIFFERENCE) -> list[dict]:
    """growth_L of each study's snapshot (where its norms.csv has it and 0 edits) and, with both, their difference;
    labelled as in ``score_rows``."""
    labels = labels or [study.precision for study in studies]
    layers = next(str(s.runs.set_index(["method", "variant"]).loc[[run], "layers"].iloc[0]) for s in studies)
    layer = max(int(x) for x in layers.split())
    rows, values = [], []
    for study, name in zip(studies, labels):
        n = study.norms
        norms = n[(n["method"] == run[0]) & (n["variant"] == run[1]) & (n["layer"] == layer)]
        norm = norms.groupby("edits")["frobenius_norm"].mean()
        if edits in norm.index and 0 in norm.index:
            values.append(100 * (norm[edits] / norm[0] - 1))
            rows.append(_row(run, edits, f"growth_L{layer}", name, values[-1]))
    if len(values) == 2:
        rows.append(_row(run, edits, f"growth_L{layer}", difference, values[0] - values[1]))
    return rows


def _order(run) -> tuple:
    """The runs in the order of ``outputs.LABELS`` (MEMIT first), others after them."""
    names = list(LABELS)
    return (names.index(run) if run in names else len(names), run)


def compare(bf16: Study, fp32: Study) -> pd.DataFrame:
    """The tidy rows of every run and snapshot of either study (COLUMNS)."""
    rows = []
    for run in sorted(set(_runs(bf16.metrics)) | set(_runs(fp32.metrics)), key=_order):
        snapshots = [set(_scores(study, run, None)["edits"]) for study in (bf16, fp32)]
        for edits in sorted(set.union(*snapshots)):
            studies = [study for study, have in zip((bf16, fp32), snapshots) if edits in have]
            rows += score_rows(studies, run, int(edits)) + growth_rows(studies, run, int(edits))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"edits": int, "n_facts": "Int64"})


def csv_text(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.4f", lineterminator="\n")


# ---- the page, from the CSV's text alone ----


def _shown(path: Path) -> str:
    """A study directory as the command line names it: relative to the repository, else its name."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def _signed(value: float, digits: int = 1) -> str:
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text  # no sign on zero


def _edits(counts) -> str:
    counts = [f"{int(c):,}" for c in counts]
    return counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + f" and {counts[-1]}"


def reading(table: pd.DataFrame) -> str:
    """One sentence by a fixed rule: the ΔS intervals that exclude 0 (or that every one contains 0), then the
    largest |ΔS| with its run and edit count."""
    deltas = table[(table["metric"] == "S") & (table["precision"] == DIFFERENCE)]
    if deltas.empty:
        return "No snapshot is in both studies yet, so nothing is compared."
    with_interval = deltas.dropna(subset=["low", "high"])
    excluding = with_interval[(with_interval["low"] > 0) | (with_interval["high"] < 0)]
    if with_interval.empty:
        first = f"None of the {len(deltas)} ΔS has an interval (one study publishes no per-fact scores)"
    elif excluding.empty:
        first = f"Every one of the {len(with_interval)} ΔS intervals contains 0"
    else:
        where = ", ".join(f"{r.run} at {r.edits:,} edits ({_signed(r.value)})" for r in excluding.itertuples())
        first = f"{len(excluding)} of the {len(with_interval)} ΔS intervals exclude 0: {where}"
    if 0 < len(with_interval) < len(deltas):
        first += f" ({len(deltas) - len(with_interval)} ΔS without interval)"
    top = deltas.loc[deltas["value"].abs().idxmax()]
    return f"{first}; the largest |ΔS| is {abs(top['value']):.1f} points ({top['run']} at {top['edits']:,} edits)."


def protocol(table: pd.DataFrame, bf16: Study, fp32: Study, uncompared: list[str]) -> list[str]:
    """What is compared, paired over which facts, with which bootstrap, made by which command; then the notes."""
    link = os.path.relpath(fp32.path.resolve() / "results.md", bf16.path.resolve())
    command = f"python -m encore.reporting.precision_compounding {_shown(bf16.path)} {_shown(fp32.path)}"
    lines = [
        f"Each run of [{bf16.name}](results.md), edited in {BF16}, beside the same run of [{fp32.name}]({link}), "
        f"edited in {FP32}: the same model, dataset, edit order and hyperparameters (every runs.csv setting both "
        f"studies record is checked equal), both scored in {bf16.runs['score_precision'].iloc[0]}. At every snapshot "
        f"both studies evaluated: ES, PS, NS and S (x100) of each, and Δ = {BF16} − {FP32}, paired over the same facts "
        "(case_id): all the facts edited so far where both studies scored them, else the authors' 20% of them (column "
        f"*facts*). The intervals are {LEVEL:.0%} percentile intervals of {RESAMPLES:,} bootstrap resamples of those "
        f"facts, drawn jointly for both runs (seed {SEED}, `encore.reporting.claims.intervals.paired_bootstrap`). "
        "Δ growth is the difference of the relative Frobenius norm growth of the last edited layer L, "
        "100 · (‖W_L‖_F / ‖W_L‖_F at 0 edits − 1), in percentage points (data/norms.csv), without interval. Generated by "
        f"`{command}` from the two studies' data/metrics.csv, records.csv, norms.csv and runs.csv; every number in "
        f"the tables and the reading is in [{CSV}]({CSV}).",
        "",
    ]
    deltas = table[(table["metric"] == "S") & (table["precision"] == DIFFERENCE)]
    if deltas["low"].isna().any():
        absent = [study.name for study in (bf16, fp32) if study.records is None] or ["one study (these snapshots)"]
        lines.append(f"- † no interval: {' and '.join(absent)} publishes no per-fact scores (data/records.csv), so "
                     "the difference is of the published means.")  # fmt: skip
    lines += [f"- {study.name}'s runs.csv predates {', '.join(study.filled)}: read as {FP32}, as the collect rule does."
              for study in (bf16, fp32) if study.filled]  # fmt: skip
    if uncompared:
        lines.append(f"- runs.csv columns only one study records, not compared: {', '.join(uncompared)}.")
    return lines + [""] if lines[-1] else lines


def run_table(rows: pd.DataFrame) -> list[str]:
    """Edits as rows: facts, S of each precision, ΔS with its interval, ΔES, ΔPS, ΔNS, Δ growth."""
    growth = sorted(m for m in rows["metric"].unique() if m.startswith("growth_L"))
    header = f"| edits | facts | S {BF16} | S {FP32} | ΔS [95%] | ΔES | ΔPS | ΔNS |"
    header += "".join(f" Δ growth {m.removeprefix('growth_')} |" for m in growth)
    lines = [header, "|---:|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(growth)]
    for edits, snapshot in rows.groupby("edits"):
        cell = {(r.metric, r.precision): r for r in snapshot.itertuples()}
        if ("S", DIFFERENCE) not in cell:
            continue
        s = cell["S", DIFFERENCE]
        facts = f"{s.n_facts:,} ({FACTS[s.facts]})"
        interval = " †" if pd.isna(s.low) else f" [{_signed(s.low)}, {_signed(s.high)}]"
        deltas = [_signed(cell[m, DIFFERENCE].value) for m in ("ES", "PS", "NS")]
        deltas += [_signed(cell[m, DIFFERENCE].value, 2) if (m, DIFFERENCE) in cell else "" for m in growth]
        values = [f"{cell['S', p].value:.1f}" for p in (BF16, FP32)]
        lines.append(f"| {edits:,} | {facts} | {' | '.join(values)} | {_signed(s.value)}{interval} | "
                     f"{' | '.join(deltas)} |")  # fmt: skip
    return lines + [""]


def not_compared(table: pd.DataFrame, studies: dict[str, Study]) -> list[str]:
    """The snapshots with rows of one precision only, by run and study."""
    lines = []
    for (run, precision), rows in table.groupby(["run", "precision"], sort=False):
        if precision == DIFFERENCE:
            continue
        paired = set(table.loc[(table["run"] == run) & (table["precision"] == DIFFERENCE), "edits"])
        alone = sorted(set(rows.loc[rows["metric"] == "S", "edits"]) - paired)
        if alone:
            lines.append(f"- {run} at {_edits(alone)} edits: only in {studies[precision].name}")
    if any(study.unedited for study in studies.values()):
        lines.append("- the unedited model: not edited, so not compared")
    return ["## Not compared", "", *lines, ""] if lines else []


def page(csv: str, bf16: Study, fp32: Study, uncompared: list[str]) -> str:
    table = pd.read_csv(io.StringIO(csv), keep_default_na=False, na_values=[""])
    table = table.astype({"n_facts": "Int64"})
    lines = [f"# bf16-mixed against fp32 editing over sequential edits: {bf16.name} and {fp32.name}", ""]
    lines += protocol(table, bf16, fp32, uncompared)
    lines += [f"**Reading** (a fixed rule: whether each ΔS interval contains 0, and the largest |ΔS|): "
              f"{reading(table)}", ""]  # fmt: skip
    for run, rows in table.groupby("run", sort=False):
        if (rows["precision"] == DIFFERENCE).any():
            lines += [f"## {run}", "", *run_table(rows)]
    lines += not_compared(table, {BF16: bf16, FP32: fp32})
    return "\n".join(lines).rstrip() + "\n"


def generate(bf16_dir: Path, fp32_dir: Path) -> tuple[str, str]:
    """The CSV's and the page's text."""
    bf16, fp32 = load(bf16_dir), load(fp32_dir)
    uncompared = check_comparable(bf16, fp32)
    csv = csv_text(compare(bf16, fp32))
    return csv, page(csv, bf16, fp32, uncompared)


def write(bf16_dir: Path, fp32_dir: Path) -> list[Path]:
    csv, md = generate(bf16_dir, fp32_dir)
    paths = [Path(bf16_dir) / CSV, Path(bf16_dir) / PAGE]
    for path, text in zip(paths, (csv, md)):
        path.write_text(text)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bf16", help="the published study edited in bf16-mixed (docs/results/<study>); written into")
    parser.add_argument("fp32", help="the published study of the same runs edited in fp32")
    args = parser.parse_args(argv)
    for path in write(Path(args.bf16), Path(args.fp32)):
        print(f"wrote {path}")


if __name__ == "__main__":
    from encore.cli import run

    run(main)
