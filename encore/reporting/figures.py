"""The paper's figures from the collected results of one experiment (one model, one data set), as PNG and
PDF, with no model loaded. With several edit orderings, every line is the mean over orderings.

Figure numbers follow the paper; where the paper repeats a layout per model (8-10, 15-20, 21-28), the
experiment's model gives one instance of it. The rules every figure follows (one y-axis per comparison,
titles naming model, data set, edit count and paper figure, captions naming only runs drawn, per-editor
figures only with their runs) are in ``encore.reporting.figure_kit``. Norms are drawn as growth relative
to the unedited value, so the axis starts at 0 growth and runs compare at a glance.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from encore.evaluation.analysis import COMPONENTS
from encore.reporting.data_files import data_path
from encore.reporting.downstream_figures import downstream_average, downstream_per_task
from encore.reporting.figure_kit import (
    FigureContext,
    Spec,
    identical_runs,
    panels,
    record,
    runs_to_draw,
    twin_note,
    twins_caption,
    ylim,
)
from encore.reporting.outputs import (
    ALPHAEDIT,
    EMMET,
    ENCORE,
    LABELS,
    MEMIT,
    MEMIT_NC,
    PRUNE,
    RECT,
    REGULARISER_RUNS,
    REGULARISERS,
    UNEDITED,
    Index,
    label,
)

GROWTH_LABEL = r"$\|W_\ell\|_F\,/\,\|W_\ell^{unedited}\|_F - 1$  (%)"
NORM_GROWTH_FIGURES = [
    Spec("fig01_norm_growth", "paper Fig. 1", "edited-layer norm growth vs edits", (MEMIT, ALPHAEDIT)),
    Spec("fig07b_norm_growth_encore", "paper Fig. 7b", "edited-layer norm growth vs edits", (ENCORE,)),
]
LAYER_NORM_FIGURES = [
    Spec("fig04_layer_norms", "paper Fig. 4", "norm change of every layer", (ALPHAEDIT, MEMIT)),
    Spec("fig07a_layer_norms_encore", "paper Fig. 7a", "norm change of every layer", (ENCORE,)),
    Spec("fig15-19_layer_norms_editors", "paper Figs. 15, 17, 19 (one model)", "norm change of every layer",
         (ALPHAEDIT, EMMET, MEMIT), needs=(EMMET,), repeats="fig04_layer_norms"),
    Spec("fig16-20_layer_norms_norm_constraint", "paper Figs. 16, 18, 20 (one model)",
         "norm change of every layer", (MEMIT, MEMIT_NC, ENCORE), needs=(MEMIT_NC,),
         repeats="fig04_layer_norms and fig07a_layer_norms_encore"),
    Spec("fig04_layer_norms_regularisers", f"paper Fig. 4 layout {REGULARISERS}", "norm change of every layer",
         tuple(REGULARISER_RUNS), needs=(RECT, PRUNE), repeats="fig04_layer_norms and fig07a_layer_norms_encore"),
]  # fmt: skip
SHARE_FIGURES = [
    Spec("fig05_activation_share", "paper Fig. 5", "activation norm proportion per layer", (ALPHAEDIT, MEMIT, ENCORE)),
    Spec("fig08-10_activation_share_editors", "paper Figs. 8-10 (one model)",
         "activation norm proportion per layer", (ALPHAEDIT, EMMET, MEMIT), needs=(EMMET,),
         repeats="fig05_activation_share"),
    Spec("fig11-13_activation_share_norm_constraint", "paper Figs. 11-13 (one model)",
         "activation norm proportion per layer", (MEMIT, MEMIT_NC, ENCORE), needs=(MEMIT_NC,),
         repeats="fig05_activation_share"),
    Spec("fig05_activation_share_regularisers", f"paper Fig. 5 layout {REGULARISERS}",
         "activation norm proportion per layer", tuple(REGULARISER_RUNS), needs=(RECT, PRUNE),
         repeats="fig05_activation_share"),
]  # fmt: skip
ANALYSIS_NEEDS = "analysis rows (evaluation.analysis: final or all) of the unedited model and"
SHARE_CAPTION = (
    "Share of each sub-layer in the residual stream per layer: ||x|| / (||h|| + ||a|| + ||m||) for the block "
    "input h, attention contribution a and MLP contribution m, averaged over tokens and the rewrite prompts "
    "of the evaluated facts (definition of algorithms.md §9; the paper gives no code); edited layers in red."
)
HEADLINE = [  # embedded in results.md, in this order, where drawn
    "norm_growth_all_runs",
    "fig04_layer_norms",
    "fig07a_layer_norms_encore",
    "fig16-20_layer_norms_norm_constraint",
    "fig15-19_layer_norms_editors",
    "fig04_layer_norms_regularisers",
    "fig05_activation_share",
    "fig05_activation_share_regularisers",
    "fig06_downstream_encore",
    "fig06_downstream_regularisers",
    "fig03_downstream_mpes",
]


def norm_growth_table(norms: pd.DataFrame) -> pd.DataFrame:
    """norms.csv (mean over orderings) with ``growth`` = 100 (||W_l|| / ||W_l||_{0 edits} - 1) per run and layer."""
    keys = ["method", "variant", "layer"]
    mean = norms.groupby([*keys, "edits"], as_index=False)["frobenius_norm"].mean()
    base = mean[mean["edits"] == 0].set_index(keys)["frobenius_norm"]
    lacking = sorted(set(map(tuple, mean[keys].values)) - set(base.index))
    if lacking:
        method, variant, layer = lacking[0]
        raise ValueError(
            f"norms.csv: {method}/{variant} layer {layer} has no row at edits 0 (the norm before editing); "
            "collect every snapshot of the run (snakemake collect_results)"
        )
    reference = base.reindex(pd.MultiIndex.from_frame(mean[keys])).to_numpy()
    return mean.assign(unedited=reference, growth=100.0 * (mean["frobenius_norm"] / reference - 1.0))


def norm_growth(
    growth: pd.DataFrame, context: FigureContext, spec: Spec, out: Path, index: Index, limits, summary=False
):
    """Growth of each edited layer's norm vs edits, one panel per run (Figs. 1, 7b); with ``summary`` a first
    panel puts every run's mean over its edited layers on one axis. Every panel uses the study's ``limits``."""
    present = runs_to_draw(spec, set(zip(growth["method"], growth["variant"])), index, "the norms (norms.csv)")
    if not present:
        return {}
    figure, axes = panels(len(present) + summary)
    run_rows = {run: growth[(growth["method"] == run[0]) & (growth["variant"] == run[1])] for run in present}
    twins = identical_runs({run: rows.pivot_table(index="edits", columns="layer", values="growth")
                            for run, rows in run_rows.items()})  # fmt: skip
    if summary:
        for run, rows in run_rows.items():
            mean = rows.groupby("edits")["growth"].mean()
            style = {"ls": "--", "lw": 2.5} if run in twins else {"lw": 2}
            axes[0].plot(mean.index, mean.values, **style, label=f"{label(*run)}: {mean.iloc[-1]:+.1f}%"
                         + (f" (= {label(*twins[run])}, dashed)" if run in twins else ""))  # fmt: skip
        axes[0].set_title("every run: mean over its edited layers", fontsize=10)
        axes[0].legend(fontsize=8, title=f"at {int(growth['edits'].max()):,} edits", title_fontsize=8)
    for axis, (run, rows) in zip(axes[summary:], run_rows.items()):
        for layer, line in rows.groupby("layer"):
            axis.plot(line["edits"], line["growth"], marker="o", markersize=2, label=f"layer {layer}")
        axis.set_title(f"{label(*run)}: each edited layer{twin_note(run, twins)}", fontsize=9 if run in twins else 10)
        axis.legend(fontsize=7)
    for axis in axes:
        axis.axhline(0.0, color="black", lw=0.6)
        axis.set(xlabel="number of edits", ylim=limits)
    axes[0].set_ylabel(GROWTH_LABEL)
    figure.suptitle(context.heading(spec, [rows["edits"].max() for rows in run_rows.values()], present))
    caption = (
        "Growth of the Frobenius norm of each edited MLP down-projection after every batch of edits, relative "
        "to its unedited value: 100 (||W_l|| / ||W_l^unedited|| - 1) %, one line per edited layer"
        + ("; first panel: each run's mean over its edited layers" if summary else "")
        + "; every norm-growth figure of the study on one y-axis."
        + (twins_caption(twins) if summary else twins_caption(twins, dashed=False))
    )
    return record(index, figure, out, spec, caption, present)


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


def layer_norms(metrics: pd.DataFrame, context: FigureContext, out: Path, index: Index) -> dict:
    """Norm change of every layer's down-projection relative to the unedited model at the middle and the last
    snapshot (Figs. 4, 7a, 15-20): 100 (||W_l|| / ||W_l^unedited|| - 1), all figures on one y-axis."""
    norms = _analysis(metrics, "down_proj_norm.")
    base = norms[norms["method"] == "unedited"].groupby("layer")["value"].mean()  # over orderings
    edited = norms[norms["method"] != "unedited"].groupby(["method", "variant", "edits", "layer"], as_index=False)
    edited = edited["value"].mean()
    edited["growth"] = 100.0 * (edited["value"] / base.reindex(edited["layer"]).to_numpy() - 1.0)
    runs = {run: edited[(edited["method"] == run[0]) & (edited["variant"] == run[1])] for run in
            set(zip(edited["method"], edited["variant"]))}  # fmt: skip
    shown = {run: rows[rows["edits"].isin(_snapshots_to_show(rows["edits"]))] for run, rows in runs.items()}
    limits = ylim(pd.concat(shown.values())["growth"].dropna()) if shown else None
    drawn = {}
    for spec in LAYER_NORM_FIGURES:
        present = runs_to_draw(spec, set(runs) if len(base) else set(), index, ANALYSIS_NEEDS)
        if not present:
            continue
        twins = identical_runs({run: shown[run].set_index(["edits", "layer"])["growth"] for run in present})
        figure, axes = panels(len(present))
        for axis, run in zip(axes, present):
            axis.axhline(0.0, color="black", lw=1.2, label="unedited model")
            for edits, rows in shown[run].groupby("edits"):
                axis.plot(rows["layer"], rows["growth"], marker=".", label=f"{int(edits):,} edits")
            for layer in context.edited_layers.get(run, []):
                axis.axvspan(layer - 0.4, layer + 0.4, color="red", alpha=0.12)
            axis.set(title=label(*run) + twin_note(run, twins), xlabel="layer", ylim=limits)
            axis.legend(fontsize=7)
        axes[0].set_ylabel(r"$\|W_{down,\ell}\|_F\,/\,\|W_{down,\ell}^{unedited}\|_F - 1$  (%)")
        figure.suptitle(context.heading(spec, [runs[run]["edits"].max() for run in present], present))
        caption = (
            "Change of the Frobenius norm of every layer's MLP down-projection relative to the unedited model, "
            "100 (||W_l|| / ||W_l^unedited|| - 1) %, at the middle and the last snapshot (0: unchanged; the "
            f"unedited norms lie between {base.min():.1f} and {base.max():.1f}); edited layers shaded red; every "
            "layer-norm figure of the study on one y-axis." + twins_caption(twins, dashed=False)
        )
        drawn |= record(index, figure, out, spec, caption, present)
    return drawn


def activation_shares(metrics: pd.DataFrame, context: FigureContext, out: Path, index: Index) -> dict:
    """Stacked per-layer shares of residual input, attention and MLP output (Figs. 5, 8-13); the legend
    sits above the panels, so no bar is covered."""
    shares = _analysis(metrics, "activation_share.")
    base = shares[shares["method"] == "unedited"]
    have = set(zip(shares["method"], shares["variant"])) - {UNEDITED} if len(base) else set()
    drawn = {}
    for spec in SHARE_FIGURES:
        present = runs_to_draw(spec, have, index, ANALYSIS_NEEDS)
        if not present:
            continue
        last = {run: int(shares[(shares["method"] == run[0]) & (shares["variant"] == run[1])]["edits"].max())
                for run in present}  # fmt: skip
        tables = {}
        for run in present:
            rows = shares[(shares["method"] == run[0]) & (shares["variant"] == run[1]) & (shares["edits"] == last[run])]
            tables[run] = rows.pivot_table(index="layer", columns="component", values="value")
        twins = identical_runs(tables)
        figure, axes = panels(1 + len(present), height=3.1)
        for axis, run in zip(axes, [UNEDITED, *present]):
            rows = shares[(shares["method"] == run[0]) & (shares["variant"] == run[1])]
            if run in last:
                rows = rows[rows["edits"] == last[run]]
            table = rows.pivot_table(index="layer", columns="component", values="value")[list(COMPONENTS)]
            bottom = 0
            for component, color in zip(COMPONENTS, ("#bbbbbb", "#4c72b0", "#dd8452")):
                axis.bar(table.index, table[component], bottom=bottom, color=color, label=component, width=0.85)
                bottom = bottom + table[component]
            title = f"{label(*run)}, {last[run]:,} edits{twin_note(run, twins)}" if run in last else "unedited model"
            axis.set(title=title, xlabel="layer", ylim=(0, 1))
            axis.set_xticks(list(table.index))
            axis.set_xticklabels([str(layer) for layer in table.index], fontsize=5)
            edited = set(context.edited_layers.get(run, []))
            for tick, layer in zip(axis.get_xticklabels(), table.index):
                if layer in edited:
                    tick.set_color("red")
                    tick.set_fontweight("bold")
        axes[0].set_ylabel("share of activation norm")
        handles, names = axes[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
        figure.suptitle(context.heading(spec, last.values(), present))
        drawn |= record(index, figure, out, spec, SHARE_CAPTION + twins_caption(twins, dashed=False), present)
    return drawn


def schematic(out: Path, index: Index) -> dict:
    """Fig. 2: locate-then-edit in two steps, drawn as boxes and arrows (no data, so no model or edit count)."""
    figure, axis = plt.subplots(figsize=(9, 2.0))
    axis.set_axis_off()
    boxes = [
        (0.02, "edit request\n(subject, relation,\nnew object)"),
        (0.27, "step 1: gradient descent\non the target activation\nz = h + δ (NLL + KL, clamp;\nMPES stops it early)"),
        (0.56, "step 2: least-squares update\nΔ = R Kᵀ (λ_p C₀ + S_P + K Kᵀ\n + λ_n I)⁻¹ of the MLP\ndown-projection"),
        (0.83, "edited model\nW ← W + Δ\n(norm constraint\nbounds ‖Δ‖_F)"),
    ]
    for x, text in boxes:
        axis.text(x + 0.07, 0.5, text, ha="center", va="center", fontsize=8.5,
                  bbox={"boxstyle": "round,pad=0.5", "facecolor": "#eef2f8", "edgecolor": "#4c72b0"})  # fmt: skip
    for start, end in ((0.17, 0.24), (0.445, 0.515), (0.745, 0.82)):
        axis.annotate("", xy=(end, 0.5), xytext=(start, 0.5), arrowprops={"arrowstyle": "->", "lw": 1.5})
    spec = Spec("fig02_schematic", "paper Fig. 2", "locate-then-edit in two steps (schematic, no data)", ())
    figure.suptitle(f"{spec.paper}: {spec.what}")
    figure.tight_layout()
    caption = (
        "Locate-then-edit as two steps: target activations by gradient descent, then a least-squares update of "
        "the second MLP matrix."
    )
    return record(index, figure, out, spec, caption, [])


def figure_context(results: Path) -> FigureContext:
    """Model (runs.csv, else metrics.csv), data set (metrics.csv) and each run's edited layers (runs.csv)."""
    metrics = pd.read_csv(data_path(results, "metrics.csv"), usecols=["model", "dataset"])
    runs = pd.read_csv(data_path(results, "runs.csv"))
    model = runs["model"].iloc[0] if "model" in runs and len(runs) else metrics["model"].iloc[0]
    layers = {(r.method, r.variant): [int(x) for x in str(r.layers).split()] for r in runs.itertuples()}
    return FigureContext(model=str(model), dataset=str(metrics["dataset"].iloc[0]), edited_layers=layers)


