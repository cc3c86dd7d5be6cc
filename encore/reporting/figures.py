"""The paper's figures from the collected results of one experiment (one model, one data set), as PNG
and PDF, with no model loaded. With several edit orderings, every line is the mean over orderings. Each figure names the runs it needs; panels of runs that were not made
are left out and listed in the report index, and a figure with no run at all is not drawn.

Figure numbers follow the paper; where the paper repeats a layout per model (8-10, 15-20, 21-28), the
experiment's model gives one instance of it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from encore.evaluation.analysis import COMPONENTS  # noqa: E402
from encore.reporting.report import ENCORE_FAMILY, Index, label  # noqa: E402

DOWNSTREAM_PROTOCOL = "downstream/generate"  # the paper's protocol (greedy 3 tokens, parsed answer)
TASK_ORDER = ["sst2", "mrpc", "nli", "rte", "cola", "mmlu"]
PER_TASK_FIGURES = [
    ("fig14_downstream_tasks_emmet_nc", [("emmet", "plain"), ("emmet", "nc")], "EMMET vs EMMET+NC"),
    ("fig21_downstream_tasks_alphaedit", [("alphaedit", "plain"), ("alphaedit", "mpes")], "AlphaEdit +/- MPES"),
    ("fig22_downstream_tasks_emmet", [("emmet", "plain"), ("emmet", "mpes")], "EMMET +/- MPES"),
    ("fig23_downstream_tasks_memit_encore", ENCORE_FAMILY, "MEMIT, +MPES, +NC, ENCORE"),
]
LAYER_NORM_FIGURES = [
    ("fig04_layer_norms", [("alphaedit", "plain"), ("memit", "plain")]),
    ("fig07a_layer_norms_encore", [("memit", "mpes_nc")]),
    ("fig15-19_layer_norms_editors", [("alphaedit", "plain"), ("emmet", "plain"), ("memit", "plain")]),
    ("fig16-20_layer_norms_norm_constraint", [("memit", "plain"), ("memit", "nc"), ("memit", "mpes_nc")]),
]
SHARE_FIGURES = [
    ("fig05_activation_share", [("alphaedit", "plain"), ("memit", "plain"), ("memit", "mpes_nc")]),
    ("fig08-10_activation_share_editors", [("alphaedit", "plain"), ("emmet", "plain"), ("memit", "plain")]),
    ("fig11-13_activation_share_norm_constraint", [("memit", "plain"), ("memit", "nc"), ("memit", "mpes_nc")]),
]
SHARE_CAPTION = (
    "share of each sub-layer in the residual stream per layer: ||x|| / (||h|| + ||a|| + ||m||) for the block "
    "input h, attention contribution a and MLP contribution m, averaged over tokens and the rewrite prompts "
    "of the evaluated facts (definition of algorithms.md §9; the paper gives no code); edited layers in red."
)


def _save(figure, stem: Path) -> list[str]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    for ext in ("png", "pdf"):
        figure.savefig(f"{stem}.{ext}", dpi=150)
    plt.close(figure)
    return [f"{stem.name}.png", f"{stem.name}.pdf"]


def _panels(count: int, width: float = 4.4, height: float = 3.3):
    columns = min(4, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat)


def _present(frame: pd.DataFrame, runs) -> tuple[list, list[str]]:
    have = set(zip(frame["method"], frame["variant"]))
    return [r for r in runs if r in have], [f"{m}/{v}" for m, v in runs if (m, v) not in have]


def _record(index: Index, name: str, files, caption: str, missing: list[str]) -> None:
    if missing:
        caption += f" Runs not made (panels left out): {', '.join(missing)}."
    index.made.append((", ".join(files), caption))


def norm_growth(norms: pd.DataFrame, out: Path, index: Index, runs=None, name="fig01_norm_growth") -> None:
    """Frobenius norm of each edited down-projection vs edits, one panel per run (Fig. 1; Fig. 7b: ENCORE)."""
    runs = runs or sorted(set(zip(norms["method"], norms["variant"])))
    present, missing = _present(norms, runs)
    if not present:
        index.missing.append((name, f"needs the runs {', '.join(missing)}"))
        return
    figure, axes = _panels(len(present))
    for axis, (method, variant) in zip(axes, present):
        subset = norms[(norms["method"] == method) & (norms["variant"] == variant)]
        for layer, rows in subset.groupby("layer"):
            rows = rows.groupby("edits", as_index=False)["frobenius_norm"].mean()  # mean over orderings
            axis.plot(rows["edits"], rows["frobenius_norm"], marker="o", markersize=2, label=f"layer {layer}")
        axis.set(title=label(method, variant), xlabel="number of edits", ylabel=r"$\|W_\ell\|_F$ (edited layer)")
        axis.legend(fontsize=7)
    caption = (
        "Frobenius norm of each edited MLP down-projection after every batch of edits (one line per edited layer)."
    )
    _record(index, name, _save(figure, out / name), caption, missing)


def _analysis(metrics: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Rows of the per-layer analysis metrics ``<prefix>L<ll>[.<component>]`` with layer (and component) columns."""
    rows = metrics[metrics["metric"].str.startswith(prefix)].copy()
    parts = rows["metric"].str.split(".")
    rows["layer"] = parts.str[1].str[1:].astype(int)
    rows["component"] = parts.str[2]
    return rows


