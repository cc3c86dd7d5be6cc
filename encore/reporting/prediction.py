"""The dated prediction for MEMIT and ENCORE at 4,600 edits, answered from the published CSVs.

    python -m encore.reporting.prediction docs/results/lifelong-cpu docs/results/lifelong-cpu-fp32

docs/results/lifelong-cpu/prediction-4600.md was written (2026-12-02, amended 2026-12-06) before any run passed
3,000 edits. Its fits come from the fp32 runs (the second directory) and are recomputed here (``fits``); its decision
rule is fixed there and coded here (``decide``); the result is measured on the bf16-mixed runs (the first
directory). This command writes ``prediction-4600.csv`` (tidy: quantity, run, edits, value, low, high, n_facts) and
replaces the body of the page's ``## Result`` section with text made from that CSV alone. Everything else on the
page stays as written (tests/reporting/test_prediction.py checks it against recorded digests).

With S(run) = 3 / (1/ES + 1/PS + 1/NS) on the authors' seeded 20% of the facts edited so far:

    G = S(MEMIT) − S(ENCORE) at 4,600 edits, paired over the facts both scored, 95% percentile interval of
        ``intervals.RESAMPLES`` joint resamples of those facts (``intervals.paired_bootstrap``, seed ``SEED``)

Fits (each run on its own, least squares on the published S of the fp32 runs): S = a + b·x with x = edits or
ln(edits), over the snapshots from 500 or from 1,000 to 3,000; the predicted gap at 4,600 and the edit count where
the two lines cross. Slope after 3,000: least squares of S on edits over the bf16 snapshots from 3,000 to 4,600.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from encore.evaluation import protocols
from encore.reporting.claims.base import metric_stat
from encore.reporting.claims.intervals import Interval, paired_bootstrap
from encore.reporting.data_files import data_path

PAGE, CSV = "prediction-4600.md", "prediction-4600.csv"
EDITS, BEFORE = 4600, 3000  # the prediction's edit count; the last snapshot the fits saw
MEMIT, ENCORE = ("memit", "plain"), ("memit", "mpes_nc")
NAMES = {MEMIT: "MEMIT", ENCORE: "ENCORE"}
PROTOCOL = protocols.counterfact(protocols.AUTHORS_SUBSET)
# the rule as fixed on the page (2026-12-02; the fourth outcome 2026-12-06), with the gaps it printed, rounded
PREDICTED_GAPS = {"linear in edits, 500-3,000": -0.6, "linear in edits, 1,000-3,000": 0.4,
                  "linear in log(edits), 500-3,000": 1.5, "linear in log(edits), 1,000-3,000": 1.6}  # fmt: skip
LINEAR = [label for label in PREDICTED_GAPS if label.startswith("linear in edits")]
MIDPOINT = 0.95  # G >= this supports the logarithmic family, below it the linear one
INCONCLUSIVE_SNAPSHOTS = (3500, 4000, 4500)  # reported as well if the interval contains 0
COLUMNS = ["quantity", "run", "edits", "value", "low", "high", "n_facts"]


@dataclass(frozen=True)
class Fit:
    family: str  # "linear in edits" or "linear in log(edits)"
    first: int  # the first snapshot fitted (the last is 3,000)
    slope_memit: float  # per 1,000 edits (linear) or per unit of ln(edits)
    slope_encore: float
    crossing: float  # edits where the two fitted lines meet
    gap: float  # predicted S(MEMIT) - S(ENCORE) at 4,600 edits

    @property
    def label(self) -> str:
        return f"{self.family}, {self.first:,}-{BEFORE:,}"


def published_s(metrics: pd.DataFrame, run) -> pd.Series:
    """S on the authors' 20% of the facts edited so far (metrics.csv), by edit count."""
    rows = metrics[(metrics["method"] == run[0]) & (metrics["variant"] == run[1]) & (metrics["metric"] == "S")]
    return rows[rows["protocol"] == PROTOCOL].groupby("edits")["value"].mean().sort_index()


def fits(metrics: pd.DataFrame) -> list[Fit]:
    """The page's four fits, recomputed from the fp32 runs' metrics.csv."""
    memit, encore = published_s(metrics, MEMIT), published_s(metrics, ENCORE)
    found = []
    for family, x_of in (("linear in edits", lambda e: e), ("linear in log(edits)", np.log)):
        for first in (500, 1000):
            edits = np.array([e for e in memit.index if first <= e <= BEFORE and e in encore.index], dtype=float)
            b_m, a_m = np.polyfit(x_of(edits), memit[edits].to_numpy(), 1)
            b_e, a_e = np.polyfit(x_of(edits), encore[edits].to_numpy(), 1)
            x_cross = (a_e - a_m) / (b_m - b_e)
            scale = 1000 if family == "linear in edits" else 1
            found.append(Fit(family, first, b_m * scale, b_e * scale,
                             float(x_cross if scale == 1000 else np.exp(x_cross)),
                             float((a_m + b_m * x_of(EDITS)) - (a_e + b_e * x_of(EDITS)))))  # fmt: skip
    return found


