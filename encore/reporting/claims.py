"""The paper's claims beside what a study measured, from its collected CSVs alone (docs/results/<study>/claims.md).

Each claim is a function of the collected metrics, norms and ledger that returns the numbers it measured
and a verdict by a rule fixed here, before any study was run: "reproduced", "partly", "not reproduced",
or "not measured" (with the runs that are missing). The rule is printed beside every verdict, so a
reader can check it against the numbers; nothing in this file is tuned to a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from encore.reporting.report import ENCORE_FAMILY, label, read_csvs, seconds_per_edit, summary

MEMIT, MPES, NC, ENCORE = ENCORE_FAMILY
# Average F1 over 6 tasks x 100 items moves by about 2 points (x100) between samples of the items
# (binomial standard error sqrt(0.25 / 600) = 2%): a smaller decline is not counted as one.
DOWNSTREAM_NOISE = 2.0


@dataclass
class Claim:
    paper: str  # the claim, with where the paper makes it
    measured: str
    verdict: str
    rule: str


class Study:
    """The collected CSVs of one study (one model, one data set, one or more orderings averaged)."""

    def __init__(self, data: Path):
        data = Path(data)
        self.metrics = read_csvs([data / "metrics.csv"])
        self.norms = read_csvs([data / "norms.csv"])
        self.ledger = read_csvs([data / "ledger.csv"])
        runs = read_csvs([data / "runs.csv"])
        self.layers = {(r.method, r.variant): [int(x) for x in str(r.layers).split()] for r in runs.itertuples()}
        table = summary(self.metrics)
        self.unedited = table[table["method"] == "unedited"].mean(numeric_only=True)
        self.table = table[table["method"] != "unedited"]

    def has(self, *runs) -> bool:
        return all(((self.table["method"] == m) & (self.table["variant"] == v)).any() for m, v in runs)

    def snapshots(self, run) -> pd.DataFrame:
        rows = self.table[(self.table["method"] == run[0]) & (self.table["variant"] == run[1])]
        return rows.groupby("edits").mean(numeric_only=True).sort_index()

    def final(self, run) -> pd.Series:
        return self.snapshots(run).iloc[-1]

    def edits(self, run) -> int:
        return int(self.snapshots(run).index[-1])

    def edited_norm(self, run, layer: int | None = None) -> pd.Series:
        """Mean Frobenius norm of the edited layers' down-projections (or of one ``layer``) after every batch
        (index: edits)."""
        rows = self.norms[(self.norms["method"] == run[0]) & (self.norms["variant"] == run[1])]
        rows = rows[rows["layer"].isin([layer] if layer is not None else self.layers[run])]
        return rows.groupby(["edits", "layer"])["frobenius_norm"].mean().groupby("edits").mean().sort_index()

    def mlp_share(self, run=None) -> float:
        """Mean share of the MLP output in the edited layers' residual stream (Fig. 5); the unedited model
        when ``run`` is None, measured on the same layers as MEMIT's."""
        method = "unedited" if run is None else run[0]
        rows = self.metrics[self.metrics["method"] == method]
        if run is not None:
            rows = rows[(rows["variant"] == run[1]) & (rows["edits"] == self.edits(run))]
        layers = self.layers[run or MEMIT]
        names = [f"activation_share.L{layer:02d}.mlp" for layer in layers]
        return float(rows[rows["metric"].isin(names)]["value"].mean())


def _missing(paper: str, rule: str, runs) -> Claim:
    names = ["the unedited model" if run[0] == "unedited" else label(*run) for run in runs]
    return Claim(paper, "needs " + ", ".join(names), "not measured", rule)


def _thirds(series: pd.Series) -> tuple[float, float]:
    """Growth over the first and over the last third of the edits (nearest batch boundaries)."""
    edits = series.index.to_numpy()
    end = edits[-1]

    def at(count):
        return float(series.iloc[abs(edits - count).argmin()])

    return at(end / 3) - at(0), at(end) - at(2 * end / 3)


