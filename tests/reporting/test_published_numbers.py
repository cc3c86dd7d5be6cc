"""Every number the published pages print is computed from a CSV published beside them (issues 26 and 27).

For each hand-written page (a study's notes.md, which results.md ends with, and the sections on measured studies of
the README and docs/cpu-studies.md) ``SNIPPETS`` renders the phrases that carry its numbers from the study's
data/*.csv, computed here with pandas (the intervals with ``claims.base.gap``). Each phrase must appear in the page,
and every number in the page must be one of the rendered numbers: a number without a source fails. Names that
contain digits (SmolLM2-135M, Table 1, dates, commits, code spans) are not numbers. The generated part of results.md
is recomputed the same way: its compute table, the published means its claim table quotes, its tally and the edit
counts of its verdicts.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore.plan import costs
from encore.plan.shapes import KNOWN_SHAPES
from encore.reporting import paper_values as paper
from encore.reporting.claims.base import StudyResults, gap
from encore.reporting.claims.base import name as run_name
from encore.reporting.claims.editing import NS_MARGIN, TABLE5_LOSS
from encore.reporting.claims.general import binary_matrices, item_count
from encore.reporting.claims.intervals import LEVEL, kind, mcc
from encore.reporting.claims.results import all_claims
from encore.reporting.data_files import data_path
from encore.reporting.statistics_sweep import MARGIN, supported_n

REPO = Path(__file__).resolve().parents[2]
FP32, RECT_PRUNE = REPO / "docs" / "results" / "lifelong-cpu-fp32", REPO / "docs" / "results" / "rect-prune-cpu"
STUDY = REPO / "docs" / "results" / "lifelong-cpu"  # the nine-run study (bf16-mixed editing, per-fact records)
SWEEP = REPO / "docs" / "results" / "statistics-sweep"  # the covariance statistics' N-sweep
CPU_STUDIES = REPO / "docs" / "cpu-studies.md"  # the README links it for the CPU studies
MEMIT, ENCORE, UNEDITED = ("memit", "plain"), ("memit", "mpes_nc"), ("unedited", "unedited")
RECT, PRUNE = ("memit_rect", "plain"), ("memit_prune", "plain")
MPES = ("memit", "mpes")
EMMET, NC, EMMET_NC = ("emmet", "plain"), ("memit", "nc"), ("emmet", "nc")
GENERATE, LOGLIK = "downstream/generate", "downstream/label-loglik"
NAMES = [  # names and references with digits in them: not numbers
    r"```.*?```",  # code blocks
    r"`[^`]*`",  # code spans
    r"\]\([^)]*\)",  # link targets
    r"\d{4}-\d{2}-\d{2}",  # dates
    r"\bcode \d+",  # a commit
    r"SmolLM2(?:-135M)?|\b135M\b|\b7-8B\b|Llama-?\d-\d+B|GPT2-XL|Gemma-\d-\d+M|WikiText-2|SST-2",
    r"\b(?:Figs?|Tables?|Sec)\. ?\d+(?:[-, ]+\d+)*|\bTables? \d+(?:-\d+)?|\bissue \d+",
    r"[×x]100\b",  # the scale of a score
    r"(?:the )?authors' (?:seeded )?20%",  # the protocol's name
]


def numbers(text: str) -> set[str]:
    """The numbers of ``text`` as printed (without sign, thousands separator or %), names left out."""
    for pattern in NAMES:
        text = re.sub(pattern, " ", text, flags=re.DOTALL)
    return {token.replace(",", "") for token in re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", text)}


def section(text: str, heading: str) -> str:
    """The section of a page (README.md, docs/cpu-studies.md) that starts at ``heading``, up to the next heading."""
    start = text.index(heading)
    rest = text[start + len(heading) :]
    end = re.search(r"^#+ ", rest, flags=re.MULTILINE)
    return heading + (rest[: end.start()] if end else rest)


class Data:
    """A published study's CSVs, with the few quantities the pages print."""

    def __init__(self, study: Path):
        data = study / "data"
        # each plain, or gzip-compressed once large (encore.reporting.data_files)
        self.metrics = pd.read_csv(data_path(data, "metrics.csv"))
        self.norms = pd.read_csv(data_path(data, "norms.csv"))
        self.ledger = pd.read_csv(data_path(data, "ledger.csv"))
        self.runs = pd.read_csv(data_path(data, "runs.csv"))
        self.study = StudyResults(data)
        self.path = study

    def rows(self, run, edits=None, metric=None, protocol=""):
        m = self.metrics
        keep = (m["method"] == run[0]) & (m["variant"] == run[1]) & m["protocol"].str.contains(protocol, regex=False)
        if edits is not None:
            keep &= m["edits"] == edits
        if metric is not None:
            keep &= m["metric"] == metric
        return m[keep]

    def value(self, run, edits, metric, protocol="") -> float:
        rows = self.rows(run, edits, metric, protocol)
        assert len(rows), (run, edits, metric, protocol)
        return float(rows["value"].mean())

    def score(self, run, edits, metric, subset) -> float:
        """ES/PS/NS/S/p_new/n_records of ``run`` after ``edits`` on one fact subset (nll-comparison protocol)."""
        return self.value(run, edits, metric, f"/{subset}/nll-comparison")

    def run(self, run) -> pd.Series:
        return self.runs[(self.runs["method"] == run[0]) & (self.runs["variant"] == run[1])].iloc[0]

    def layers(self, run) -> list[int]:
        return [int(x) for x in str(self.run(run)["layers"]).split()]

    def snapshots(self, run) -> list[int]:
        return sorted(int(e) for e in self.rows(run, metric="S")["edits"].unique())

    def norm(self, run, edits, layer) -> float:
        n = self.norms
        rows = n[(n["method"] == run[0]) & (n["variant"] == run[1]) & (n["edits"] == edits) & (n["layer"] == layer)]
        return float(rows["frobenius_norm"].mean())

    def growth(self, run, edits, relative=True) -> float:
        """Mean over the edited layers of the norm growth after ``edits``: % of the unedited norm, or absolute."""
        values = []
        for layer in self.layers(run):
            before, after = self.norm(run, 0, layer), self.norm(run, edits, layer)
            values.append(100 * (after / before - 1) if relative else after - before)
        return float(np.mean(values))

    def steps(self, run) -> float:
        rows = self.ledger[(self.ledger["method"] == run[0]) & (self.ledger["variant"] == run[1])]
        return float(rows["iterations"].mean())

    def job_hours(self, run) -> float:
        """Editing (targets + keys + solves of each batch) and evaluation hours of ``run``."""
        rows = self.ledger[(self.ledger["method"] == run[0]) & (self.ledger["variant"] == run[1])]
        editing = rows.groupby("batch")[["targets_s", "keys_s", "solve_s"]].first().to_numpy().sum()
        evaluation = self.rows(run, metric="evaluation_seconds")["value"].sum()
        return float(editing + evaluation) / 3600

    def task(self, run, edits, task, metric, protocol=GENERATE) -> float:
        return self.value(run, edits, f"{task}.{metric}", protocol)

    def tasks(self) -> list[str]:
        names = self.rows(UNEDITED, metric=None, protocol=GENERATE)["metric"]
        return sorted({m.split(".")[0] for m in names if m.endswith(".f1") and not m.startswith("average")})


