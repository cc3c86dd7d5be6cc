"""Every claim rule applied to one study, and its results page (results.md: compute, outcomes, the claims).

The rules (``RULES``) and what an outcome means: the package docstring (encore.reporting.claims).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from encore.reporting.claims import editing as editing
from encore.reporting.claims import general as general
from encore.reporting.claims import norms as norms
from encore.reporting.claims.base import ENCORE, MEMIT, MPES, NC, Claim, StudyResults
from encore.reporting.claims.intervals import OUTCOMES, RESAMPLES, SEED, kind
from encore.reporting.data_files import data_path
from encore.reporting.outputs import ENCORE_FAMILY, label
from encore.reporting.summary import fastest_seconds_per_edit, seconds_per_edit

__all__ = [
    "ENCORE",
    "MEMIT",
    "MPES",
    "NC",
    "RULES",
    "Claim",
    "StudyResults",
    "all_claims",
    "compute_table",
    "write_results",
]

# The per-unit data a rule pairs over, where a study publishes them: per-fact scores at each snapshot, per-item
# downstream predictions, and per-fact scores right after each batch's update (the ledger's post-update efficacy).
PER_UNIT_FILES = ("records.csv", "downstream_records.csv", "ledger.csv")

RULES = {
    "memit_degrades": editing.memit_degrades,
    "encore_beats_memit": editing.encore_beats_memit,
    "mpes_raises_s": editing.mpes_raises_s,
    "table3_ordering": editing.table3_ordering,
    "table4_scores": editing.table4_scores,
    "table5_emmet_nc": editing.table5_emmet_nc,
    "encore_no_degradation": editing.encore_no_degradation,
    "mpes_probability": editing.mpes_probability,
    "mpes_steps": norms.mpes_steps,
    "table4_steps": norms.table4_steps,
    "norm_growth_memit": norms.norm_growth_memit,
    "norm_growth_alphaedit": norms.norm_growth_alphaedit,
    "norm_constraint": norms.norm_constraint,
    "activation_share": norms.activation_share,
    "downstream_generate": lambda study: general.downstream(study, "DS_generate", "the paper's generation protocol"),
    "downstream_loglik": lambda study: general.downstream(study, "DS_loglik", "label log-likelihood protocol"),
    "perplexity": general.perplexity,
    "fluency": general.fluency,
    "zsre": general.zsre,
}


def all_claims(study: StudyResults) -> list[Claim]:
    claims = [rule(study) for rule in RULES.values()]
    wrong = [claim.paper for claim in claims if kind(claim.outcome) not in OUTCOMES]
    if wrong:
        raise ValueError(f"claims with an outcome outside {OUTCOMES}: {wrong}")
    return claims


def compute_table(study: StudyResults) -> pd.DataFrame:
    """Per run: edits made, seconds per edit and hours of editing (targets + keys + solves, from the ledger), hours
    of evaluation, and the seconds per edit of its fastest tenth of batches (``fastest_seconds_per_edit``)."""
    timing = seconds_per_edit(study.ledger)
    fastest = fastest_seconds_per_edit(study.ledger)
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
            "s/edit, fastest tenth of batches": round(fastest[r.method, r.variant], 2),
        }
        for r in timing.itertuples()
    ]
    if ("unedited", "unedited") in evaluation.index:
        rows.append(
            {"run": "unedited model", "edits": 0, "evaluation h": round(evaluation["unedited", "unedited"] / 3600, 2)}
        )
    return pd.DataFrame(rows)


def write_results(data: Path, out: Path, title: str, notes: Path | None = None) -> list[Claim]:
    """``out`` (Markdown): what the study ran and what it cost, one row per claim (the paper's claim and where it
    is made, what was measured with its 95% interval, the threshold, the outcome and the rule), a count of the
    outcomes, then the hand-written ``notes`` (if the file exists)."""
    study = StudyResults(data)
    claims = all_claims(study)
    snapshots = sorted(int(e) for e in study.table["edits"].unique())
    first = study.metrics.iloc[0]
    table = pd.DataFrame([[c.paper, c.source, c.measured, c.threshold, c.verdict, c.rule] for c in claims])
    table.columns = [
        "paper's claim",
        "where",
        "this study measured [95% interval]",
        "threshold (whose)",
        "outcome (judged at; the paper's)",
        "rule",
    ]
    counts = pd.Series([kind(c.outcome) for c in claims]).value_counts()
    tally = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if o in counts)
    per_unit = [data_path(Path(data), f).name for f in PER_UNIT_FILES if data_path(Path(data), f).exists()]
    compute = compute_table(study)
    orders = ", ".join(str(int(o)) for o in sorted(study.metrics["order"].unique()))
    lines = [
        f"# {title}",
        "",
        f"Model `{first['model']}`, {first['dataset']}, edit order(s) {orders}; "
        f"snapshots after {', '.join(map(str, snapshots))} edits. Generated by "
        "`python -m encore.reporting.publish --regenerate` "
        "from data/*.csv; the outcomes follow the fixed rules in encore/reporting/claims/.",
        "",
        "## Compute",
        "",
        compute.astype(object).where(compute.notna(), None).to_markdown(index=False, missingval="-"),
        "",
        "Job time on the machine the study ran on. s/edit: editing seconds "
        "(targets + keys + solves) over all edits; its fastest tenth of batches: the 10th percentile of the "
        "batches' s/edit, where a run shared its cores with other work part of the time (docs/studies.md).",
        "",
        "## The paper's claims beside this study",
        "",
        "Outcomes: reproduced / not reproduced (the 95% interval lies on the threshold's far side) / inconclusive "
        "(it straddles the threshold) / not testable at this scale (a measured precondition fails) / not run (a "
        "run it needs is absent) / no data: what is missing (the runs exist, but not the data to judge them). "
        "Every outcome names the edit count it was judged at and the paper's; every threshold says whether it is "
        "the paper's number or ours. Intervals: percentile bootstrap, "
        f"{RESAMPLES} resamples, numpy default_rng({SEED}); two runs are compared on the same facts (or batches, "
        "layers, items) at the same edit count, resampled jointly. Without per-unit data a rule decides from the "
        "published aggregates only where every per-unit data set consistent with them gives the same outcome. "
        f"Per-unit files in data/: {', '.join(per_unit) or 'none'}.",
        "",
        f"{len(claims)} claims: {tally}.",
        "",
        table.to_markdown(index=False),
    ]
    if notes is not None and Path(notes).exists():
        lines += ["", Path(notes).read_text().rstrip()]
    Path(out).write_text("\n".join(lines) + "\n")
    return claims