def norm_growth(study: Study) -> Claim:
    paper = "MEMIT's edited-layer norm grows with the number of edits, faster as edits accumulate (Sec. 5, Fig. 1)"
    rule = "reproduced: growth over the last third of the edits > over the first third > 0; partly: grows, not faster"
    if not study.has(MEMIT):
        return _missing(paper, rule, [MEMIT])
    series = study.edited_norm(MEMIT)
    first, last = _thirds(series)
    total = float(series.iloc[-1] - series.iloc[0])
    third = int(series.index[-1]) // 3
    measured = (
        f"mean ‖W‖_F of layers {study.layers[MEMIT]}: {series.iloc[0]:.2f} -> {series.iloc[-1]:.2f} after "
        f"{int(series.index[-1])} edits ({100 * total / series.iloc[0]:+.1f}%); first ~{third} edits {first:+.2f}, "
        f"last ~{third} edits {last:+.2f}"
    )
    top = max(study.layers[MEMIT])
    top_series = study.edited_norm(MEMIT, top)
    top_first, top_last = _thirds(top_series)
    measured += (
        f" (the last edited layer, {top}: {top_series.iloc[0]:.2f} -> {top_series.iloc[-1]:.2f}; first "
        f"{top_first:+.2f}, last {top_last:+.2f})"
    )
    verdict = "reproduced" if last > first > 0 else "partly" if total > 0 else "not reproduced"
    return Claim(paper, measured, verdict, rule)


def norm_constraint(study: Study) -> Claim:
    paper = "The norm constraint stops the growth: ENCORE's edited-layer norm stays near the unedited (Fig. 7b)"
    rule = "reproduced: ENCORE's growth <= half of MEMIT's; partly: smaller than MEMIT's"
    if not study.has(MEMIT, ENCORE):
        return _missing(paper, rule, [MEMIT, ENCORE])
    growth = {run: study.edited_norm(run) for run in (MEMIT, NC, ENCORE) if study.has(run)}
    total = {run: float(s.iloc[-1] - s.iloc[0]) for run, s in growth.items()}
    measured = "; ".join(
        f"{label(*run)} {total[run]:+.2f} ({100 * total[run] / growth[run].iloc[0]:+.1f}%) after {growth[run].index[-1]}"
        for run in growth
    )
    ratio = total[ENCORE] / total[MEMIT] if total[MEMIT] > 0 else float("inf")
    verdict = "reproduced" if ratio <= 0.5 else "partly" if ratio < 1 else "not reproduced"
    return Claim(paper, measured, verdict, rule)


def mpes_probability(study: Study) -> Claim:
    paper = "MPES brings the edited facts' probability down towards that of facts the model knows (Table 1)"
    rule = "reproduced: MEMIT+MPES's p(new) is closer to the unedited model's p(true) of known facts than MEMIT's"
    known = study.unedited.get("p_true_known", float("nan"))
    if not study.has(MEMIT, MPES) or pd.isna(known):
        return _missing(paper, rule, [MEMIT, MPES, ("unedited", "unedited")])
    plain, mpes = study.final(MEMIT)["p_new"], study.final(MPES)["p_new"]
    measured = (
        f"p(new) of the edited facts at the last snapshot: MEMIT {plain:.3f}, MEMIT+MPES {mpes:.3f}; "
        f"p(true) of known facts, unedited: {known:.3f}"
    )
    closer = abs(mpes - known) < abs(plain - known)
    verdict = "reproduced" if closer else "partly" if mpes < plain else "not reproduced"
    return Claim(paper, measured, verdict, rule)


def mpes_speed(study: Study) -> Claim:
    paper = "MPES makes editing faster: fewer target-optimisation steps (Table 1: 39-76% less time)"
    rule = "reproduced: MPES lowers s/edit for MEMIT and (if run) for MEMIT+NC -> ENCORE"
    pairs = [(MEMIT, MPES)] + ([(NC, ENCORE)] if study.has(NC, ENCORE) else [])
    if not study.has(MEMIT, MPES):
        return _missing(paper, rule, [MEMIT, MPES])
    timing = seconds_per_edit(study.ledger).set_index(["method", "variant"])
    parts, faster = [], []
    for without, with_mpes in pairs:
        a, b = timing.loc[without], timing.loc[with_mpes]
        faster.append(b["s_per_edit"] < a["s_per_edit"])
        parts.append(
            f"{label(*without)} {a['s_per_edit']:.2f} s/edit, {a['iterations']:.1f} steps -> {label(*with_mpes)} "
            f"{b['s_per_edit']:.2f} s/edit, {b['iterations']:.1f} steps ({100 * (b['s_per_edit'] / a['s_per_edit'] - 1):+.0f}%)"
        )
    verdict = "reproduced" if all(faster) else "partly" if any(faster) else "not reproduced"
    return Claim(paper, "; ".join(parts), verdict, rule)


