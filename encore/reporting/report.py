"""Tables built from cached results only (no model is loaded): the editing summary and the paper's tables.

``collect`` gathers the per-snapshot files of an experiment into four CSVs (metrics, norms, ledger,
runs); every table and figure is computed from those. A paper table is written as CSV, Markdown and
LaTeX, with the paper's own numbers as extra rows (source "paper, 10k edits") when the experiment's
model and data set match a paper configuration (``encore.reporting.paper_values``). A table none of whose runs
were made is not written; it is listed with the missing runs in the index instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from encore.datasets import file_sha256
from encore.reporting import paper_values as paper
from encore.reporting.data_files import data_path
from encore.reporting.outputs import (  # noqa: F401 (LABELS: shared)
    ALL_EIGHT,
    BASE,
    EMMET,
    EMMET_NC,
    ENCORE_FAMILY,
    LABELS,
    REGULARISER_RUNS,
    Index,
    label,
)

EDITING_METRICS = ["ES", "PS", "NS", "S"]
MAIN_PROTOCOL = r"^(counterfact|zsre)/(edited-so-far|to-be-edited)/(nll-comparison|token-top1)$"
SAMPLED_PROTOCOL = r"^(counterfact|zsre)/authors-20pct/(nll-comparison|token-top1)$"
DOWNSTREAM_COLUMNS = {"downstream/generate": "DS_generate", "downstream/label-loglik": "DS_loglik"}


def read_csvs(paths) -> pd.DataFrame:
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"missing result files (run the pipeline for them first): {', '.join(missing)}")
    return pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)


COLLECTED = ("metrics.csv", "norms.csv", "ledger.csv", "runs.csv")
# per-record editing scores and per-item downstream predictions; collected folders from before them lack them
OPTIONAL_COLLECTED = ("records.csv", "downstream_records.csv")
CHECKSUMS = "sha256.json"


def collect(
    metric_files, norm_files, ledger_files, manifest_files, out_dir: Path, record_files=(), downstream_files=()
) -> None:
    """metrics.csv, norms.csv, ledger.csv and runs.csv (hyperparameters and provenance of each run's
    last snapshot) in ``out_dir``: everything the tables and figures are made of; with ``record_files`` also
    records.csv (the per-record editing scores of every evaluation), with ``downstream_files``
    downstream_records.csv (the per-item downstream predictions); then sha256.json, their
    checksums, which ``verify_collected`` checks before they are used. Each snapshot's ledger and norms are
    checked against its manifest first."""
    from encore.editing.snapshots import _read_manifest

    scored_in = score_precisions(metric_files)  # before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in manifest_files:
        _read_manifest(Path(path).parent, names=["ledger.csv", "norms.csv"])
    read_csvs(metric_files).to_csv(out_dir / "metrics.csv", index=False)
    read_csvs(norm_files).to_csv(out_dir / "norms.csv", index=False)
    read_csvs(ledger_files).to_csv(out_dir / "ledger.csv", index=False)
    (out_dir / "records.csv").unlink(missing_ok=True)
    if record_files:  # 12 significant digits, as each evaluation wrote them (encore.evaluation.rows)
        read_csvs(record_files).to_csv(out_dir / "records.csv", index=False, float_format="%.12g")
    (out_dir / "downstream_records.csv").unlink(missing_ok=True)
    if downstream_files:
        read_csvs(downstream_files).to_csv(out_dir / "downstream_records.csv", index=False)
    runs = {}
    for path in manifest_files:
        manifest = json.loads(Path(path).read_text())
        key = (manifest["method"], manifest["variant"], manifest["data"]["order_file"]["sample"])
        if key not in runs or manifest["edits_done"] > runs[key]["edits"]:
            execution = manifest.get("execution", {})
            hp = manifest["hparams"]
            runs[key] = {
                "method": key[0],
                "variant": key[1],
                "order": key[2],
                "edits": manifest["edits_done"],
                "model": manifest["model_name"],
                "layers": " ".join(map(str, hp["layers"])),
                "lambda_p": hp["mom2_update_weight"],
                "lambda_n": hp["norm_lambda"],
                "mpes": hp["mpes"],
                "mpes_rule": hp["mpes_rule"],
                "emmet_lambda": hp["emmet_lambda"],
                "nullspace_threshold": hp["nullspace_threshold"],
                "alphaedit_l2": hp["alphaedit_l2"],
                "rect_fraction": hp.get("rect_fraction"),  # absent from manifests written before RECT/PRUNE
                "prune_log_base": hp.get("prune_log_base"),
                "v_num_grad_steps": hp["v_num_grad_steps"],
                "v_lr": hp["v_lr"],
                "clamp_norm_factor": hp["clamp_norm_factor"],
                "kl_factor": hp["kl_factor"],
                "mom2_n_samples": hp["mom2_n_samples"],
                "seed": manifest["seed"],
                "batch_size": manifest["batch_size"],
                "edit_precision": execution.get("precision", "fp32"),
                "score_precision": scored_in,
                "code": json.dumps(manifest.get("code")),
            }
    pd.DataFrame(list(runs.values())).to_csv(out_dir / "runs.csv", index=False)
    names = COLLECTED + tuple(name for name in OPTIONAL_COLLECTED if (out_dir / name).exists())
    checksums = {name: file_sha256(out_dir / name) for name in names}
    (out_dir / CHECKSUMS).write_text(json.dumps(checksums, indent=1) + "\n")


def completed_results(results: Path) -> dict[str, list[Path]]:
    """``collect``'s inputs from what an experiment has finished so far (a study in progress): every snapshot whose
    manifest is written (a snapshot's last file) and every evaluation whose metrics CSV is written (an evaluation's
    last file), the unedited model's included. Keys: metrics, norms, ledgers, manifests, records, downstream."""
    results = Path(results)
    manifests = sorted(results.glob("*/*/order*/snapshots/edits_*/manifest.json"))
    metrics = sorted(results.glob("*/*/order*/metrics/edits_*[0-9].csv")) + sorted(
        results.glob("unedited/order*/metrics.csv")
    )
    return {
        "metrics": metrics,
        "norms": [path.with_name("norms.csv") for path in manifests],
        "ledgers": [path.with_name("ledger.csv") for path in manifests],
        "manifests": manifests,
        "records": [path.with_suffix(".records.csv") for path in metrics],
        "downstream": [path.with_suffix(".downstream.csv") for path in metrics],
    }


