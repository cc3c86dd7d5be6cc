"""The paper_outputs rule: the paper's tables from the collected CSVs alone (no model is loaded), then its figures.

A paper table is written as CSV, Markdown and LaTeX, with the paper's own numbers as extra rows (source "paper, 10k
edits") when the experiment's model and data set match a paper configuration (``encore.reporting.paper_values``).
A table none of whose runs were made is not written; it is listed with the missing runs in the index instead.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from encore.reporting import paper_values as paper
from encore.reporting.data_files import data_path
from encore.reporting.outputs import (
    ALL_EIGHT,
    BASE,
    EMMET,
    EMMET_NC,
    ENCORE_FAMILY,
    REGULARISER_RUNS,
    Index,
    label,
)
from encore.reporting.summary import final_rows, mean_and_interval, seconds_per_edit, summary


def _write(table: pd.DataFrame, stem: Path, caption: str) -> list[str]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{stem}.csv", index=False)
    Path(f"{stem}.md").write_text(f"{caption}\n\n" + table.to_markdown(index=False, floatfmt=".3g") + "\n")
    latex = table.to_latex(index=False, float_format="%.2f", na_rep="--", caption=caption, label=f"tab:{stem.name}")
    Path(f"{stem}.tex").write_text(latex)
    return [f"{stem.name}.{ext}" for ext in ("csv", "md", "tex")]


def _run_rows(final: pd.DataFrame, runs, columns, paper_lookup, model: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows "this run" for each available (method, variant) of ``runs`` (+ "paper" rows); missing runs."""
    rows, missing = [], []
    paper_name = paper.paper_model(model)
    for method, variant in runs:
        found = final[(final["method"] == method) & (final["variant"] == variant)]
        if found.empty:
            missing.append(f"{method}/{variant}")
            continue
        orderings = len(found)
        source = f"this run, {int(found['edits'].max())} edits" + (
            f", mean of {orderings} orderings" if orderings > 1 else ""
        )
        row = {"method": label(method, variant), "source": source}
        for column in columns:
            mean, low, high = mean_and_interval(found[column]) if column in found else (None, None, None)
            row[column] = mean
            if low is not None:
                row[f"{column}_ci95"] = f"[{low:.2f}, {high:.2f}]"
        rows.append(row)
        reference = paper_lookup(method, variant, paper_name) if paper_name else None
        if reference is not None:
            rows.append(
                {
                    "method": label(method, variant),
                    "source": f"paper, {paper.PAPER_EDITS} edits",
                    **dict(zip(columns, reference)),
                }
            )
    return pd.DataFrame(rows), missing


class _Writer:
    """Writes a table (CSV, Markdown, LaTeX) and records it, or records why it is missing."""

    def __init__(self, out_dir: Path, index: Index):
        self.out_dir, self.index = Path(out_dir), index

    def __call__(self, name: str, frame: pd.DataFrame, missing: list[str], caption: str, needs: str) -> None:
        if frame.empty:
            self.index.missing.append((name, f"needs the runs {', '.join(missing)} ({needs})"))
            return
        files = _write(
            frame, self.out_dir / name, caption + (f" Runs not made: {', '.join(missing)}." if missing else "")
        )
        self.index.made.append((", ".join(files), caption))