def _snapshots_to_show(edits: pd.Series) -> list[int]:
    """The middle and the last snapshot (the paper shows 5k and 10k of 10k)."""
    values = sorted(set(int(e) for e in edits))
    return sorted({values[(len(values) - 1) // 2], values[-1]})


def layer_norms(metrics: pd.DataFrame, edited_layers: dict, out: Path, index: Index) -> None:
    """Norm of every layer's down-projection: unedited vs the middle and the last snapshot (Figs. 4, 7a, 15-20)."""
    norms = _analysis(metrics, "down_proj_norm.")
    for name, runs in LAYER_NORM_FIGURES:
        present, missing = _present(norms[norms["method"] != "unedited"], runs)
        base = norms[norms["method"] == "unedited"]
        if not present or base.empty:
            why = (
                "analysis rows (evaluation.analysis: final or all)" if norms.empty else f"the runs {', '.join(missing)}"
            )
            index.missing.append((name, f"needs {why} and the unedited model's analysis"))
            continue
        base_mean = base.groupby("layer", as_index=False)["value"].mean()  # over orderings, once per figure
        figure, axes = _panels(len(present))
        for axis, (method, variant) in zip(axes, present):
            axis.plot(base_mean["layer"], base_mean["value"], color="black", marker=".", label="unedited")
            run = norms[(norms["method"] == method) & (norms["variant"] == variant)]
            for edits in _snapshots_to_show(run["edits"]):
                at = run[run["edits"] == edits].groupby("layer", as_index=False)["value"].mean()
                axis.plot(at["layer"], at["value"], marker=".", label=f"{edits} edits")
            for layer in edited_layers.get((method, variant), []):
                axis.axvspan(layer - 0.4, layer + 0.4, color="red", alpha=0.12)
            axis.set(title=label(method, variant), xlabel="layer", ylabel=r"$\|W_{down}\|_F$")
            axis.legend(fontsize=7)
        caption = (
            "Frobenius norm of the MLP down-projection of every layer: unedited model vs the middle and the last "
            "snapshot; edited layers shaded red."
        )
        _record(index, name, _save(figure, out / name), caption, missing)


def activation_shares(metrics: pd.DataFrame, edited_layers: dict, out: Path, index: Index) -> None:
    """Stacked per-layer shares of residual input, attention and MLP output (Figs. 5, 8-13)."""
    shares = _analysis(metrics, "activation_share.")
    for name, runs in SHARE_FIGURES:
        present, missing = _present(shares[shares["method"] != "unedited"], runs)
        base = shares[shares["method"] == "unedited"]
        if not present or base.empty:
            index.missing.append(
                (name, "needs analysis rows of the unedited model and of " + ", ".join(f"{m}/{v}" for m, v in runs))
            )
            continue
        panels = [("unedited", "unedited", None)] + [
            (m, v, max(shares[(shares["method"] == m) & (shares["variant"] == v)]["edits"])) for m, v in present
        ]
        figure, axes = _panels(len(panels))
        for axis, (method, variant, edits) in zip(axes, panels):
            rows = shares[(shares["method"] == method) & (shares["variant"] == variant)]
            if edits is not None:
                rows = rows[rows["edits"] == edits]
            table = rows.pivot_table(index="layer", columns="component", values="value")[list(COMPONENTS)]
            bottom = 0
            for component, color in zip(COMPONENTS, ("#bbbbbb", "#4c72b0", "#dd8452")):
                axis.bar(table.index, table[component], bottom=bottom, color=color, label=component, width=0.85)
                bottom = bottom + table[component]
            axis.set(
                title="unedited" if edits is None else f"{label(method, variant)}, {edits} edits",
                xlabel="layer",
                ylabel="share of activation norm",
                ylim=(0, 1),
            )
            axis.set_xticks(list(table.index))
            axis.set_xticklabels([str(layer) for layer in table.index], fontsize=6)
            edited = set(edited_layers.get((method, variant), []))
            for tick, layer in zip(axis.get_xticklabels(), table.index):
                if layer in edited:
                    tick.set_color("red")
                    tick.set_fontweight("bold")
            if axis is axes[0]:
                axis.legend(fontsize=7, loc="lower left", framealpha=0.9)
        _record(index, name, _save(figure, out / name), "Activation norm proportion: " + SHARE_CAPTION, missing)


def _downstream(metrics: pd.DataFrame) -> pd.DataFrame:
    rows = metrics[
        metrics["protocol"].str.startswith(DOWNSTREAM_PROTOCOL) & metrics["metric"].str.endswith(".f1")
    ].copy()
    rows["task"] = rows["metric"].str.split(".").str[0]
    rows.loc[rows["task"] != "average", "value"] *= 100.0  # per-task F1 in percent, like the average
    return rows


def _with_unedited(rows: pd.DataFrame, method: str, variant: str) -> pd.DataFrame:
    """The run's rows with the unedited model as the point at 0 edits, averaged over orderings."""
    base = rows[rows["method"] == "unedited"].assign(method=method, variant=variant)
    run = pd.concat([base, rows[(rows["method"] == method) & (rows["variant"] == variant)]])
    return run.groupby(["task", "edits"], as_index=False)["value"].mean().sort_values("edits")


def downstream_average(metrics: pd.DataFrame, out: Path, index: Index) -> None:
    """Average downstream F1 (6 tasks) vs edits: each editor with and without MPES (Fig. 3); MEMIT,
    MEMIT+MPES, MEMIT+NC and ENCORE (Fig. 6). The unedited model is the point at 0 edits."""
    rows = _downstream(metrics)
    rows = rows[rows["task"] == "average"]
    edited = rows[rows["method"] != "unedited"]
    for name, groups, caption in [
        (
            "fig03_downstream_mpes",
            [[(m, "plain"), (m, "mpes")] for m in ("memit", "alphaedit", "emmet")],
            "Average downstream F1 (SST2, MRPC, CoLA, RTE, NLI, MMLU; generation protocol) vs edits, with and without MPES.",
        ),
        (
            "fig06_downstream_encore",
            [ENCORE_FAMILY],
            "Average downstream F1 vs edits: MEMIT, MEMIT+MPES, MEMIT+NC, ENCORE.",
        ),
    ]:
        wanted = [run for group in groups for run in group]
        present, missing = _present(edited, wanted)
        panels = [[run for run in group if run in present] for group in groups]
        panels = [group for group in panels if group]
        if not panels:
            index.missing.append(
                (name, "needs downstream results (evaluation.downstream: all) of " + ", ".join(missing))
            )
            continue
        figure, axes = _panels(len(panels))
        for axis, group in zip(axes, panels):
            for method, variant in group:
                line = _with_unedited(rows, method, variant)
                axis.plot(line["edits"], line["value"], marker="o", markersize=3, label=label(method, variant))
            axis.set(
                title=", ".join(label(*run) for run in group), xlabel="number of edits", ylabel="average F1 (x100)"
            )
            axis.legend(fontsize=7)
        _record(index, name, _save(figure, out / name), caption, missing)


def downstream_per_task(metrics: pd.DataFrame, out: Path, index: Index, dataset: str) -> None:
    """Per-task F1 vs edits, one panel per run (Figs. 14, 21-28 for this experiment's model and data set)."""
    rows = _downstream(metrics)
    rows = rows[rows["task"] != "average"]
    edited = rows[rows["method"] != "unedited"]
    for name, runs, title in PER_TASK_FIGURES:
        present, missing = _present(edited, runs)
        if not present:
            index.missing.append(
                (name, "needs downstream results (evaluation.downstream: all) of " + ", ".join(missing))
            )
            continue
        figure, axes = _panels(len(present))
        for axis, (method, variant) in zip(axes, present):
            run = _with_unedited(rows, method, variant)
            for task in TASK_ORDER:
                line = run[run["task"] == task]
                if len(line):
                    axis.plot(line["edits"], line["value"], marker="o", markersize=3, label=task.upper())
            axis.set(title=label(method, variant), xlabel="number of edits", ylabel="F1 (x100)", ylim=(0, 100))
            axis.legend(fontsize=7)
        caption = f"Per-task downstream F1 vs edits ({title}; {dataset}; generation protocol)."
        _record(index, name, _save(figure, out / name), caption, missing)


def schematic(out: Path, index: Index) -> None:
    """Fig. 2: locate-then-edit in two steps, drawn as boxes and arrows."""
    figure, axis = plt.subplots(figsize=(9, 2.6))
    axis.set_axis_off()
    boxes = [
        (0.02, "edit request\n(subject, relation,\nnew object)"),
        (0.27, "step 1: gradient descent\non the target activation\nz = h + δ (NLL + KL, clamp;\nMPES stops it early)"),
        (0.56, "step 2: least-squares update\nΔ = R Kᵀ (λ_p C₀ + S_P + K Kᵀ\n + λ_n I)⁻¹ of the MLP\ndown-projection"),
        (0.83, "edited model\nW ← W + Δ\n(norm constraint\nbounds ‖Δ‖_F)"),
    ]
    for x, text in boxes:
        axis.text(
            x + 0.07,
            0.5,
            text,
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.5", "facecolor": "#eef2f8", "edgecolor": "#4c72b0"},
        )
    for start, end in ((0.17, 0.24), (0.445, 0.515), (0.73, 0.82)):
        axis.annotate("", xy=(end, 0.5), xytext=(start, 0.5), arrowprops={"arrowstyle": "->", "lw": 1.5})
    files = _save(figure, out / "fig02_schematic")
    index.made.append(
        (
            ", ".join(files),
            "Locate-then-edit as two steps: target activations by gradient descent, then a "
            "least-squares update of the second MLP matrix (schematic, no data).",
        )
    )


def all_figures(results: Path, out: Path, index: Index) -> None:
    """Every figure the collected results of ``results`` allow."""
    metrics = pd.read_csv(results / "metrics.csv")
    norms = pd.read_csv(results / "norms.csv")
    runs = pd.read_csv(results / "runs.csv")
    edited_layers = {(r.method, r.variant): [int(x) for x in str(r.layers).split()] for r in runs.itertuples()}
    dataset = str(metrics["dataset"].iloc[0])
    norm_growth(norms, out, index, runs=[("memit", "plain"), ("alphaedit", "plain")])
    norm_growth(norms, out, index, runs=[("memit", "mpes_nc")], name="fig07b_norm_growth_encore")
    norm_growth(norms, out, index, name="norm_growth_all_runs")
    schematic(out, index)
    layer_norms(metrics, edited_layers, out, index)
    activation_shares(metrics, edited_layers, out, index)
    downstream_average(metrics, out, index)
    downstream_per_task(metrics, out, index, dataset)