def _declines(study: Study, column: str):
    base = study.unedited.get(column, float("nan"))
    runs = [run for run in ENCORE_FAMILY if study.has(run)]
    return base, {run: base - study.final(run)[column] for run in runs if column in study.table}


def downstream(study: Study, column: str, protocol: str) -> Claim:
    paper = f"MEMIT's downstream average declines over the edits; ENCORE's declines least (Figs. 3, 6; {protocol})"
    rule = (
        f"reproduced: MEMIT declines by more than {DOWNSTREAM_NOISE:g} points and ENCORE's decline is the smallest of "
        "the runs; partly: ENCORE's is smaller than MEMIT's"
    )
    base, declines = _declines(study, column)
    if pd.isna(base) or MEMIT not in declines or ENCORE not in declines:
        return _missing(paper, rule, [MEMIT, ENCORE, ("unedited", "unedited")])
    measured = f"average F1 x100, unedited {base:.1f}; change at the last snapshot: " + ", ".join(
        f"{label(*run)} {-value:+.1f}" for run, value in declines.items()
    )
    least = declines[ENCORE] <= min(declines.values())
    verdict = (
        "reproduced"
        if declines[MEMIT] > DOWNSTREAM_NOISE and least
        else "partly"
        if declines[ENCORE] < declines[MEMIT]
        else "not reproduced"
    )
    return Claim(paper, measured, verdict, rule)


def editing_kept(study: Study) -> Claim:
    paper = "After thousands of edits ENCORE edits as well as or better than MEMIT (Table 2: higher Score S)"
    rule = "reproduced: ENCORE's S >= MEMIT's at the last snapshot; partly: within 5 points"
    if not study.has(MEMIT, ENCORE):
        return _missing(paper, rule, [MEMIT, ENCORE])
    rows = {run: study.final(run) for run in ENCORE_FAMILY if study.has(run)}
    measured = "ES/PS/NS/S at the last snapshot: " + "; ".join(
        f"{label(*run)} " + "/".join(f"{row[m]:.1f}" for m in ("ES", "PS", "NS", "S")) for run, row in rows.items()
    )
    gap = rows[ENCORE]["S"] - rows[MEMIT]["S"]
    verdict = "reproduced" if gap >= 0 else "partly" if gap >= -5 else "not reproduced"
    return Claim(paper, measured, verdict, rule)


def memit_degrades(study: Study) -> Claim:
    paper = "MEMIT's editing performance degrades as sequential edits accumulate (Sec. 1, Table 2)"
    rule = "reproduced: MEMIT's S on the facts edited so far falls by more than 5 points from the first snapshot"
    if not study.has(MEMIT) or len(study.snapshots(MEMIT)) < 2:
        return _missing(paper, rule, [MEMIT])
    snapshots = study.snapshots(MEMIT)
    first, last = snapshots.iloc[0], snapshots.iloc[-1]
    measured = f"MEMIT S after {snapshots.index[0]} edits {first['S']:.1f}, after {snapshots.index[-1]} {last['S']:.1f}"
    drop = first["S"] - last["S"]
    verdict = "reproduced" if drop > 5 else "partly" if drop > 0 else "not reproduced"
    return Claim(paper, measured, verdict, rule)


def fluency(study: Study) -> Claim:
    paper = "Generation entropy (fluency) falls for MEMIT and is kept by ENCORE (Table 2, GE)"
    rule = "reproduced: MEMIT's GE falls below the unedited model's and ENCORE's falls less; partly: ENCORE falls less"
    base, declines = _declines(study, "GE")
    if pd.isna(base) or MEMIT not in declines or ENCORE not in declines or pd.isna(declines[ENCORE]):
        return _missing(paper, rule, [MEMIT, ENCORE, ("unedited", "unedited")])
    measured = f"GE (x100) unedited {base:.1f}, at the last snapshot: " + ", ".join(
        f"{label(*run)} {base - value:.1f}" for run, value in declines.items() if pd.notna(value)
    )
    less = declines[ENCORE] < declines[MEMIT]
    verdict = "reproduced" if declines[MEMIT] > 0 and less else "partly" if less else "not reproduced"
    return Claim(paper, measured, verdict, rule)