def table1(final: pd.DataFrame, unedited: pd.DataFrame, timing: pd.DataFrame, paper_name: str | None):
    """Table 1 rows (probability of known true facts, of edited facts without / with MPES, s/edit) and missing runs."""
    p_known = float(unedited["p_true_known"].mean()) if "p_true_known" in unedited and len(unedited) else float("nan")
    rows, missing = [], []
    for method in ("emmet", "memit", "alphaedit"):
        results = {v: final[(final["method"] == method) & (final["variant"] == v)] for v in ("plain", "mpes")}
        times = {v: timing[(timing["method"] == method) & (timing["variant"] == v)] for v in ("plain", "mpes")}
        missing += [f"{method}/{v}" for v, frame in results.items() if frame.empty]
        if all(frame.empty for frame in results.values()):
            continue

        def mean(frames, variant, column):
            return float(frames[variant][column].mean()) if not frames[variant].empty else float("nan")

        name = label(method, "plain")
        plain_s, mpes_s = mean(times, "plain", "s_per_edit"), mean(times, "mpes", "s_per_edit")
        rows.append(
            {
                "method": name,
                "source": "this run",
                "original_fact_prob": p_known,
                "edited_prob": mean(results, "plain", "p_new"),
                "edited_prob_mpes": mean(results, "mpes", "p_new"),
                "s_per_edit": plain_s,
                "s_per_edit_mpes": mpes_s,
                "time_change_pct": 100 * (mpes_s / plain_s - 1),
            }
        )
        if "post_p_new" in timing:  # right after each batch's update, before any later edit
            rows[-1].update(edited_prob_post=mean(times, "plain", "post_p_new"),
                            edited_prob_post_mpes=mean(times, "mpes", "post_p_new"))  # fmt: skip
        if paper_name and (method, paper_name) in paper.TABLE1:
            values = paper.TABLE1[(method, paper_name)]
            columns = ["original_fact_prob", "edited_prob", "edited_prob_mpes", "s_per_edit", "s_per_edit_mpes"]
            rows.append(
                {
                    "method": name,
                    "source": "paper",
                    **dict(zip(columns, values)),
                    "time_change_pct": 100 * (values[4] / values[3] - 1),
                }
            )
    return pd.DataFrame(rows), missing


def phase_table(timing: pd.DataFrame) -> pd.DataFrame:
    """Seconds per edit of each phase and mean iterations per run."""
    phases = timing.assign(method=[label(m, v) for m, v in zip(timing["method"], timing["variant"])])
    for phase in ("targets_s", "keys_s", "solve_s"):
        phases[phase.replace("_s", "_s_per_edit")] = phases[phase] / phases["edits"]
    columns = [
        "method",
        "edits",
        "iterations",
        "targets_s_per_edit",
        "keys_s_per_edit",
        "solve_s_per_edit",
        "s_per_edit",
    ]
    return phases[columns].rename(columns={"iterations": "mean_iterations"})


def hyperparameter_table(runs: pd.DataFrame, dataset: str, paper_name: str | None) -> pd.DataFrame:
    """Tables 6-11: the hyperparameters each run used, with the paper's where the model matches."""
    rows = []
    for run in runs.drop_duplicates(["method", "variant"]).itertuples():
        rows.append(
            {
                "method": label(run.method, run.variant),
                "source": "this run",
                "layers": run.layers,
                "lambda_p": run.lambda_p,
                "lambda_n": run.lambda_n,
                "mpes_cutoff": run.mpes,
                "mpes_rule": run.mpes_rule,
                "v_num_grad_steps": run.v_num_grad_steps,
                "v_lr": run.v_lr,
            }
        )
        reference = paper.HYPERPARAMETERS.get((dataset, run.method, run.variant), {}).get(paper_name)
        if reference:
            rows.append(
                {
                    "method": rows[-1]["method"],
                    "source": "paper",
                    **dict(zip(["lambda_p", "lambda_n", "mpes_cutoff"], reference)),
                }
            )
    return pd.DataFrame(rows)


COUNTERFACT_TABLES = [
    (
        "table02_mpes",
        BASE,
        "Table 2: effect of MPES on each editor (CounterFact, last snapshot).",
        lambda m, v, p: paper.COUNTERFACT.get((m, v, p)),
    ),
    (
        "table03_encore",
        ENCORE_FAMILY,
        "Table 3: ENCORE vs MEMIT, MEMIT+MPES and MEMIT+NC (CounterFact).",
        lambda m, v, p: paper.COUNTERFACT.get((m, v, p)),
    ),
    (
        "table04_all_methods",
        ALL_EIGHT,
        "Table 4: all editors and variants (CounterFact; paper: GPT2-XL).",
        lambda m, v, p: paper.COUNTERFACT.get((m, v, p)) if p == "GPT2-XL" else None,
    ),
    (
        "table05_emmet_norm_constraint",
        [EMMET, EMMET_NC],
        "Table 5: EMMET with the norm constraint (CounterFact; paper: Llama2-7B, NC tuned for editing).",
        lambda m, v, p: paper.TABLE5.get((m, v, p)),
    ),
]


