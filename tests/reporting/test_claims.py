"""Claim rules return each of their outcomes on constructed studies with a known answer.

``write_study`` writes the collected CSVs of a small study (nine runs, snapshots after 100, 200 and 300
edits, batches of 10, edited layers 3-6 of 10) plus records.csv and downstream_records.csv. Its default is
"the paper's world" (every claim holds); each scenario changes one thing.
"""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from encore.evaluation import protocols
from encore.reporting.claims import results as claims
from encore.reporting.claims.base import (
    ALPHAEDIT,
    ALPHAEDIT_MPES,
    EMMET,
    EMMET_MPES,
    EMMET_NC,
    ENCORE,
    MEMIT,
    MPES,
    NC,
    UNEDITED,
    StudyResults,
)
from encore.reporting.claims.intervals import kind

RUNS = (MEMIT, MPES, NC, ENCORE, EMMET, EMMET_MPES, EMMET_NC, ALPHAEDIT, ALPHAEDIT_MPES)
SNAPSHOTS, BATCH, FACTS = (100, 200, 300), 10, 300
EDITED, LAYERS = [3, 4, 5, 6], range(10)
OFFSET = {MEMIT: lambda e: 0.1 - e / 3000, MPES: 0.05, NC: 0.1, ENCORE: 0.15, EMMET: 0.0, EMMET_MPES: 0.05,
          EMMET_NC: -0.005, ALPHAEDIT: 0.0, ALPHAEDIT_MPES: 0.05, UNEDITED: -0.2}  # fmt: skip
GROWTH = {MEMIT: [14, 15, 16, 15], MPES: [3, 3, 3, 3], EMMET: [3, 3, 3, 3], ALPHAEDIT: [2.5, 2.6, 2.4, 2.5]}
PLAIN = [MEMIT, EMMET, ALPHAEDIT]
DOWNSTREAM_PROTOCOLS = (protocols.DOWNSTREAM_GENERATE, protocols.DOWNSTREAM_LOGLIK)


def _value(table, run, edits, default):
    value = table.get(run, default)
    return value(edits) if callable(value) else value