def activation_share(study: Study) -> Claim:
    paper = "MEMIT's edits make the edited layers' MLP output dominate the residual stream; ENCORE's do not (Fig. 5)"
    rule = "reproduced: MEMIT raises the edited layers' MLP share and ENCORE raises it less; partly: MEMIT raises it"
    base = study.mlp_share()
    if pd.isna(base) or not study.has(MEMIT, ENCORE):
        return _missing(paper, rule, [MEMIT, ENCORE, ("unedited", "unedited")])
    shares = {run: study.mlp_share(run) for run in (MEMIT, ENCORE)}
    if any(pd.isna(value) for value in shares.values()):
        return _missing(paper, rule, [run for run, value in shares.items() if pd.isna(value)])
    measured = f"mean MLP share in the edited layers at the last snapshot: unedited {base:.3f}, " + ", ".join(
        f"{label(*run)} {value:.3f}" for run, value in shares.items()
    )
    rise = {run: value - base for run, value in shares.items()}
    verdict = (
        "reproduced"
        if rise[MEMIT] > 0 and rise[ENCORE] < rise[MEMIT]
        else "partly"
        if rise[MEMIT] > 0
        else "not reproduced"
    )
    return Claim(paper, measured, verdict, rule)


def all_claims(study: Study) -> list[Claim]:
    return [
        memit_degrades(study),
        norm_growth(study),
        norm_constraint(study),
        mpes_probability(study),
        mpes_speed(study),
        downstream(study, "DS_generate", "the paper's generation protocol"),
        downstream(study, "DS_loglik", "label log-likelihood protocol"),
        editing_kept(study),
        fluency(study),
        activation_share(study),
    ]


def compute_table(study: Study) -> pd.DataFrame:
    """Per run: edits made, hours of editing (targets + keys + solves, from the ledger) and of evaluation."""
    timing = seconds_per_edit(study.ledger)
    timing = timing.assign(
        rank=[ENCORE_FAMILY.index(run) if run in ENCORE_FAMILY else 9 for run in zip(timing.method, timing.variant)]
    )
    timing = timing.sort_values(["rank", "method", "variant"])
    seconds = study.metrics[study.metrics["metric"] == "evaluation_seconds"]
    evaluation = seconds.groupby(["method", "variant"])["value"].sum()
    rows = [
        {
            "run": label(r.method, r.variant),
            "edits": int(r.edits),
            "s/edit": round(r.s_per_edit, 2),
            "editing h": round(r.s_per_edit * r.edits / 3600, 2),
            "evaluation h": round(evaluation.get((r.method, r.variant), 0.0) / 3600, 2),
        }
        for r in timing.itertuples()
    ]
    if ("unedited", "unedited") in evaluation.index:
        rows.append(
            {"run": "unedited model", "edits": 0, "evaluation h": round(evaluation["unedited", "unedited"] / 3600, 2)}
        )
    return pd.DataFrame(rows)


def write_results(data: Path, out: Path, title: str, notes: Path | None = None) -> list[Claim]:
    """``out`` (Markdown): what the study ran and what it cost, one row per claim with what was measured, the
    verdict and its rule, then the hand-written ``notes`` (if the file exists)."""
    study = Study(data)
    claims = all_claims(study)
    snapshots = sorted(int(e) for e in study.table["edits"].unique())
    first = study.metrics.iloc[0]
    table = pd.DataFrame([vars(claim) for claim in claims])
    table.columns = ["paper's claim", "this study measured", "verdict", "verdict rule"]
    compute = compute_table(study)
    lines = [
        f"# {title}",
        "",
        f"Model `{first['model']}`, {first['dataset']}, edit order(s) {', '.join(str(int(o)) for o in sorted(study.metrics['order'].unique()))}; "
        f"snapshots after {', '.join(map(str, snapshots))} edits. Generated by `python -m encore.reporting.publish --regenerate` "
        "from data/*.csv; the verdicts follow the fixed rules in encore/reporting/claims.py.",
        "",
        "## Compute",
        "",
        compute.astype(object).where(compute.notna(), None).to_markdown(index=False, missingval="-"),
        "",
        "## The paper's claims beside this study",
        "",
        table.to_markdown(index=False),
    ]
    if notes is not None and Path(notes).exists():
        lines += ["", Path(notes).read_text().rstrip()]
    Path(out).write_text("\n".join(lines) + "\n")
    return claims