def regularisers_table(final: pd.DataFrame, model: str, write: _Writer, index: Index) -> None:
    """Table 4 layout for the lifelong-editing regularisers beside MEMIT and ENCORE (not in the paper: RECT, Gu et
    al. 2024; PRUNE, Ma et al. 2025), with the perplexity; written when a RECT or PRUNE run exists."""
    name = "table04b_regularisers"
    if not final["method"].isin(["memit_rect", "memit_prune"]).any():
        index.missing.append((name, "needs a memit_rect or memit_prune run"))
        return
    frame, missing = _run_rows(
        final, REGULARISER_RUNS, ["ES", "PS", "NS", "S", "GE", "perplexity"], lambda *_: None, model
    )
    caption = (
        "Table 4 layout, lifelong-editing regularisers: MEMIT, ENCORE, MEMIT+RECT and MEMIT+PRUNE (CounterFact, last "
        "snapshot; perplexity: WikiText-2 test; no paper values, the paper has no RECT or PRUNE runs)."
    )
    write(name, frame, missing, caption, "memit, memit/mpes_nc, memit_rect, memit_prune")


def paper_tables(results: Path, out_dir: Path, index: Index) -> None:
    """Tables 1-5 and 12-14 from the collected results, 6-11 from the hyperparameters used."""
    metrics = pd.read_csv(data_path(results, "metrics.csv"))
    table = summary(metrics)
    timing = seconds_per_edit(pd.read_csv(data_path(results, "ledger.csv")))
    model, dataset = str(metrics["model"].iloc[0]), str(metrics["dataset"].iloc[0])
    final = final_rows(table[table["method"] != "unedited"])
    paper_name = paper.paper_model(model)
    write = _Writer(out_dir, index)

    if dataset == "counterfact":
        frame, missing = table1(final, table[table["method"] == "unedited"], timing, paper_name)
        write(
            "table01_probability_and_time",
            frame,
            missing,
            "Table 1: probability of the true facts the unedited model knows, of the edited facts after editing "
            + (
                "(without / with MPES; edited_prob: at the last snapshot, after every later edit; edited_prob_post: "
                "right after each batch's own update, the paper's measure), "
                if "post_p_new" in timing
                else "(without / with MPES), "
            )
            + "and seconds per edit (targets + keys + solves).",
            "plain and mpes variants",
        )
        for name, runs, caption, lookup in COUNTERFACT_TABLES:
            frame, missing = _run_rows(final, runs, ["ES", "PS", "NS", "S", "GE"], lookup, model)
            write(name, frame, missing, caption, "methods and variants in the config")
        regularisers_table(final, model, write, index)
        index.missing.append(("table12-14_zsre", "needs an experiment with dataset: zsre"))
    else:
        frame, missing = _run_rows(
            final, ALL_EIGHT, ["ES", "PS", "NS"], lambda m, v, p: paper.ZSRE.get((m, v), {}).get(p), model
        )
        write(
            "table12-14_zsre",
            frame,
            missing,
            "Tables 12-14: zsRE efficacy, paraphrase, specificity (token top-1).",
            "methods and variants in the config",
        )
        index.missing.append(("table01-05", "need an experiment with dataset: counterfact"))
    write(
        "table01b_time_per_phase",
        phase_table(timing),
        [],
        "Table 1 (timing detail): seconds per edit of each phase (target optimisation, keys, per-layer solves) and "
        "mean target-optimisation iterations, summed over all batches and orderings of each run.",
        "any run",
    )
    write(
        "table06-11_hyperparameters",
        hyperparameter_table(pd.read_csv(data_path(results, "runs.csv")), dataset, paper_name),
        [],
        "Tables 6-11: hyperparameters of each run (lambda_p preservation weight, lambda_n norm-constraint weight, "
        "MPES cut-off +n).",
        "any run",
    )


def build_paper_outputs(results: Path, tables_dir: Path, figures_dir: Path, index_path: Path, title: str) -> Index:
    """All paper tables and figures the collected results in ``results`` allow, and the index of what was
    written and what is missing."""
    from encore.reporting.figures import all_figures

    index = Index()
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paper_tables(Path(results), Path(tables_dir), index)
    index.figures = all_figures(Path(results), Path(figures_dir), index)
    index.write(index_path, title)
    return index