def _span(values, fmt=".2f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def fp32_notes(d: Data) -> list[str]:
    last, first = d.snapshots(MEMIT)[-1], d.snapshots(MEMIT)[0]
    sampled = [e for e in d.snapshots(MEMIT) if d.rows(MEMIT, e, "S", "/edited-so-far/").empty]
    unedited_facts = int(d.score(UNEDITED, 0, "n_records", "to-be-edited"))
    memit, encore = d.run(MEMIT), d.run(ENCORE)
    layers = d.layers(MEMIT)

    def s(run, edits, metric, subset="authors-20pct"):
        return d.score(run, edits, metric, subset)

    p_new = {run: [d.study.point(run, e, "p_new") for e in d.snapshots(run)] for run in (MEMIT, ENCORE)}
    ns = {run: s(run, last, "NS", "edited-so-far") for run in (MEMIT, ENCORE)}
    ns_unedited = s(UNEDITED, 0, "NS", "to-be-edited")
    assert ns_unedited - ns[ENCORE] > NS_MARGIN  # the fall the notes call beyond the margin
    top = layers[-1]
    memit_top = [d.norm(MEMIT, e, top) for e in (0, 1000, last - 1000, last)]
    sst2 = {run: 100 * d.task(run, e, "sst2", "f1") for run, e in ((UNEDITED, 0), (MEMIT, last), (ENCORE, last))}
    items = item_count(d.study)
    published = {metric: d.task(UNEDITED, 0, "sst2", metric) for metric in ("accuracy", "f1", "mcc", "invalid")}
    matrices = binary_matrices(items, published)
    assert len(matrices) == 2 and (matrices[0] == matrices[1][[1, 0, 2]][:, [1, 0, 2]]).all()  # one, and its swap
    averages = {
        (run, protocol): d.value(run, e, "average.f1", protocol)
        for run, e in ((UNEDITED, 0), (MEMIT, last), (ENCORE, last))
        for protocol in (GENERATE, LOGLIK)
    }
    encore_moves = max(abs(averages[ENCORE, p] - averages[UNEDITED, p]) for p in (GENERATE, LOGLIK))
    ge = {run: d.value(run, last if run != UNEDITED else 0, "GE") for run in (UNEDITED, MEMIT, ENCORE)}
    ge_records = int(d.value(MEMIT, last, "GE_records"))
    gap_at = {e: s(MEMIT, e, "S") - s(ENCORE, e, "S") for e in (first, 1000, last)}
    assert d.task(UNEDITED, 0, "rte", "mcc") < 0 < float(mcc(matrices[0]))
    assert d.task(UNEDITED, 0, "mrpc", "f1") == d.task(UNEDITED, 0, "nli", "f1")
    return [
        f"at {last:,} edits; MEMIT+MPES",
        f"to {last:,} sequential edits",
        f"snapshot every {first} edits",
        f"on all {unedited_facts:,} facts to be edited",
        f"(sample {memit['order']}), batches of {memit['batch_size']}, edited layers {layers[0]}-{layers[-1]}, "
        f"λ_p {memit['lambda_p']:,}, {memit['v_num_grad_steps']} target steps",
        f"MPES cut-off +{encore['mpes']:g} and λ_n {encore['lambda_n']:g}",
        f"at {sampled[0]}-{sampled[-1]:,} edits they are scored on the authors' 20% of the facts edited so far "
        f"({s(MEMIT, sampled[0], 'n_records'):.0f}-{s(MEMIT, sampled[-1], 'n_records'):.0f} facts;",
        f"At {last:,} edits all {s(MEMIT, last, 'n_records', 'edited-so-far'):,.0f} facts are scored, and the "
        f"authors' 20% of them ({s(MEMIT, last, 'n_records'):.0f} facts)",
        f"The unedited row scores all {unedited_facts:,} facts: the same facts as each run's row at {last:,} edits.",
        f"on {ge_records} records.",
        f"{len(d.tasks())} tasks, each on the same {items} items",
        f"is {_span(p_new[ENCORE])} for ENCORE and {_span(p_new[MEMIT])} for MEMIT",
        f"{d.steps(ENCORE):.1f} steps per edit for ENCORE and {d.steps(MEMIT):.1f} for MEMIT, averaged over all "
        f"{last:,} edits",
        f"The published S of MEMIT is {s(MEMIT, first, 'S'):.1f} at {first} edits ({s(MEMIT, first, 'n_records'):.0f} "
        f"facts) and {s(MEMIT, last, 'S'):.1f} at {last:,} ({s(MEMIT, last, 'n_records'):.0f} facts of the authors' "
        f"20%; {s(MEMIT, last, 'S', 'edited-so-far'):.1f} on all {last:,})",
        f"NS is {s(MEMIT, first, 'NS'):.1f} at {first} and {s(MEMIT, last, 'NS'):.1f} at {last:,}",
        f"On the same {unedited_facts:,} facts, ENCORE's NS is {ns[ENCORE]:.1f} against the unedited model's "
        f"{ns_unedited:.1f}, a fall of {ns_unedited - ns[ENCORE]:.1f} points",
        f"within the {NS_MARGIN:g}-point margin",
        f"not reproduced at {last:,} edits",
        f"MEMIT's NS on those facts is {ns[MEMIT]:.1f}",
        f"grows from {memit_top[0]:.2f} to {memit_top[-1]:.2f} ({100 * (memit_top[-1] / memit_top[0] - 1):+.1f}%)",
        f"{memit_top[1] - memit_top[0]:+.2f} over the first {1000:,} edits and {memit_top[3] - memit_top[2]:+.2f} "
        f"over the last {1000:,}",
        f"over {paper.PAPER_EDITS:,} edits, grow faster",
        f"ENCORE's layer {top} grows from {d.norm(ENCORE, 0, top):.2f} to {d.norm(ENCORE, last, top):.2f}",
        f"({d.growth(ENCORE, last, False):+.2f} vs {d.growth(MEMIT, last, False):+.2f})",
        f"(weighted F1 {100 * d.task(UNEDITED, 0, 'mrpc', 'f1'):.1f})",
        f"CoLA answers are {100 * d.task(UNEDITED, 0, 'cola', 'invalid') / items:.0f}% invalid",
        "RTE MCC is below 0",
        f"fit one {items}-item confusion matrix (and its label swap), with MCC {published['mcc']:.2f} and an "
        "interval above 0",
        f"MEMIT's F1 rises from {sst2[UNEDITED]:.1f} to {sst2[MEMIT]:.1f} and ENCORE's falls to {sst2[ENCORE]:.1f}",
        f"MEMIT's F1 rises from {averages[UNEDITED, GENERATE]:.1f} to {averages[MEMIT, GENERATE]:.1f}",
        f"at most {encore_moves:.1f} points on either protocol",
        f"GE (×100) is {ge[UNEDITED]:.1f} unedited, {ge[MEMIT]:.1f} after MEMIT and {ge[ENCORE]:.1f} after ENCORE, "
        f"on {ge_records} records each",
        f"They fall by {100 * (1 - ge[MEMIT] / ge[UNEDITED]):.1f}% and {100 * (1 - ge[ENCORE] / ge[UNEDITED]):.1f}%",
        f"ENCORE's S is {s(ENCORE, last, 'S'):.1f} and MEMIT's {s(MEMIT, last, 'S'):.1f} at {last:,} edits "
        f"({s(ENCORE, last, 'S', 'edited-so-far'):.1f} vs {s(MEMIT, last, 'S', 'edited-so-far'):.1f} on all "
        f"{last:,} facts)",
        f"The gap was {gap_at[first]:.1f} points at {first} edits ({s(ENCORE, first, 'S'):.1f} vs "
        f"{s(MEMIT, first, 'S'):.1f}) and {gap_at[1000]:.1f} at {1000:,}, and it is {gap_at[last]:.1f} at {last:,}",
        f"after {paper.PAPER_EDITS:,} edits on 7-8B models, has not happened within {last:,} edits",
    ]


def _ledger_equal(d: Data, a, b, batches=None) -> bool:
    """Whether runs ``a`` and ``b`` have the same ledger values (timings aside) in ``batches`` (None: all)."""
    rows = [d.ledger[(d.ledger["method"] == r[0]) & (d.ledger["variant"] == r[1])] for r in (a, b)]
    if batches is not None:
        rows = [r[r["batch"].isin(batches)] for r in rows]
    columns = [c for c in d.ledger.columns if c not in ("method", "variant") and not c.endswith("_s")]
    left, right = (r[columns].reset_index(drop=True) for r in rows)
    return len(left) > 0 and left.equals(right)


def _rect_prune(d: Data) -> dict:
    edits = d.snapshots(RECT)[-1]
    facts = int(d.score(RECT, edits, "n_records", "authors-20pct"))
    diffs = {m: gap(d.study, (PRUNE, edits), (RECT, edits), m)[0] for m in ("S", "NS")}
    assert diffs["S"].high < 0 and diffs["NS"].low < 0 < diffs["NS"].high  # the S loss is shown, an NS gain is not
    for metric in ("ES", "PS", "NS", "S", "average.f1", "sst2.f1", "mmlu.f1"):  # PRUNE = MEMIT: scores
        assert d.rows(PRUNE, edits, metric)["value"].tolist() == d.rows(MEMIT, edits, metric)["value"].tolist()
    for layer in d.layers(MEMIT):  # ... norms after every batch
        for e in sorted(d.norms["edits"].unique()):
            assert d.norm(PRUNE, e, layer) == d.norm(MEMIT, e, layer)
    batches = sorted(d.ledger["batch"].unique())
    assert _ledger_equal(d, MEMIT, PRUNE) and _ledger_equal(d, MEMIT, RECT, batches[:1])  # ... and ledger
    protocol = d.rows(RECT, edits, "perplexity")["protocol"].iloc[0]
    return {
        "edits": edits,
        "facts": facts,
        "diffs": diffs,
        "batches": len(batches),
        "tokens": int(re.search(r"tokens(\d+)", protocol).group(1)),
        "ppl": {run: d.value(run, edits, "perplexity") for run in (RECT, PRUNE)},
        "top": d.layers(RECT)[-1],
    }


def _row(d: Data, run, edits, name: str, extra: list[str]) -> str:
    scores = [d.study.point(run, edits, m) for m in ("ES", "PS", "NS", "S")]
    return f"| {name} | " + " | ".join([*(f"{v:.1f}" for v in scores), *extra]) + " |"


def rect_prune_notes(d: Data) -> list[str]:
    r = _rect_prune(d)
    e, facts, diffs = r["edits"], r["facts"], r["diffs"]
    run = d.run(RECT)

    def s(x, metric):
        return d.study.point(x, e, metric)

    ns = diffs["NS"]
    return [
        f"{e} sequential edits",
        f"order {run['order']}, batches of {run['batch_size']}, a snapshot every {d.snapshots(MEMIT)[0]} edits",
        f"({facts} facts at {e} edits), {len(d.tasks())} downstream tasks on the same {item_count(d.study)} items",
        f"cut at {e} edits",
        f"stopped at {e} edits",
        f"in all {r['batches']} batches",
        f"act in these {e} edits",
        f"Paired on the same {facts} facts",
        f"RECT's S is {s(RECT, 'S'):.1f} against {s(PRUNE, 'S'):.1f}, a difference of {diffs['S'].text()}",
        f"ES falls from {s(PRUNE, 'ES'):.1f} to {s(RECT, 'ES'):.1f} and PS from {s(PRUNE, 'PS'):.1f} to "
        f"{s(RECT, 'PS'):.1f}",
        f"NS is {s(RECT, 'NS'):.1f} against {s(PRUNE, 'NS'):.1f}: {ns.estimate:+.1f} [{ns.low:.1f}, {ns.high:.1f}]. "
        "That interval includes 0, so these",
        f"{facts} facts do not show",
        f"{d.growth(RECT, e):+.1f}% against MEMIT's {d.growth(MEMIT, e):+.1f}%",
        f"layer {r['top']} ends at {d.norm(RECT, e, r['top']):.2f} against {d.norm(MEMIT, e, r['top']):.2f}",
        f"RECT zeroes {100 * (1 - run['rect_fraction']):.0f}% of each update's entries",
        f"ENCORE's growth is {d.growth(ENCORE, e):+.1f}%, with S {s(ENCORE, 'S'):.1f}",
        f"{r['tokens']:,} tokens): {r['ppl'][RECT]:.2f} after RECT and {r['ppl'][PRUNE]:.2f} after PRUNE",
        f"scored on {facts} facts",
        f"growth of layer {r['top']}",
    ]


def table3_order(d: Data, edits: int) -> list[str]:
    """S of Table 3's four runs on the same facts, once all four have reached ``edits``."""
    runs = {"MEMIT": MEMIT, "MEMIT+NC": NC, "MEMIT+MPES": MPES, "ENCORE": ENCORE}
    if any(d.study.edits(run) < edits for run in runs.values()):
        return []
    scores = ", ".join(f"{d.study.point(run, edits, 'S'):.1f} for {name}" for name, run in runs.items())
    return [f"S on the same {edits:,} facts after {edits:,} edits is {scores.rsplit(', ', 1)[0]} and "
            f"{scores.rsplit(', ', 1)[1]}"]  # fmt: skip


def emmet_growth(d: Data, layer: int) -> list[str]:
    """EMMET's one edited layer against MEMIT's same layer, at EMMET's last evaluated snapshot (once EMMET runs)."""
    if EMMET not in set(d.runs[["method", "variant"]].itertuples(index=False, name=None)):
        return []
    edits = d.snapshots(EMMET)[-1]
    (edited,) = d.layers(EMMET)

    def grown(run):
        return 100 * (d.norm(run, edits, edited) / d.norm(run, 0, edited) - 1)

    return [
        f"EMMET edits one layer (layer {edited} here",
        f"{grown(EMMET):+.1f}% of its unedited norm after {edits:,} edits, where MEMIT's layer {edited} has grown "
        f"{grown(MEMIT):+.1f}%",
    ]


def emmet_norm_constraint(d: Data) -> list[str]:
    """EMMET+NC against EMMET at their last common snapshot once both are done: S on the same facts, and the
    growth of the one edited layer (the norm constraint's claims, paper Table 5 and Fig. 7)."""
    last = d.snapshots(MEMIT)[-1]
    if min(d.study.edits(EMMET), d.study.edits(EMMET_NC)) < last:
        return []
    kept = gap(d.study, (EMMET, last), (EMMET_NC, last))[0]
    facts = len(d.study.paired([(EMMET, last), (EMMET_NC, last)])[0])
    ratio = d.growth(EMMET_NC, last, relative=False) / d.growth(EMMET, last, relative=False)
    return [
        f"after {last:,} edits EMMET+NC's S is {d.study.point(EMMET_NC, last, 'S'):.1f} against EMMET's "
        f"{d.study.point(EMMET, last, 'S'):.1f} on the same {facts:,} facts ({kept.text()}; the paper's own loss is "
        f"{-TABLE5_LOSS:.2f} points",
        f"its layer grew {ratio:.2f} times as much as EMMET's",
    ]


def readme_lifelong(d: Data) -> list[str]:
    """The README's lifelong section: the bf16-mixed study (per-fact scores), its claims, and the compounding."""
    last, first = d.snapshots(MEMIT)[-1], d.snapshots(MEMIT)[0]
    encore = d.run(ENCORE)
    top = d.layers(MEMIT)[-1]
    unedited_hours = d.rows(UNEDITED, metric="evaluation_seconds")["value"].sum() / 3600
    claims = all_claims(d.study)
    runs = list(d.study.table[["method", "variant"]].drop_duplicates().itertuples(index=False, name=None))
    partial = [run for run in runs if d.study.edits(run) < last]  # runs on their way: their verdicts come earlier
    done = [run for run in runs if run != UNEDITED and d.study.edits(run) >= last]
    hours = sum(d.job_hours(run) for run in done) + unedited_hours
    counts = pd.Series([kind(c.outcome) for c in claims]).value_counts()
    nc = next(c for c in claims if c.paper.startswith("The norm constraint stops the growth")).measured
    nc_ratio = re.search(r"after ([\d,]+) edits MEMIT\+NC \S+ vs MEMIT \S+: ratio ([\d.]+ \[[^]]*\])", nc)
    p_new = next(c for c in claims if c.paper.startswith("MPES brings the edited facts' probability")).measured
    known = re.search(r"p\(true\) of known facts, unedited: ([\d.]+)", p_new).group(1)
    mpes_p = re.search(
        r"on the same ([\d,]+) facts: MEMIT\+MPES p\(new\) ([\d.]+ \[[^]]*\]), below MEMIT by ([\d.]+)", p_new
    )

    def row(run, name, steps):
        edits = 0 if run == UNEDITED else last
        extra = [f"{d.study.point(run, edits, c):.1f}" for c in ("GE", "DS_generate", "DS_loglik")]
        extra += [
            f"{d.value(run, edits, 'perplexity'):.2f}",
            f"{d.norm(MEMIT if run == UNEDITED else run, edits, top):.2f}",
        ]
        return _row(d, run, edits, name, [*extra, steps])

    degrade = gap(d.study, (MEMIT, last), (MEMIT, first))[0]
    facts_first = len(d.study.paired([(MEMIT, first), (MEMIT, last)])[0])
    versus = gap(d.study, (MEMIT, last), (ENCORE, last))[0]
    ns = gap(d.study, (UNEDITED, 0), (ENCORE, last), "NS")[0]
    factor = np.mean([d.norm(MEMIT, last, la) / d.norm(MEMIT, 0, la) for la in d.layers(MEMIT)])
    ppl = {run: d.value(run, 0 if run == UNEDITED else last, "perplexity") for run in (UNEDITED, MEMIT, ENCORE)}
    downstream = next(c for c in claims if c.source.endswith("(the paper's generation protocol)"))
    above = re.findall(r"([A-Z0-9]+) \(unedited MCC [-\d.]+ \[", downstream.measured)
    sst2 = re.search(r"SST2 \(unedited MCC [^)]*\): MEMIT's F1 decline ([-\d.]+ \[[^]]*\]); ENCORE - MEMIT "
                     r"([-\d.]+ \[[^]]*\])", downstream.measured)  # fmt: skip
    compounding = pd.read_csv(d.path / "precision-compounding.csv")
    delta_s = compounding[(compounding["metric"] == "S") & (compounding["precision"] == "bf16-fp32")]
    return [
        f"at CPU scale: {last:,} sequential edits",
        f"batches of {d.run(MEMIT)['batch_size']}, a snapshot every {first} edits",
        f"{len(done)} of the paper's nine runs and the unedited model are done ({hours:.1f} h of job time",
        f"over {last:,} sequential edits",
        f"| after {last:,} edits |",
        f"‖W_{top}‖_F",
        row(UNEDITED, "unedited", ""),
        row(MEMIT, "MEMIT", f"{d.steps(MEMIT):.1f}"),
        row(ENCORE, f"ENCORE (MPES +{encore['mpes']:g}, λ_n {encore['lambda_n']:g})", f"{d.steps(ENCORE):.1f}"),
        f"All {last:,} edited facts are scored",
        f"of {item_count(d.study)} items each",
        f"{counts.get('reproduced', 0)} reproduced, {counts.get('not reproduced', 0)} not reproduced, "
        f"{counts.get('inconclusive', 0)} inconclusive and {counts.get('not run', 0)} not run",
        *(f"{run_name(run)} has reached {d.study.edits(run):,} edits" for run in partial),
        *(
            f"{gap(d.study, (MEMIT, e), (MPES, e))[0].text()} on the same {n} facts at {e:,} edits"
            for e, n in [(d.study.common_edits(MEMIT, MPES), d.study.scored[(MPES, d.study.edits(MPES))][1])]
        ),
        f"after each update MEMIT+MPES leaves p(new) at {mpes_p.group(2)} on the same {mpes_p.group(1)} facts, "
        f"{mpes_p.group(3)} below MEMIT and near the {known} the unedited model gives facts it knows",
        f"after {int(nc_ratio.group(1).replace(',', '')):,} edits MEMIT+NC's edited layers have grown {nc_ratio.group(2)} times as much as MEMIT's",
        *emmet_growth(d, top),
        *emmet_norm_constraint(d),
        *table3_order(d, last),
        f"on the same {facts_first} facts its S falls by {degrade.text()} points from {first} to {last:,} edits",
        f"ENCORE's S is {-versus.estimate:.1f} points below MEMIT's on the same {last:,} facts "
        f"([{-versus.high:.1f}, {-versus.low:.1f}]",
        f"its NS is {d.study.point(ENCORE, last, 'NS'):.1f} against the unedited model's "
        f"{d.study.point(UNEDITED, 0, 'NS'):.1f} ({ns.text()})",
        f"(mean {d.growth(ENCORE, last):+.1f}% vs {d.growth(MEMIT, last):+.1f}% of the unedited norm",
        f"×{factor:.2f}, not the paper's > {paper.FIG4_GROWTH['memit']:g}×",
        f"from {ppl[UNEDITED]:.2f} to {ppl[MEMIT]:.2f} for MEMIT ({100 * (ppl[MEMIT] / ppl[UNEDITED] - 1):+.1f}%) and "
        f"{ppl[ENCORE]:.2f} for ENCORE ({100 * (ppl[ENCORE] / ppl[UNEDITED] - 1):+.1f}%)",
        f"above chance on {len(above)} of the {len(d.tasks())} tasks",
        f"on SST-2 MEMIT's F1 decline is {sst2.group(1)} and ENCORE − MEMIT is {sst2.group(2)}",
        f"|ΔS| is at most {delta_s['value'].abs().max():.1f} points at all {len(delta_s)} snapshots",
        f"beside the paper's {paper.PAPER_EDITS:,}",
        f"past our\n  {NS_MARGIN:g}-point margin",
        f"go on to {int(pd.read_csv(d.path / 'prediction-4600.csv')['edits'].max()):,} edits",
    ]


def readme_rect_prune(d: Data) -> list[str]:
    r = _rect_prune(d)
    e, diffs = r["edits"], r["diffs"]
    layers = d.layers(RECT)
    ns, loss = diffs["NS"], diffs["S"]

    def row(run, name):
        ppl = f"{r['ppl'][run]:.2f}" if run in r["ppl"] else ""
        return _row(d, run, e, name, [f"{d.growth(run, e):+.1f}%", ppl])

    return [
        f"after {e} sequential edits",
        f"batches of {d.run(RECT)['batch_size']}",
        f"{r['facts']} facts here",
        f"cut at {e} edits",
        f"mean of layers {layers[0]}-{layers[-1]}",
        row(MEMIT, "MEMIT"),
        row(ENCORE, "ENCORE"),
        row(RECT, "MEMIT+RECT"),
        row(PRUNE, "MEMIT+PRUNE"),
        f"over these {e} edits it is MEMIT",
        f"RECT gives up {-loss.estimate:.1f} points of S (paired on the same facts: [{loss.low:.1f}, {loss.high:.1f}])",
        f"Its NS is {ns.estimate:.1f}\npoints higher, but the interval [{ns.low:.1f}, {ns.high:.1f}] includes 0",
    ]


class SweepData:
    """The N-sweep's published CSVs."""

    def __init__(self, path: Path):
        self.sweep = pd.read_csv(path / "sweep.csv")
        self.timings = pd.read_csv(path / "timings.csv").set_index("n")
        self.protocol = pd.read_csv(path / "protocol.csv").set_index("key")["value"]

    def row(self, n: int, run: str, quantity: str) -> pd.Series:
        s = self.sweep
        keep = (s["n"] == n) & (s["run"] == run) & (s["quantity"] == quantity) & (s["layer"].astype(str) == "all")
        return s[keep].iloc[0]

    def interval(self, n: int, run: str, quantity: str, sign: str = "") -> str:
        r = self.row(n, run, quantity)
        return f"{r['value']:{sign}.1f} [{r['low']:.1f}, {r['high']:.1f}]"


def readme_statistics_sweep(d: SweepData) -> list[str]:
    """The README's section on how many documents C0 needs."""
    ns = sorted(int(n) for n in d.sweep["n"].unique())
    reference, supported = ns[-1], supported_n(d.sweep)[0]
    assert d.protocol["model"] == costs.SWEEP_MODEL and int(d.protocol["max_length"]) == costs.SWEEP_MAX_LENGTH
    failing = {n: verdict for n, verdict in supported_n(d.sweep)[1].items() if verdict.startswith("fails")}

    def table_row(n):
        cells = [f"{n:,}", f"{d.timings.loc[n, 'statistics_compute_s']:,.0f}"]
        cells += [f"{d.row(n, 'statistics', q)['value']:.3f}" for q in ("rel_C0", "rel_P")]
        cells += [d.interval(n, run, q) for run in ("MEMIT", "ENCORE") for q in ("S_diff", "NS_diff")]
        cells.append(" / ".join(f"{d.row(n, run, 'rel_dW')['value']:.2f}" for run in ("MEMIT", "ENCORE")))
        return "| " + " | ".join(cells) + " |"

    return [
        f"from N = {ns[0]:,} to {reference:,} Wikipedia documents",
        f"the same {d.protocol['num_edits']}\nMEMIT and ENCORE edits",
        f"paired over the same {d.protocol['num_edits']} facts against the reference N = {reference:,}, with "
        f"{100 * LEVEL:g}% intervals",
        f"the statistics job with {d.protocol['statistics_threads']} threads",
        *(table_row(n) for n in ns[:-1]),
        f"| {reference:,} (reference) | {d.timings.loc[reference, 'statistics_compute_s']:,.0f} |",
        f"both runs lose less than {MARGIN:g} point of S and of NS: every paired\ninterval's lower end above −{MARGIN:g}",
        f"**{supported:,} documents are enough**",
        *(
            f"N = {n:,} fails on "
            + " and ".join(
                f"{run}'s {metric}" for run, metric in re.findall(r"(MEMIT|ENCORE) (S|NS) \(", verdict)
            )  # fmt: skip
            for n, verdict in failing.items()
        ),
        f"S rises (ENCORE {d.interval(supported, 'ENCORE', 'S_diff', '+')} at {supported:,})",
        f"rel P {d.row(supported, 'statistics', 'rel_P')['value']:.3f} at {supported:,}, "
        f"{d.row(ns[-2], 'statistics', 'rel_P')['value']:.3f} at {ns[-2]:,}",
        f"SmolLM2's d_ff is {costs.SWEEP_D_FF:,}; Llama-3-8B's is {KNOWN_SHAPES['meta-llama/Meta-Llama-3-8B'].d_ff:,}",
    ]


PAGES = [  # (page, the study whose CSVs it is computed from, the part of the page, its numbers)
    ("fp32 notes", FP32, lambda: (FP32 / "notes.md").read_text(), fp32_notes),
    ("rect-prune notes", RECT_PRUNE, lambda: (RECT_PRUNE / "notes.md").read_text(), rect_prune_notes),
    (
        "README: the lifelong result",
        STUDY,
        lambda: section((REPO / "README.md").read_text(), "## The lifelong result at CPU scale"),
        readme_lifelong,
    ),
    (
        "README: how many documents C0 needs",
        SWEEP,
        lambda: section((REPO / "README.md").read_text(), "## How many documents C0 needs"),
        readme_statistics_sweep,
    ),
    (
        "docs/cpu-studies.md: RECT and PRUNE",
        RECT_PRUNE,
        lambda: section(CPU_STUDIES.read_text(), "### Measured: RECT and PRUNE"),
        readme_rect_prune,
    ),
]
UNPUBLISHED = ["### Not published:", "## Studies on the CPU"]  # sections of docs/cpu-studies.md: no published CSVs


@pytest.fixture(scope="module")
def data():
    published = {study: Data(study) for study in (FP32, RECT_PRUNE, STUDY) if (study / "data").exists()}
    return {**published, **({SWEEP: SweepData(SWEEP)} if (SWEEP / "sweep.csv").exists() else {})}


@pytest.mark.parametrize("page, study, read, snippets", PAGES, ids=[page[0] for page in PAGES])
def test_every_number_of_a_page_is_computed_from_the_csvs_beside_it(data, page, study, read, snippets):
    if study not in data:
        pytest.skip(f"{study.name} is not published")
    text = re.sub(r"\s*\n\s*", "\n", read())
    rendered = snippets(data[study])
    missing = [snippet for snippet in rendered if re.sub(r"\s*\n\s*", "\n", snippet) not in text]
    flat = " ".join(text.split())
    missing = [snippet for snippet in missing if " ".join(snippet.split()) not in flat]
    assert not missing, f"{page}: these computed phrases are not on the page: {missing}"
    unsourced = numbers(text) - numbers(" ".join(rendered))
    assert not unsourced, f"{page}: numbers without a source in data/*.csv: {sorted(unsourced)}"


@pytest.mark.parametrize("heading", UNPUBLISHED)
def test_readme_sections_on_unpublished_studies_quote_no_measurements(heading):
    text = section(CPU_STUDIES.read_text(), heading)
    stripped = text
    for pattern in NAMES:
        stripped = re.sub(pattern, " ", stripped, flags=re.DOTALL)
    measured = re.findall(r"\d+\.\d+|\d+ ?(?:min|h|s|ms)\b|\d+%|×\s?\d", stripped)
    assert not measured, f"{heading}: measured numbers without published CSVs: {measured}"


def test_numbers_are_read_as_printed_and_names_are_not_numbers():
    assert numbers("S 82.8 at 3,000 edits (+27.8%), [-1.0, 3.4]") == {"82.8", "3000", "27.8", "1.0", "3.4"}
    assert numbers("SmolLM2-135M, Table 1, `--up-to 500`, 2026-12-06, code 8623422, λ_n 10") == {"10"}


@pytest.mark.parametrize("study", [FP32, RECT_PRUNE], ids=lambda path: path.name)
def test_the_generated_results_page_prints_what_the_csvs_give(data, study):
    """Compute table, the published means the claim table quotes, its tally and its verdicts' edit counts,
    recomputed from data/*.csv."""
    if study not in data:
        pytest.skip(f"{study.name} is not published")
    d, text = data[study], (study / "results.md").read_text()
    compute = text.split("## Compute", 1)[1].split("##", 1)[0]
    for line in [line for line in compute.strip().splitlines() if line.startswith("|")][2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == "unedited model":
            hours = d.rows(UNEDITED, metric="evaluation_seconds")["value"].sum() / 3600
            assert cells[4] == f"{hours:.2f}"
            continue
        run = next(run for run in (MEMIT, ENCORE, RECT, PRUNE) if d.study.has(run) and cells[0] == _label(run))
        ledger = d.ledger[(d.ledger["method"] == run[0]) & (d.ledger["variant"] == run[1])]
        editing = ledger.groupby("batch")[["targets_s", "keys_s", "solve_s"]].first().to_numpy().sum()
        edits = ledger["position"].nunique()
        evaluation = d.rows(run, metric="evaluation_seconds")["value"].sum()
        batches = ledger.groupby("batch")
        fastest = (batches[["targets_s", "keys_s", "solve_s"]].first().sum(axis=1) / batches.size()).quantile(0.1)
        assert cells[1:] == [str(edits), f"{editing / edits:.2f}", f"{editing / 3600:.2f}", f"{evaluation / 3600:.2f}",
                             f"{fastest:.2f}"]  # fmt: skip
    table = text.split("## The paper's claims beside this study", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| paper's claim")]
    assert len(rows) == 19
    outcomes = [row.split(" | ")[4].strip() for row in rows]
    tally = re.search(r"^19 claims: (.*)\.$", table, flags=re.MULTILINE).group(1)
    counts = pd.Series([re.sub(r" \(.*", "", o).split(":")[0] for o in outcomes]).value_counts()
    assert tally == ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda x: _order(x[0])))
    last = max(d.snapshots(MEMIT))
    judged = [re.search(r"\((at [^;]*|not judged); the paper: ([^)]*)\)$", o) for o in outcomes]
    assert all(judged), outcomes
    first = min(d.snapshots(MEMIT))
    assert {m.group(1) for m in judged} <= {"not judged", f"at {last:,} edits", f"at {first} and {last:,} edits"}
    quoted = 0
    means = re.compile(r"(?:published (\w+)|(\w+) on the same [^:]*\(published means\)): ([^;(]*)")
    for cell in [row.split(" | ")[2] for row in rows]:
        for match in means.finditer(cell):
            metric, body = match.group(1) or match.group(2), match.group(3)
            for name, edits, value in re.findall(r"(MEMIT|ENCORE|the unedited model) at ([\d,]+) (-?\d+\.\d)", body):
                run = {"MEMIT": MEMIT, "ENCORE": ENCORE, "the unedited model": UNEDITED}[name]
                assert f"{d.study.point(run, int(edits.replace(',', '')), metric):.1f}" == value, (metric, name, edits)
                quoted += 1
    assert quoted >= 4


def _label(run) -> str:
    from encore.reporting.outputs import label

    return label(*run)


def _order(outcome: str) -> int:
    from encore.reporting.claims.intervals import OUTCOMES

    return OUTCOMES.index(outcome)