def write_study(directory: Path, runs=RUNS, records=True, items=True, dataset="counterfact", **changes) -> Path:
    """Collected CSVs of a study. ``changes`` override per-run tables: offset (added to per-fact es/ps/ns),
    ns_offset, growth (per edited layer, norm factor at 300 edits), shares (MLP share per edited layer),
    steps, p_new, ge, correct (downstream accuracy; None = at chance), perplexity; no_ledger, no_norms,
    no_shares: runs whose ledger rows, norms or activation shares are not written."""
    rng = np.random.default_rng(0)
    offset = {**OFFSET, **changes.get("offset", {})}
    ns_offset = changes.get("ns_offset", {})
    growth = {**GROWTH, **changes.get("growth", {})}
    shares = {UNEDITED: [0.15, 0.16, 0.17, 0.18], MEMIT: [0.6, 0.65, 0.7, 0.75], **changes.get("shares", {})}
    steps = {**{run: 8.0 if "mpes" in run[1] else 20.0 for run in RUNS}, **changes.get("steps", {})}
    p_new = {**{run: 0.35 if "mpes" in run[1] else 0.9 for run in RUNS}, **changes.get("p_new", {})}
    ge = {UNEDITED: 600.0, MEMIT: 500.0, **changes.get("ge", {})}
    correct = {UNEDITED: 0.85, MEMIT: 0.6, **changes.get("correct", {})}
    ppl = {UNEDITED: 20.0, MEMIT: 30.0, ENCORE: 21.0, **(changes.get("perplexity") or {})}
    ppl = {} if "perplexity" in changes and changes["perplexity"] is None else ppl  # not measured at all
    base_u, base_v = rng.uniform(0.3, 0.7, FACTS), rng.uniform(0.3, 0.7, FACTS)
    metrics, norms, ledger, run_rows, record_rows, item_rows = [], [], [], [], [], []
    protocol = "zsre/edited-so-far/token-top1" if dataset == "zsre" else "counterfact/edited-so-far/nll-comparison"

    def add(run, edits, values, proto):
        metrics.extend({"method": run[0], "variant": run[1], "edits": edits, "metric": metric, "value": value,
                        "protocol": proto} for metric, value in values.items())  # fmt: skip

    def state(run, edits):
        facts = np.arange(FACTS if run == UNEDITED else edits)
        off = _value(offset, run, edits, 0.0)
        es = np.clip(base_u[facts] + off + rng.normal(0, 0.03, len(facts)), 0, 1)
        ps = np.clip(base_u[facts] + off + rng.normal(0, 0.03, len(facts)), 0, 1)
        ns_off = _value(ns_offset, run, edits, 0.0) + (0.0 if run == UNEDITED else off)
        ns = np.clip(base_v[facts] + ns_off + rng.normal(0, 0.03, len(facts)), 0, 1)
        p = np.clip(_value(p_new, run, edits, 0.01) + rng.normal(0, 0.02, len(facts)), 0, 1)
        g = _value(ge, run, edits, 580.0) + rng.normal(0, 2, len(facts))
        record_rows.extend({"method": run[0], "variant": run[1], "edits": edits, "subset": "edited-so-far",
                            "protocol": protocol, "case_id": int(f), "es": a, "ps": b, "ns": c, "p_new": d, "ge": q}
                           for f, a, b, c, d, q in zip(facts, es, ps, ns, p, g))  # fmt: skip
        scores = [100 * x.mean() for x in (es, ps, ns)]
        values = dict(zip(["ES", "PS", "NS"], scores), S=3 / sum(1 / s for s in scores), n_records=len(facts))
        add(run, edits, {**values, "p_new": float(p.mean())}, protocol)
        add(run, edits, {"GE": float(g.mean())}, "generation/edited-so-far/top5-sampling-100-tokens")
        if run in ppl:
            add(run, edits, {"perplexity": _value(ppl, run, edits, 20.0)}, "general/wikitext2-test/perplexity")
        share = shares.get(run, [0.2, 0.2, 0.25, 0.25])
        if run not in changes.get("no_shares", ()):
            add(run, edits, {f"activation_share.L{layer:02d}.mlp": s for layer, s in zip(EDITED, share)},
                "analysis/activation-norm-share/x")  # fmt: skip
        factors = growth.get(run, [1.1, 1.1, 1.1, 1.1])
        add(run, edits, {f"down_proj_norm.L{layer:02d}": (100.0 + layer) * (1 + (factors[EDITED.index(layer)] - 1)
                         * edits / 300 if layer in EDITED else 1) for layer in LAYERS}, "analysis/down-proj")  # fmt: skip
        accuracy = _value(correct, run, edits, 0.8)
        for proto in DOWNSTREAM_PROTOCOLS:
            add(run, edits, {"average.f1": 50.0}, proto)
            for number, task in enumerate(("sst2", "rte")):
                labels = np.random.default_rng(10 + number).integers(0, 2, 120)
                u = np.random.default_rng(7).random(120)
                guess = rng.integers(0, 2, 120) if accuracy is None else np.where(u < accuracy, labels, 1 - labels)
                published = {"f1": f1_score(labels, guess, average="weighted"), "accuracy": np.mean(labels == guess)}
                if proto.startswith("downstream/generate"):
                    published |= {"mcc": matthews_corrcoef(labels, guess), "invalid": 0.0}
                add(run, edits, {f"{task}.{k}": round(float(v), 6) for k, v in published.items()}, proto)
                item_rows.extend({"method": run[0], "variant": run[1], "edits": edits, "protocol": proto, "task": task,
                                  "item": i, "label": y, "prediction": g} for i, (y, g) in enumerate(zip(labels, guess)))  # fmt: skip

    state(UNEDITED, 0)
    add(UNEDITED, 0, {"p_true_known": 0.33, "n_known": 50}, "table1/to-be-edited/known-true-facts")
    for run in runs:
        for edits in SNAPSHOTS:
            state(run, edits)
        factors = growth.get(run, [1.1, 1.1, 1.1, 1.1])
        norms += [{"method": run[0], "variant": run[1], "order": 0, "edits": e, "batch": e // BATCH, "layer": layer,
                   "frobenius_norm": (100.0 + layer) * (1 + (f - 1) * e / 300)}
                  for e in range(0, 301, BATCH) for layer, f in zip(EDITED, factors)]  # fmt: skip
        noise = rng.normal(0, 1.0, FACTS // BATCH)
        ledger += [{"method": run[0], "variant": run[1], "order": 0, "case_id": i, "batch": i // BATCH, "position": i,
                    "iterations": max(1.0, _value(steps, run, 0, 20.0) + noise[i // BATCH]), "targets_s": 10.0,
                    "keys_s": 1.0, "solve_s": 1.0} for i in range(FACTS)]  # fmt: skip
        run_rows.append({"method": run[0], "variant": run[1], "layers": " ".join(map(str, EDITED))})
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(metrics).assign(experiment="x", model="m", dataset=dataset, order=0).to_csv(
        directory / "metrics.csv", index=False
    )
    norms = [row for row in norms if (row["method"], row["variant"]) not in changes.get("no_norms", ())]
    ledger = [row for row in ledger if (row["method"], row["variant"]) not in changes.get("no_ledger", ())]
    pd.DataFrame(norms).to_csv(directory / "norms.csv", index=False)
    pd.DataFrame(ledger).to_csv(directory / "ledger.csv", index=False)
    pd.DataFrame(run_rows).to_csv(directory / "runs.csv", index=False)
    if records:
        pd.DataFrame(record_rows).assign(experiment="x", model="m", dataset=dataset, order=0).to_csv(
            directory / "records.csv", index=False
        )
    if items:
        pd.DataFrame(item_rows).assign(order=0).to_csv(directory / "downstream_records.csv", index=False)
    return directory


def without(*drop):
    return tuple(run for run in RUNS if run not in drop)


R, NR, INC, NT, NRUN = "reproduced", "not reproduced", "inconclusive", "not testable at this scale", "not run"
ND = "no data"  # an outcome "no data: <what>"
MPES_RUNS = (MPES, ALPHAEDIT_MPES, EMMET_MPES)
# rule -> outcome -> changes to the paper's world (write_study keywords)
SCENARIOS = {
    "memit_degrades": {R: {}, NR: {"offset": {MEMIT: lambda e: e / 3000}}, INC: {"offset": {MEMIT: 0.0}},
                       NRUN: {"runs": without(MEMIT)}, ND: {"records": False}},
    "encore_beats_memit": {R: {}, NR: {"offset": {ENCORE: -0.1}}, INC: {"offset": {ENCORE: 0.0, MEMIT: 0.0}},
                           NRUN: {"runs": without(ENCORE)}, ND: {"records": False}},
    "mpes_raises_s": {R: {}, NR: {"offset": {EMMET_MPES: -0.05}}, INC: {"offset": {ALPHAEDIT_MPES: 0.0}},
                      NRUN: {"runs": without(ALPHAEDIT_MPES)}, ND: {"records": False}},
    "table3_ordering": {R: {}, NR: {"offset": {NC: 0.0}}, INC: {"offset": {ENCORE: 0.1}}, NRUN: {"runs": without(NC)},
                        ND: {"records": False}},
    "table4_scores": {R: {}, NR: {"offset": {EMMET: 0.3}}, INC: {"offset": {ALPHAEDIT: 0.15}},
                      NRUN: {"runs": without(EMMET)}, ND: {"records": False}},
    "table5_emmet_nc": {R: {}, NR: {"offset": {EMMET_NC: -0.1}}, INC: {"offset": {EMMET_NC: -0.0216}},
                        NRUN: {"runs": without(EMMET_NC)}, ND: {"records": False}},
    "encore_no_degradation": {R: {}, NR: {"ns_offset": {ENCORE: -0.3}}, INC: {"ns_offset": {ENCORE: -0.17}},
                              NRUN: {"runs": without(ENCORE)}, ND: {"records": False, "ns_offset": {ENCORE: -0.17}}},
    "mpes_probability": {R: {}, NR: {"p_new": {ALPHAEDIT_MPES: 0.95}}, INC: {"p_new": {ALPHAEDIT_MPES: 0.58}},
                         NRUN: {"runs": without(*MPES_RUNS)},
                         ND: {"records": False, "p_new": {ALPHAEDIT_MPES: 0.58}}},
    "mpes_steps": {R: {}, NR: {"steps": {EMMET_MPES: 19.0}}, INC: {"steps": {MPES: 12.2}}, NRUN: {"runs": without(MPES)},
                   ND: {"no_ledger": (MPES,)}},
    "table4_steps": {R: {}, NR: {"steps": {ENCORE: 20.0}}, INC: {"steps": {ENCORE: 12.0}},
                     NRUN: {"runs": without(ALPHAEDIT)}, ND: {"no_ledger": (ENCORE,)}},
    "norm_growth_memit": {R: {}, NR: {"growth": {MEMIT: [1.1, 1.2, 1.1, 1.2]}},
                          INC: {"growth": {MEMIT: [6, 14, 7, 13]}}, NRUN: {"runs": without(MEMIT)},
                          ND: {"no_norms": (MEMIT,)}},
    "norm_growth_alphaedit": {R: {}, NR: {"growth": {ALPHAEDIT: [1.1, 1.1, 1.2, 1.1]}},
                              INC: {"growth": {ALPHAEDIT: [1.1, 1.9, 1.2, 1.8]}}, NRUN: {"runs": without(ALPHAEDIT)},
                              ND: {"no_norms": (ALPHAEDIT,)}},
    "norm_constraint": {R: {}, NR: {"growth": {NC: [13, 14, 15, 16]}}, INC: {"growth": {NC: [3, 12, 4, 11]}},
                        NT: {"growth": {MEMIT: [1, 1, 1, 1]}}, NRUN: {"runs": without(NC)}, ND: {"no_norms": (NC,)}},
    "activation_share": {R: {}, NR: {"shares": {MEMIT: [0.2, 0.2, 0.2, 0.2]}}, INC: {"shares": {MEMIT: [0.3, 0.7, 0.35, 0.65]}},
                         NT: {"shares": {UNEDITED: [0.6, 0.6, 0.7, 0.7]}}, NRUN: {"runs": without(ENCORE)},
                         ND: {"no_shares": (ENCORE,)}},  # fmt: skip
    "downstream_generate": {R: {}, NR: {"correct": {MEMIT: 0.95}}, INC: {"correct": {MEMIT: 0.84, ENCORE: 0.84}},
                            NT: {"correct": {UNEDITED: 0.5}}, NRUN: {"runs": without(MEMIT)},
                            ND: {"items": False, "correct": {MEMIT: 0.84, ENCORE: 0.84}}},
    "downstream_loglik": {R: {}, NR: {"correct": {ENCORE: 0.3}}, INC: {"correct": {ENCORE: 0.6}},
                          NT: {"correct": {UNEDITED: 0.5}}, NRUN: {"runs": without(ENCORE)},
                          ND: {"items": False, "correct": {ENCORE: 0.6}}},
    "perplexity": {R: {}, NR: {"perplexity": {ENCORE: 40.0}}, INC: {"perplexity": {MEMIT: 20.1, ENCORE: 20.0}},
                   NRUN: {"runs": without(ENCORE)}, ND: {"perplexity": None}},
    "fluency": {R: {}, NR: {"ge": {MEMIT: 650.0}}, INC: {"ge": {UNEDITED: 580.0, MEMIT: 580.0}},
                NRUN: {"runs": without(MEMIT)}, ND: {"records": False}},
    "zsre": {R: {"dataset": "zsre"}, NR: {"dataset": "zsre", "ns_offset": {ENCORE: -0.4}},
             INC: {"dataset": "zsre", "offset": {ENCORE: 0.0, MEMIT: 0.0}}, NRUN: {},
             ND: {"dataset": "zsre", "records": False}},
}  # fmt: skip
CASES = [(rule, outcome) for rule, outcomes in SCENARIOS.items() for outcome in outcomes]


def _study(tmp_path, changes) -> StudyResults:
    return StudyResults(write_study(tmp_path, **changes))


@pytest.mark.parametrize("rule, outcome", CASES, ids=[f"{r}-{o.replace(' ', '_')}" for r, o in CASES])
def test_each_rule_returns_each_of_its_outcomes(tmp_path, rule, outcome):
    claim = claims.RULES[rule](_study(tmp_path, SCENARIOS[rule][outcome]))
    assert kind(claim.outcome) == outcome, claim.measured
    assert claim.paper and claim.source and claim.threshold and claim.rule and claim.horizon
    if outcome == ND:  # says what is missing
        assert claim.outcome.startswith("no data: ") and len(claim.outcome) > len("no data: ") + 10


@pytest.mark.parametrize("rule", list(claims.RULES))
def test_every_rule_can_fail_be_undecided_and_say_which_data_it_lacks(rule):
    assert {NR, R, NRUN, INC, ND} <= set(SCENARIOS[rule]), f"{rule}: add a scenario for every outcome"


@pytest.mark.parametrize("rule", list(claims.RULES))
def test_every_verdict_names_the_edit_count_it_was_judged_at_and_the_papers(tmp_path, rule):
    claim = claims.RULES[rule](_study(tmp_path, SCENARIOS[rule][R]))
    assert claim.horizon.startswith("at ") and " edits; the paper: " in claim.horizon, claim.horizon
    assert claim.verdict == f"{claim.outcome} ({claim.horizon})"
    partly = claims.RULES[rule](_study(tmp_path, SCENARIOS[rule][NRUN]))  # judged on the runs made, if any
    assert partly.horizon.startswith(("not judged; the paper: ", "at ")) and "; the paper: " in partly.horizon


@pytest.mark.parametrize("rule", list(claims.RULES))
def test_every_threshold_says_whether_it_is_the_papers_or_ours(tmp_path, rule):
    threshold = claims.RULES[rule](_study(tmp_path, SCENARIOS[rule][R])).threshold
    assert "(the paper's: " in threshold or "(ours: " in threshold, threshold


def test_the_step_rules_say_that_they_test_steps_against_a_time_cut(tmp_path):
    study = _study(tmp_path, {})
    for rule in ("mpes_steps", "table4_steps"):
        claim = claims.RULES[rule](study)
        assert "step cut" in claim.threshold and "time per edit" in claim.threshold
        assert claim.rule.startswith("tests steps, not time") and "step cut" in claim.measured


def test_without_records_nothing_is_inconclusive_and_only_measured_preconditions_are_not_testable(tmp_path):
    study = _study(tmp_path, {"records": False, "items": False})
    for rule, claim in zip(claims.RULES, claims.all_claims(study)):
        assert claim.outcome not in (INC, NT), (rule, claim.outcome, claim.measured)


def test_scores_are_compared_on_the_same_facts_only(tmp_path):
    # MEMIT's first 100 facts keep their scores; the 200 facts added later score 0.4 lower. On all facts S
    # falls, on the facts scored at both snapshots it does not: no degradation is claimed.
    data = write_study(tmp_path, offset={MEMIT: 0.0})
    records = pd.read_csv(data / "records.csv")
    later = (records["method"] == "memit") & (records["variant"] == "plain") & (records["case_id"] >= 100)
    records.loc[later, ["es", "ps", "ns"]] -= 0.4
    records.to_csv(data / "records.csv", index=False)
    claim = claims.RULES["memit_degrades"](StudyResults(data))
    assert claim.outcome == INC and "the same 100 facts" in claim.measured


def test_one_run_at_two_edit_counts_is_not_compared_from_its_published_means(tmp_path):
    # S falls by 10 points from 100 to 300 edits, but the published means score 100 and 300 different facts
    claim = claims.RULES["memit_degrades"](_study(tmp_path, {"records": False}))
    assert claim.outcome.startswith("no data: per-fact scores of MEMIT at 100 edits, MEMIT at 300 edits")
    assert "not the same facts" in claim.measured


def test_without_per_fact_scores_there_is_no_interval_and_the_reason_is_given(tmp_path):
    claim = claims.RULES["encore_beats_memit"](StudyResults(write_study(tmp_path, records=False)))
    assert claim.outcome == "no data: per-fact scores of MEMIT at 300 edits, ENCORE at 300 edits (records.csv)"
    assert "no interval" in claim.measured and "published means" in claim.measured


def test_the_published_means_decide_when_every_per_fact_data_set_decides_alike(tmp_path):
    # NS falls by about 35 points on the same 300 facts: whatever the per-fact scores, the interval is below -2
    claim = claims.RULES["encore_no_degradation"](_study(tmp_path, {"records": False, "ns_offset": {ENCORE: -0.5}}))
    assert claim.outcome == NR and "the same 300 facts (published means)" in claim.measured
    # ... and reproduced when it rises by about 25 points
    claim = claims.RULES["encore_no_degradation"](
        _study(tmp_path / "r", {"records": False, "ns_offset": {ENCORE: 0.1}})
    )
    assert claim.outcome == R


@pytest.mark.parametrize("metric", ["S", "NS"])
def test_the_bounds_from_published_means_contain_the_paired_interval(tmp_path, metric):
    from encore.reporting.claims.base import gap

    data = write_study(tmp_path, offset={ENCORE: 0.0})
    with_records = StudyResults(data)
    (data / "records.csv").unlink()
    means_only = StudyResults(data)
    for a, b in [((MEMIT, 300), (ENCORE, 300)), ((UNEDITED, 0), (ENCORE, 300))]:
        interval, _ = gap(with_records, a, b, metric)
        bounds, _ = gap(means_only, a, b, metric)
        assert bounds.low <= interval.low <= interval.high <= bounds.high, (interval, bounds)
        assert bounds.estimate == pytest.approx(interval.estimate, abs=0.01)


def test_the_paired_comparison_is_decisive_where_an_unpaired_one_would_straddle(tmp_path):
    # per-fact spread (0.3-0.7) is large, the ENCORE - MEMIT difference (+0.006 on every fact) is small
    claim = claims.RULES["encore_beats_memit"](StudyResults(write_study(tmp_path, offset={MEMIT: 0.0, ENCORE: 0.006})))
    assert claim.outcome == R
    records = pd.read_csv(tmp_path / "records.csv")
    last = records[(records["edits"] == 300) & (records["method"] == "memit")]
    memit, encore = (
        last[last["variant"] == v][["es", "ps", "ns"]].mean(axis=1).to_numpy() for v in ("plain", "mpes_nc")
    )
    se = np.sqrt(memit.var() / len(memit) + encore.var() / len(encore))  # independent samples
    assert encore.mean() - memit.mean() - 1.96 * se < 0


def test_a_run_with_one_edited_layer_has_its_norm_ratio_without_an_interval(tmp_path):
    data = write_study(tmp_path, growth={EMMET: [3.0] * 4, EMMET_NC: [1.2] * 4})
    norms = pd.read_csv(data / "norms.csv")
    emmet = norms["method"] == "emmet"
    norms[~emmet | (norms["layer"] == 3)].to_csv(data / "norms.csv", index=False)  # EMMET's runs edit layer 3 only
    claim = claims.RULES["norm_constraint"](StudyResults(data))
    assert "EMMET+NC +20.60 vs EMMET +206.00: ratio 0.10 (one edited layer: no interval)" in claim.measured
    assert claim.outcome == R  # 0.10 < 0.5, and MEMIT's and ENCORE's pairs are reproduced in the default study


def test_fig4_growth_uses_the_paper_threshold_and_names_the_edit_count(tmp_path):
    claim = claims.RULES["norm_growth_memit"](StudyResults(write_study(tmp_path)))
    assert "> 10x" in claim.threshold and "after 300 edits (paper: 10,000)" in claim.measured
    assert claim.horizon == "at 300 edits; the paper: 10,000"


def test_results_page_has_one_row_per_claim_with_outcome_threshold_and_the_notes(tmp_path):
    data = write_study(tmp_path / "data")
    (tmp_path / "notes.md").write_text("## Notes\n\nhand-written\n")
    written = claims.write_results(data, tmp_path / "results.md", "Results: x", notes=tmp_path / "notes.md")
    text = (tmp_path / "results.md").read_text()
    assert len(written) == len(claims.RULES) and all(claim.paper in text and claim.rule in text for claim in written)
    assert all(claim.verdict in text for claim in written)
    assert "| threshold (whose)" in text and "records.csv, downstream_records.csv" in text
    assert text.rstrip().endswith("hand-written")
    memit = next(line for line in text.splitlines() if line.startswith("| MEMIT "))
    assert [cell.strip() for cell in memit.split("|")[2:5]] == ["300", "1.2", "0.1"]  # 12 s per batch of 10 edits


def test_results_page_names_the_per_unit_files_also_when_they_are_compressed(tmp_path):
    data = write_study(tmp_path / "data")
    records = data / "records.csv"
    records.with_name("records.csv.gz").write_bytes(gzip.compress(records.read_bytes()))
    records.unlink()
    claims.write_results(data, tmp_path / "results.md", "Results: x")
    line = next(line for line in (tmp_path / "results.md").read_text().splitlines() if "Per-unit files" in line)
    assert line.endswith("Per-unit files in data/: records.csv.gz, downstream_records.csv, ledger.csv.")


def test_the_tally_counts_no_data_outcomes_as_one_kind(tmp_path):
    data = write_study(tmp_path / "data", records=False, items=False, perplexity=None)
    written = claims.write_results(data, tmp_path / "results.md", "Results: x")
    missing = sum(kind(claim.outcome) == ND for claim in written)
    assert missing > 1 and f"{missing} no data" in (tmp_path / "results.md").read_text()


def test_a_downstream_task_the_unedited_model_is_at_chance_on_is_left_out(tmp_path):
    data = write_study(tmp_path)
    items = pd.read_csv(data / "downstream_records.csv")
    at_chance = (items["method"] == "unedited") & (items["task"] == "rte")
    items.loc[at_chance, "prediction"] = np.random.default_rng(5).integers(0, 2, at_chance.sum())
    items.to_csv(data / "downstream_records.csv", index=False)
    claim = claims.RULES["downstream_generate"](StudyResults(data))
    assert claim.outcome == R and "SST2 (unedited MCC" in claim.measured and "at chance" in claim.measured
    assert "RTE (unedited MCC" not in claim.measured


def test_a_binary_confusion_matrix_is_recovered_from_its_published_accuracy_f1_mcc_and_invalid_count():
    from encore.reporting.claims.general import binary_matrices
    from encore.reporting.claims.intervals import mcc, weighted_f1

    matrix = np.array([[30, 12, 3], [9, 41, 5], [0, 0, 0]])
    published = {
        "accuracy": 71 / 100,
        "f1": round(float(weighted_f1(matrix)), 6),
        "mcc": round(float(mcc(matrix)), 6),
        "invalid": 8.0,
    }
    found = binary_matrices(100, published)
    assert any((m == matrix).all() for m in found)
    assert all(abs(float(mcc(m)) - published["mcc"]) <= 1e-6 for m in found)


def test_without_items_the_downstream_rule_decides_from_the_recovered_matrices_where_they_agree(tmp_path):
    # unedited 85% correct, MEMIT 50%, ENCORE 90% of 120 items, published as aggregates only
    changes = {"items": False, "correct": {MEMIT: 0.5, ENCORE: 0.9}}
    claim = claims.RULES["downstream_generate"](_study(tmp_path, changes))
    assert claim.outcome == R and "confusion matrices fit" in claim.measured
    changes = {"items": False, "correct": {MEMIT: 0.5, ENCORE: 0.1}}
    claim = claims.RULES["downstream_generate"](_study(tmp_path / "nr", changes))
    assert claim.outcome == NR


PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "results" / "lifelong-cpu-fp32" / "data"


@pytest.mark.skipif(not PUBLISHED.exists(), reason="the fp32 study is not published")
def test_on_the_published_fp32_study_sst2_is_above_chance_and_encore_degrades_decisively():
    study = StudyResults(PUBLISHED)
    no_degradation = claims.RULES["encore_no_degradation"](study)
    assert no_degradation.outcome == NR and "the same 3,000 facts" in no_degradation.measured
    assert no_degradation.horizon == "at 3,000 edits; the paper: 10,000"
    downstream = claims.RULES["downstream_generate"](study)
    assert kind(downstream.outcome) != NT and "SST2 (2 unedited 100-item confusion matrices fit" in downstream.measured
    assert "MMLU" in downstream.outcome  # a 4-class matrix is not recovered: its chance level needs the items


def test_perplexity_on_different_texts_is_not_compared(tmp_path):
    data = write_study(tmp_path)
    metrics = pd.read_csv(data / "metrics.csv")
    metrics.loc[(metrics["metric"] == "perplexity") & (metrics["method"] == "unedited"), "protocol"] = "other/text"
    metrics.to_csv(data / "metrics.csv", index=False)
    claim = claims.RULES["perplexity"](StudyResults(data))
    assert kind(claim.outcome) == ND and "one text and token budget" in claim.outcome


@pytest.mark.parametrize("mpes_p_new, outcome", [(0.35, R), (0.95, NR)])
def test_mpes_probability_uses_the_post_update_p_new_of_the_ledger_where_published(tmp_path, mpes_p_new, outcome):
    # the records say the opposite (MPES runs at p(new) 0.95 at the snapshots): the ledger's measure decides
    data = write_study(tmp_path, p_new={run: 0.95 if mpes_p_new < 0.5 else 0.35 for run in MPES_RUNS})
    ledger = pd.read_csv(data / "ledger.csv")
    noise = np.random.default_rng(3).normal(0, 0.02, len(ledger))
    ledger["post_p_new"] = np.where(ledger["variant"].str.contains("mpes"), mpes_p_new, 0.9) + noise
    ledger.to_csv(data / "ledger.csv", index=False)
    claim = claims.RULES["mpes_probability"](StudyResults(data))
    assert claim.outcome == outcome and "right after each update (ledger post_p_new), on the same 300 facts" in (
        claim.measured
    )
    assert claim.horizon == "at 300 edits; the paper: 10,000"