def score_precision(metrics_file: Path) -> str:
    """The precision an evaluation scored in, from the ``.provenance.json`` beside its metrics CSV (fp32 where the
    record predates the setting or is absent)."""
    provenance = Path(metrics_file).with_suffix(".provenance.json")
    if not provenance.exists():
        return "fp32"
    execution = json.loads(provenance.read_text()).get("execution", {})
    return execution.get("score_precision", execution.get("precision", "fp32"))  # an API evaluation names both


def score_precisions(metric_files) -> str:
    """The one precision every evaluation of a collection scored in; a one-line error naming two files that
    differ, since runs scored in different precisions are never compared (docs/precision.md)."""
    first = {}
    for path in metric_files:
        precision = score_precision(path)
        first.setdefault(precision, path)
        if len(first) > 1:
            (a, file_a), (b, file_b) = list(first.items())[:2]
            raise ValueError(
                f"{file_b}: scored in {b} but {file_a} in {a}; runs scored in different precisions are not compared: "
                "re-evaluate them with one scoring precision (config key precision: {edit: ..., score: ...})"
            )
    return next(iter(first), "fp32")


def verify_collected(results: Path) -> None:
    """Fail with a one-line error naming the file and the fix when a collected CSV differs from what
    ``collect`` wrote (corrupted or edited since). The paper_outputs rule calls it before reading them."""
    results = Path(results)
    try:
        checksums = json.loads((results / CHECKSUMS).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{results / CHECKSUMS}: unreadable ({type(error).__name__}); {_RECOLLECT}") from None
    optional = tuple(name for name in OPTIONAL_COLLECTED if name in checksums or (results / name).exists())
    for name in COLLECTED + optional:
        path = results / name
        if not path.is_file():
            raise ValueError(f"{path}: missing; {_RECOLLECT}")
        if file_sha256(path) != checksums.get(name):
            raise ValueError(f"{path}: checksum differs from {CHECKSUMS} (corrupted or edited); {_RECOLLECT}")


_RECOLLECT = "delete it and rerun snakemake to collect the results again"


def summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset, method, variant, edits): ES, PS, NS, S on the facts edited so far (the
    unedited model: the facts to be edited; a snapshot scored only on the authors' 20% of them: those, and
    ``facts`` says so), GE x100, WikiText-2 perplexity, p_new and the average downstream F1 x100."""
    wanted = metrics["metric"].isin(EDITING_METRICS + ["n_records", "p_new"])
    main = metrics[metrics["protocol"].str.match(MAIN_PROTOCOL) & wanted].assign(facts="all")
    keys = ["model", "dataset", "method", "variant", "order", "edits"]
    sampled = metrics[metrics["protocol"].str.match(SAMPLED_PROTOCOL) & wanted].assign(facts="authors-20pct")
    if not sampled.empty:
        have = set(map(tuple, main[keys].astype(str).values))
        sampled = sampled[[tuple(row) not in have for row in sampled[keys].astype(str).values]]
        main = pd.concat([main, sampled])
    extra = metrics[metrics["metric"].isin(["GE", "perplexity", "p_true_known", "n_known"])]
    for prefix, column in DOWNSTREAM_COLUMNS.items():
        rows = metrics[(metrics["metric"] == "average.f1") & metrics["protocol"].str.startswith(prefix)].copy()
        rows["metric"] = column
        extra = pd.concat([extra, rows])
    keys = ["model", "dataset", "method", "variant", "order", "edits"]
    table = pd.concat([main, extra]).assign(order=lambda frame: frame["order"] if "order" in frame else 0)
    table = table.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    columns = [
        c
        for c in [
            "n_records",
            *EDITING_METRICS,
            "GE",
            "perplexity",
            *DOWNSTREAM_COLUMNS.values(),
            "p_new",
            "p_true_known",
            "n_known",
        ]
        if c in table.columns
    ]
    table = table[keys + columns]
    facts = main.assign(order=main["order"] if "order" in main else 0)[keys + ["facts"]].drop_duplicates(keys)
    table = table.merge(facts.astype({key: table[key].dtype for key in keys}), on=keys, how="left")
    table = table.sort_values(["method", "variant", "order", "edits"]).reset_index(drop=True)
    table["n_records"] = table["n_records"].astype(int)
    return table[keys + ["facts"] + columns]


def editing_table(
    metric_files, csv_path: Path, markdown_path: Path, all_metrics_path: Path | None = None, ledger_files=()
) -> pd.DataFrame:
    """``summary`` of all metric files as CSV and Markdown; ``all_metrics_path`` receives every tidy row.
    With ``ledger_files``, each snapshot row also gets the run's editing cost up to it (``cost_to_snapshot``)."""
    tidy = read_csvs(metric_files)
    if all_metrics_path is not None:
        tidy.to_csv(all_metrics_path, index=False)
    table = summary(tidy).drop(columns=["p_new", "p_true_known", "n_known"], errors="ignore")
    if ledger_files:
        table = cost_to_snapshot(table, read_csvs(ledger_files))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    markdown_path.write_text(table.to_markdown(index=False, floatfmt=".2f") + "\n")
    return table


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The last snapshot of every run (per ordering)."""
    return table.loc[table.groupby(["method", "variant", "order"])["edits"].idxmax()]


def mean_and_interval(values) -> tuple[float, float | None, float | None]:
    """Mean over orderings and its 95% percentile-bootstrap interval (None with fewer than 2 orderings)."""
    from scipy.stats import bootstrap

    values = [float(v) for v in values if pd.notna(v)]
    if not values:
        return float("nan"), None, None
    if len(values) < 2:
        return values[0], None, None
    result = bootstrap(
        (values,),
        lambda sample, axis: sample.mean(axis=axis),
        confidence_level=0.95,
        n_resamples=2000,
        method="percentile",
        random_state=0,
    )
    return sum(values) / len(values), float(result.confidence_interval.low), float(result.confidence_interval.high)


def seconds_per_edit(ledger: pd.DataFrame) -> pd.DataFrame:
    """Per run: seconds per edit (targets + keys + solves, summed over batches / edits), mean iterations and, where
    the ledger has them, the mean post-update p(new) and success (each batch's facts right after its update)."""
    per_batch = ledger.groupby(["method", "variant", "batch"])[["targets_s", "keys_s", "solve_s"]].first().reset_index()
    totals = per_batch.groupby(["method", "variant"])[["targets_s", "keys_s", "solve_s"]].sum()
    means = {"edits": ("case_id", "size"), "iterations": ("iterations", "mean")}
    if "post_p_new" in ledger:  # post-update efficacy (ledgers written before it lack it)
        means.update(post_p_new=("post_p_new", "mean"), post_success=("post_success", "mean"))
    counts = ledger.groupby(["method", "variant"]).agg(**means)
    result = totals.join(counts)
    result["s_per_edit"] = (result["targets_s"] + result["keys_s"] + result["solve_s"]) / result["edits"]
    return result.reset_index()


def cost_to_snapshot(table: pd.DataFrame, ledger: pd.DataFrame) -> pd.DataFrame:
    """Add ``iterations`` (mean target-optimisation forwards per edit) and ``s_per_edit`` (targets + keys +
    solves, per edit) over the edits up to each row's snapshot; empty for the unedited model."""
    ledger = ledger.assign(order=ledger["order"].astype(str))
    iterations, seconds = [], []
    for row in table.itertuples():
        done = ledger[
            (ledger["method"] == row.method)
            & (ledger["variant"] == row.variant)
            & (ledger["order"] == str(row.order))
            & (ledger["position"] < row.edits)
        ]
        if done.empty:
            iterations.append(float("nan")), seconds.append(float("nan"))
            continue
        per_batch = done.groupby("batch")[["targets_s", "keys_s", "solve_s"]].first().sum()
        iterations.append(float(done["iterations"].mean()))
        seconds.append(float(per_batch.sum()) / len(done))
    return table.assign(iterations=iterations, s_per_edit=seconds)


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