def all_figures(results: Path, out: Path, index: Index) -> dict:
    """Every figure the collected results of ``results`` allow; returns {name: matplotlib Figure}."""
    results, out = Path(results), Path(out)
    metrics = pd.read_csv(data_path(results, "metrics.csv"))
    context = figure_context(results)
    growth = norm_growth_table(pd.read_csv(data_path(results, "norms.csv")))
    limits = ylim(growth["growth"])  # one y-range for every norm-growth figure of the study
    drawn = {}
    for spec in NORM_GROWTH_FIGURES:
        drawn |= norm_growth(growth, context, spec, out, index, limits)
    have = set(zip(growth["method"], growth["variant"]))
    every = tuple([run for run in LABELS if run in have] + sorted(have - set(LABELS)))  # MEMIT first
    if len(every) > 1:
        spec = Spec(
            "norm_growth_all_runs", "paper Figs. 1 and 7b", "edited-layer norm growth vs edits, every run", every
        )
        drawn |= norm_growth(growth, context, spec, out, index, limits, summary=True)
    else:
        index.missing.append(("norm_growth_all_runs", "needs two runs or more to compare"))
    drawn |= schematic(out, index)
    drawn |= layer_norms(metrics, context, out, index)
    drawn |= activation_shares(metrics, context, out, index)
    drawn |= downstream_average(metrics, context, out, index)
    drawn |= downstream_per_task(metrics, context, out, index)
    return drawn
