"""Tables and figures from collected results: time per edit, paper rows, missing runs named, no empty plots."""

from __future__ import annotations

import pandas as pd
import pytest

from encore.reporting.figures import all_figures
from encore.reporting.outputs import Index
from encore.reporting.paper_tables import paper_tables
from encore.reporting.summary import fastest_seconds_per_edit, seconds_per_edit

RUNS = [("memit", "plain"), ("memit", "mpes")]


def _metrics(model: str) -> pd.DataFrame:
    rows = []
    for method, variant, edits, base in [
        ("unedited", "unedited", 0, 20.0),
        ("memit", "plain", 4, 90.0),
        ("memit", "mpes", 4, 80.0),
    ]:
        subset = "to-be-edited" if method == "unedited" else "edited-so-far"
        for metric, value in (
            ("ES", base),
            ("PS", base - 5),
            ("NS", 70.0),
            ("S", base - 10),
            ("n_records", 4),
            ("p_new", base / 100),
        ):
            rows.append(dict(metric=metric, value=value, protocol=f"counterfact/{subset}/nll-comparison"))
            rows[-1].update(method=method, variant=variant, edits=edits)
        rows.append(
            dict(method=method, variant=variant, edits=edits, metric="GE", value=600.0, protocol="generation/x")
        )
        if method == "unedited":
            rows.append(
                dict(
                    method=method,
                    variant=variant,
                    edits=0,
                    metric="p_true_known",
                    value=0.3,
                    protocol="table1/to-be-edited/known-true-facts",
                )
            )
        for layer in range(3):
            rows.append(
                dict(
                    method=method,
                    variant=variant,
                    edits=edits,
                    metric=f"down_proj_norm.L{layer:02d}",
                    value=10.0 + layer + (edits if layer == 1 else 0),
                    protocol="analysis/down-proj-frobenius/all-layers",
                )
            )
            for component, share in (("residual", 0.6), ("attention", 0.2), ("mlp", 0.2)):
                rows.append(
                    dict(
                        method=method,
                        variant=variant,
                        edits=edits,
                        metric=f"activation_share.L{layer:02d}.{component}",
                        value=share,
                        protocol="analysis/activation-norm-share/p",
                    )
                )
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", "counterfact")
    frame.insert(0, "model", model)
    return frame