def decide(g: Interval) -> str:
    """The page's rule for G = S(MEMIT) - S(ENCORE) at 4,600 edits, with its amendment's fourth outcome."""
    low_fit, high_fit = min(PREDICTED_GAPS.values()), max(PREDICTED_GAPS.values())
    if g.low > high_fit:
        return "MEMIT still ahead; neither fit"
    if g.high < low_fit:
        return "ENCORE has overtaken MEMIT; neither fit"
    if g.high < 0:
        return "ENCORE has overtaken MEMIT (as the linear fit from 500 predicts)"
    if g.low > 0:
        family = "logarithmic" if g.estimate >= MIDPOINT else "linear"
        return f"MEMIT still ahead; G {'>=' if family == 'logarithmic' else '<'} {MIDPOINT} supports the {family} trend"
    return "inconclusive"


def records_at(records: pd.DataFrame | None, run, edits: int) -> pd.DataFrame | None:
    """Per-fact es, ps, ns of ``run`` after ``edits`` edits on the authors' 20% (index case_id), or None."""
    if records is None:
        return None
    keep = (records["method"] == run[0]) & (records["variant"] == run[1]) & (records["edits"] == edits)
    rows = records[keep & (records["protocol"] == PROTOCOL)]
    return None if rows.empty else rows.groupby("case_id")[["es", "ps", "ns"]].mean()


def paired_gap(records: pd.DataFrame | None, edits: int) -> tuple[Interval, int] | None:
    """G after ``edits`` edits, paired over the facts both runs scored, and the number of those facts."""
    memit, encore = records_at(records, MEMIT, edits), records_at(records, ENCORE, edits)
    if memit is None or encore is None:
        return None
    shared = sorted(set(memit.index) & set(encore.index))
    stat = metric_stat("S")
    arrays = [frame.loc[shared].to_numpy() for frame in (memit, encore)]
    return paired_bootstrap(lambda m, e: stat(m) - stat(e), *arrays), len(shared)


def slope(s: pd.Series) -> float:
    """Least-squares slope of S per 1,000 edits over the snapshots from 3,000 to 4,600 (NaN with fewer than 2)."""
    after = s[(s.index >= BEFORE) & (s.index <= EDITS)]
    return float(np.polyfit(after.index.to_numpy(float), after.to_numpy(), 1)[0] * 1000) if len(after) > 1 else np.nan


def measure(study: Path, baseline: Path) -> pd.DataFrame:
    """Every number of the Result section, as tidy rows (COLUMNS)."""
    data, fp32 = study / "data", pd.read_csv(data_path(baseline / "data", "metrics.csv"))
    metrics = pd.read_csv(data_path(data, "metrics.csv"))
    path = data_path(data, "records.csv")
    records = pd.read_csv(path) if path.exists() else None
    rows = []
    for fit in fits(fp32):
        rows.append(("predicted gap: " + fit.label, "", EDITS, fit.gap, np.nan, np.nan, np.nan))
        rows += [("fit slope: " + fit.label, NAMES[run], BEFORE, value, np.nan, np.nan, np.nan)
                 for run, value in ((MEMIT, fit.slope_memit), (ENCORE, fit.slope_encore))]  # fmt: skip
    for run in (MEMIT, ENCORE):
        s = published_s(metrics, run)
        rows += [("S (bf16-mixed)", NAMES[run], int(e), float(v), np.nan, np.nan, np.nan) for e, v in s.items()]
        rows += [("S (fp32)", NAMES[run], int(e), float(v), np.nan, np.nan, np.nan)
                 for e, v in published_s(fp32, run).items()]  # fmt: skip
        rows.append(("slope per 1,000 edits after 3,000", NAMES[run], EDITS, slope(s), np.nan, np.nan, np.nan))
    for edits in (*INCONCLUSIVE_SNAPSHOTS, EDITS):
        found = paired_gap(records, edits)
        if found:
            g, n = found
            rows.append(("G = S(MEMIT) - S(ENCORE), paired", "", edits, g.estimate, g.low, g.high, n))
    return pd.DataFrame(rows, columns=COLUMNS)


def _value(frame: pd.DataFrame, quantity: str, run: str = "", edits: int = EDITS) -> pd.Series | None:
    rows = frame[(frame["quantity"] == quantity) & (frame["run"].fillna("") == run) & (frame["edits"] == edits)]
    return None if rows.empty else rows.iloc[0]


def result_text(frame: pd.DataFrame) -> str:
    """The Result section's body, from prediction-4600.csv alone."""
    g_name = "G = S(MEMIT) - S(ENCORE), paired"
    bf16 = frame[frame["quantity"] == "S (bf16-mixed)"]
    reached = bf16.groupby("run")["edits"].max().reindex(list(NAMES.values()), fill_value=0).astype(int)
    lines = [f"Generated by `python -m encore.reporting.prediction` from [{CSV}]({CSV}); measured on the bf16-mixed "
             "runs of this study (the amendment below)."]  # fmt: skip
    g = _value(frame, g_name)
    if g is None:
        lines.append(f"\n**No data yet:** G is decided at {EDITS:,} edits, with per-fact scores of both runs; MEMIT "
                     f"has reached {reached['MEMIT']:,} edits and ENCORE {reached['ENCORE']:,} (snapshots evaluated "
                     "and published).")  # fmt: skip
    else:
        interval = Interval(g["value"], g["low"], g["high"])
        predicted = sorted(PREDICTED_GAPS.values())
        lines.append(f"\n**Outcome: {decide(interval)}.** At {EDITS:,} edits G = {interval.text('.2f')} on the "
                     f"same {int(g['n_facts']):,} facts (the authors' 20%); the fits predicted {predicted[0]:+.1f} "
                     f"to {predicted[-1]:+.1f}.")  # fmt: skip
        if decide(interval) == "inconclusive":
            for edits in INCONCLUSIVE_SNAPSHOTS:
                at = _value(frame, g_name, edits=edits)
                text = "no data" if at is None else f"{Interval(at['value'], at['low'], at['high']).text('.2f')}"
                lines.append(f"- G at {edits:,} edits: {text}")
    table = ["", "S on the authors' 20% of the facts edited so far, fp32 (the fits' data) and bf16-mixed (this "
             "study's runs):", "", "| edits | MEMIT fp32 | ENCORE fp32 | MEMIT bf16-mixed | ENCORE bf16-mixed |",
             "|---:|---:|---:|---:|---:|"]  # fmt: skip
    edits_seen = sorted(set(frame[frame["quantity"].str.startswith("S (")]["edits"].astype(int)))
    for edits in edits_seen:
        cells = [_value(frame, q, name, edits) for q in ("S (fp32)", "S (bf16-mixed)") for name in NAMES.values()]
        table.append(f"| {edits:,} | " + " | ".join("" if c is None else f"{c['value']:.2f}" for c in cells) + " |")
    lines += table
    slopes = [_value(frame, "slope per 1,000 edits after 3,000", name) for name in NAMES.values()]
    if all(s is not None and s["value"] == s["value"] for s in slopes):
        fitted = {name: ", ".join(f"{_value(frame, 'fit slope: ' + label, name, BEFORE)['value']:+.2f} from "
                                  f"{label.split(', ')[1].split('-')[0]}" for label in LINEAR)
                  for name in NAMES.values()}  # fmt: skip
        lines.append(f"\nSlope over 3,000-{EDITS:,} edits (bf16-mixed), per 1,000 edits: MEMIT "
                     f"{slopes[0]['value']:+.2f} (the linear fits to 3,000: {fitted['MEMIT']}), ENCORE "
                     f"{slopes[1]['value']:+.2f} ({fitted['ENCORE']}).")  # fmt: skip
    else:
        lines.append(f"\nSlope over 3,000-{EDITS:,} edits: no data yet (it needs two snapshots from 3,000 on).")
    return "\n".join(lines) + "\n"


def write(study: Path, baseline: Path) -> list[Path]:
    """prediction-4600.csv, and the page's Result section regenerated from it."""
    for needed in (study / PAGE, data_path(study / "data", "metrics.csv"), data_path(baseline / "data", "metrics.csv")):
        if not needed.exists():
            raise FileNotFoundError(f"{needed}: not found; give a published study with {PAGE} and its fits' study")
    frame = measure(study, baseline)
    frame.to_csv(study / CSV, index=False, float_format="%.6g")
    frame = pd.read_csv(study / CSV)  # the page is made from the CSV as written
    page = study / PAGE
    text = page.read_text()
    found = re.search(r"^## Result\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    if not found:
        raise ValueError(f"{page}: no '## Result' section followed by another section; restore the page from git")
    page.write_text(text[: found.start(1)] + result_text(frame) + "\n" + text[found.end(1) :])
    return [study / CSV, page]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path, help="the published study that ran MEMIT and ENCORE to 4,600 edits")
    parser.add_argument("baseline", type=Path, help="the published study whose runs to 3,000 edits the fits used")
    args = parser.parse_args(argv)
    for path in write(args.study, args.baseline):
        print(f"wrote {path}")


if __name__ == "__main__":
    from encore.cli import run

    run(main)