def _collected(tmp_path, model="some/local-model"):
    _metrics(model).to_csv(tmp_path / "metrics.csv", index=False)
    ledger = pd.DataFrame(
        [
            dict(method=m, variant=v, case_id=i, batch=b, iterations=it, targets_s=t, keys_s=1.0, solve_s=0.5)
            for m, v, it, t in (("memit", "plain", 20, 8.5), ("memit", "mpes", 10, 2.5))
            for b in (0, 1)
            for i in (2 * b, 2 * b + 1)
        ]
    )
    ledger.to_csv(tmp_path / "ledger.csv", index=False)
    pd.DataFrame(
        [
            dict(method=m, variant=v, edits=e, batch=e // 2, layer=1, frobenius_norm=10.0 + e)
            for m, v in RUNS
            for e in (0, 2, 4)
        ]
    ).to_csv(tmp_path / "norms.csv", index=False)
    pd.DataFrame(
        [
            dict(
                method=m,
                variant=v,
                layers="1",
                lambda_p=5000,
                lambda_n=0,
                mpes=2 if v == "mpes" else None,
                mpes_rule="all",
                v_num_grad_steps=20,
                v_lr=0.5,
            )
            for m, v in RUNS
        ]
    ).to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


def test_seconds_per_edit_sums_each_batch_once(tmp_path):
    timing = seconds_per_edit(pd.read_csv(_collected(tmp_path) / "ledger.csv")).set_index("variant")
    assert timing.loc["plain", "s_per_edit"] == pytest.approx(2 * (8.5 + 1.5) / 4)  # per-batch times repeat per row
    assert timing.loc["mpes", "s_per_edit"] == pytest.approx(2 * (2.5 + 1.5) / 4)
    assert timing.loc["mpes", "iterations"] == 10


def test_the_fastest_tenth_of_batches_is_the_10th_percentile_of_their_seconds_per_edit():
    # 20 batches of 5 edits; batch b took 10 (b + 1) s of targets, 1 s of keys and 0 s of solves
    rows = [{"method": "memit", "variant": "plain", "order": 0, "batch": b, "case_id": 5 * b + i,
             "targets_s": 10.0 * (b + 1), "keys_s": 1.0, "solve_s": 0.0, "iterations": 20}
            for b in range(20) for i in range(5)]  # fmt: skip
    fastest = fastest_seconds_per_edit(pd.DataFrame(rows))
    per_batch = [(10.0 * (b + 1) + 1.0) / 5 for b in range(20)]
    assert fastest["memit", "plain"] == pytest.approx(pd.Series(per_batch).quantile(0.1))
    assert fastest["memit", "plain"] < seconds_per_edit(pd.DataFrame(rows)).loc[0, "s_per_edit"]


@pytest.mark.parametrize("model, with_paper", [("some/local-model", False), ("meta-llama/Meta-Llama-3-8B", True)])
def test_paper_tables_show_paper_rows_only_for_a_paper_model(tmp_path, model, with_paper):
    collected, out, index = _collected(tmp_path, model), tmp_path / "tables", Index()
    paper_tables(collected, out, index)
    table1 = pd.read_csv(out / "table01_probability_and_time.csv")
    ours = table1[table1["source"] == "this run"].iloc[0]
    assert ours["original_fact_prob"] == 0.3 and ours["edited_prob"] == 0.9 and ours["edited_prob_mpes"] == 0.8
    assert ours["time_change_pct"] == pytest.approx(100 * (1.0 / 2.5 - 1))
    table2 = pd.read_csv(out / "table02_mpes.csv")
    assert ("paper, 10000 edits" in set(table2["source"])) == with_paper
    if with_paper:  # Llama3-8B, MEMIT row of the paper's Table 2
        assert table2[table2["source"].str.startswith("paper")].iloc[0][["ES", "S"]].tolist() == [49.68, 50.078]
    assert (out / "table02_mpes.tex").read_text().startswith("\\begin{table}")
    missing = dict(index.missing)
    assert "emmet/plain" in missing["table05_emmet_norm_constraint"]
    assert "Runs not made: alphaedit/plain" in (out / "table02_mpes.md").read_text()


def test_figures_are_drawn_only_for_runs_that_exist(tmp_path):
    collected, out, index = _collected(tmp_path), tmp_path / "figures", Index()
    all_figures(collected, out, index)
    made = " ".join(name for name, _ in index.made)
    assert "fig01_norm_growth.png" in made and "fig04_layer_norms.png" in made and "fig02_schematic.pdf" in made
    assert (out / "fig05_activation_share.png").stat().st_size > 10_000
    missing = dict(index.missing)
    captions = {files.split(".")[0]: caption for files, caption in index.made}
    # no EMMET run: the editors' figure would repeat fig05, so it is not drawn, and the index says why
    assert not (out / "fig08-10_activation_share_editors.png").exists()
    assert "of the run emmet/plain (without it, it would repeat fig05" in missing["fig08-10_activation_share_editors"]
    assert "evaluation.downstream: all" in missing["fig03_downstream_mpes"]
    assert not (out / "fig03_downstream_mpes.png").exists()
    assert "alphaedit" not in captions["fig01_norm_growth"].lower()  # the caption names the runs drawn only
    assert missing["fig01_norm_growth (runs left out)"] == "runs not made: alphaedit/plain"


def test_several_orderings_give_the_mean_and_a_bootstrap_interval(tmp_path):
    collected = _collected(tmp_path)
    one = pd.read_csv(collected / "metrics.csv").assign(order=0)
    other = one.assign(order=1, value=lambda f: f["value"].where(f["metric"] != "ES", f["value"] - 10))
    pd.concat([one, other]).to_csv(collected / "metrics.csv", index=False)
    index = Index()
    paper_tables(collected, tmp_path / "tables", index)
    table = pd.read_csv(tmp_path / "tables" / "table03_encore.csv").set_index("method")
    assert table.loc["MEMIT", "ES"] == pytest.approx(85.0) and table.loc["MEMIT", "PS"] == pytest.approx(85.0)
    assert table.loc["MEMIT", "source"] == "this run, 4 edits, mean of 2 orderings"
    low, high = (float(x) for x in table.loc["MEMIT", "ES_ci95"].strip("[]").split(","))
    assert 80.0 <= low < 85.0 < high <= 90.0
    assert table.loc["MEMIT", "PS_ci95"] == "[85.00, 85.00]"


def test_results_without_analysis_or_downstream_rows_name_what_is_missing(tmp_path):
    collected = _collected(tmp_path)
    metrics = pd.read_csv(collected / "metrics.csv")
    metrics[~metrics["metric"].str.contains(r"\.L\d\d")].to_csv(collected / "metrics.csv", index=False)
    index = Index()
    all_figures(collected, tmp_path / "figures", index)
    missing = dict(index.missing)
    assert "evaluation.analysis" in missing["fig04_layer_norms"]
    assert "unedited model" in missing["fig05_activation_share"]
    assert not (tmp_path / "figures" / "fig05_activation_share.png").exists()


def test_summary_uses_the_authors_subset_where_a_snapshot_scored_only_that():
    import pandas as pd

    from encore.reporting.summary import summary

    def rows(edits, protocol, es):
        base = {
            "model": "m",
            "dataset": "counterfact",
            "method": "memit",
            "variant": "plain",
            "order": 0,
            "edits": edits,
        }
        values = {"ES": es, "PS": 50.0, "NS": 60.0, "S": 55.0, "n_records": edits}
        return [{**base, "metric": k, "value": v, "protocol": protocol} for k, v in values.items()]

    tidy = pd.DataFrame(
        rows(500, "counterfact/authors-20pct/nll-comparison", 90.0)
        + rows(1000, "counterfact/edited-so-far/nll-comparison", 80.0)
        + rows(1000, "counterfact/authors-20pct/nll-comparison", 70.0)
    )
    table = summary(tidy)
    assert table[["edits", "facts", "ES"]].values.tolist() == [[500, "authors-20pct", 90.0], [1000, "all", 80.0]]
