"""The paper's downstream figures: average F1 over the six tasks vs edits (Figs. 3, 6) and per-task F1 vs
edits (Figs. 14, 21-23 for this experiment's model and data set). The unedited model is the point at 0 edits;
with several orderings every line is their mean. Panels of one figure share one y-axis."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from encore.evaluation import protocols
from encore.reporting.figure_kit import (
    FigureContext,
    Spec,
    identical_runs,
    panels,
    record,
    runs_to_draw,
    twin_note,
    twins_caption,
)
from encore.reporting.outputs import (
    ALPHAEDIT,
    ALPHAEDIT_MPES,
    BASE,
    EMMET,
    EMMET_MPES,
    EMMET_NC,
    ENCORE_FAMILY,
    PRUNE,
    RECT,
    REGULARISER_RUNS,
    REGULARISERS,
    UNEDITED,
    Index,
    label,
)

TASK_ORDER = ["sst2", "mrpc", "nli", "rte", "cola", "mmlu"]
NEEDS = "downstream results (evaluation.downstream: all)"
MPES_RUNS = tuple(run for run in BASE if run[1] == "mpes")
AVERAGE_FIGURES = [
    Spec("fig03_downstream_mpes", "paper Fig. 3", "average downstream F1 vs edits, with and without MPES",
         tuple(BASE), needs=MPES_RUNS, repeats="the plain editors' lines of fig06_downstream_encore"),
    Spec("fig06_downstream_encore", "paper Fig. 6", "average downstream F1 vs edits",
         tuple(ENCORE_FAMILY)),
    Spec("fig06_downstream_regularisers", f"paper Fig. 6 layout {REGULARISERS}", "average downstream F1 vs edits",
         tuple(REGULARISER_RUNS), needs=(RECT, PRUNE), repeats="fig06_downstream_encore"),
]  # fmt: skip
PER_TASK_FIGURES = [
    Spec("fig14_downstream_tasks_emmet_nc", "paper Fig. 14", "per-task downstream F1 vs edits",
         (EMMET, EMMET_NC), needs=(EMMET_NC,), repeats="fig22_downstream_tasks_emmet"),
    Spec("fig21_downstream_tasks_alphaedit", "paper Fig. 21", "per-task downstream F1 vs edits",
         (ALPHAEDIT, ALPHAEDIT_MPES)),
    Spec("fig22_downstream_tasks_emmet", "paper Fig. 22", "per-task downstream F1 vs edits",
         (EMMET, EMMET_MPES)),
    Spec("fig23_downstream_tasks_memit_encore", "paper Fig. 23",
         "per-task downstream F1 vs edits", tuple(ENCORE_FAMILY)),
    Spec("fig23_downstream_tasks_regularisers", f"paper Fig. 23 layout {REGULARISERS}",
         "per-task downstream F1 vs edits", tuple(REGULARISER_RUNS), needs=(RECT, PRUNE),
         repeats="fig23_downstream_tasks_memit_encore"),
]  # fmt: skip


def downstream_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """F1 rows of the generation protocol with a ``task`` column; per-task F1 in percent, like the average."""
    rows = metrics[
        metrics["protocol"].str.startswith(protocols.DOWNSTREAM_GENERATE) & metrics["metric"].str.endswith(".f1")
    ].copy()
    rows["task"] = rows["metric"].str.split(".").str[0]
    rows.loc[rows["task"] != "average", "value"] *= 100.0
    return rows


def _with_unedited(rows: pd.DataFrame, method: str, variant: str) -> pd.DataFrame:
    """The run's rows with the unedited model as the point at 0 edits, averaged over orderings."""
    base = rows[rows["method"] == "unedited"].assign(method=method, variant=variant)
    run = pd.concat([base, rows[(rows["method"] == method) & (rows["variant"] == variant)]])
    return run.groupby(["task", "edits"], as_index=False)["value"].mean().sort_values("edits")


def _last_edits(rows: pd.DataFrame, runs) -> list[int]:
    return [int(rows[(rows["method"] == m) & (rows["variant"] == v)]["edits"].max()) for m, v in runs]


def downstream_average(metrics: pd.DataFrame, context: FigureContext, out: Path, index: Index) -> dict:
    """Fig. 3: one panel per editor, with and without MPES; Fig. 6: MEMIT, +MPES, +NC and ENCORE."""
    rows = downstream_rows(metrics)
    rows = rows[rows["task"] == "average"]
    have = set(zip(rows["method"], rows["variant"])) - {UNEDITED}
    drawn = {}
    for spec in AVERAGE_FIGURES:
        present = runs_to_draw(spec, have, index, NEEDS)
        if not present:
            continue
        groups = [[run for run in present if run[0] == method] for method in dict.fromkeys(m for m, _ in present)]
        if spec.name.startswith("fig06_"):
            groups = [present]
        lines = {run: _with_unedited(rows, *run).set_index("edits")["value"] for run in present}
        twins = identical_runs(lines)
        figure, axes = panels(len(groups))
        for axis, group in zip(axes, groups):
            for run in group:
                line = lines[run]
                style = {"ls": "--", "lw": 2.5} if run in twins else {}
                note = f" (= {label(*twins[run])}, dashed)" if run in twins else ""
                axis.plot(line.index, line.values, marker="o", markersize=3, label=label(*run) + note, **style)
            axis.set(title=", ".join(label(*run) for run in group), xlabel="number of edits")
            axis.legend(fontsize=7)
        axes[0].set_ylim(bottom=0)  # F1 from 0: a change is drawn at its size
        axes[0].set_ylabel("average F1 (x100)")
        figure.suptitle(context.heading(spec, _last_edits(rows, present), present))
        caption = (
            "Average downstream F1 (SST2, MRPC, CoLA, RTE, NLI, MMLU; generation protocol) vs edits; the unedited "
            "model at 0 edits; all panels on one y-axis." + twins_caption(twins)
        )
        drawn |= record(index, figure, out, spec, caption, present)
    return drawn


def downstream_per_task(metrics: pd.DataFrame, context: FigureContext, out: Path, index: Index) -> dict:
    """Per-task F1 vs edits, one panel per run, all on the 0-100 axis."""
    rows = downstream_rows(metrics)
    rows = rows[rows["task"] != "average"]
    have = set(zip(rows["method"], rows["variant"])) - {UNEDITED}
    drawn = {}
    for spec in PER_TASK_FIGURES:
        present = runs_to_draw(spec, have, index, NEEDS)
        if not present:
            continue
        runs = {run: _with_unedited(rows, *run).set_index(["task", "edits"])["value"] for run in present}
        twins = identical_runs(runs)
        figure, axes = panels(len(present))
        for axis, (method, variant) in zip(axes, present):
            run = _with_unedited(rows, method, variant)
            for task in TASK_ORDER:
                line = run[run["task"] == task]
                if len(line):
                    axis.plot(line["edits"], line["value"], marker="o", markersize=3, label=task.upper())
            title = label(method, variant) + twin_note((method, variant), twins)
            axis.set(title=title, xlabel="number of edits", ylim=(0, 100))
            axis.legend(fontsize=7, ncol=2)
        axes[0].set_ylabel("F1 (x100)")
        figure.suptitle(context.heading(spec, _last_edits(rows, present), present))
        caption = "Per-task downstream F1 vs edits (generation protocol); the unedited model at 0 edits." + (
            twins_caption(twins, dashed=False)
        )
        drawn |= record(index, figure, out, spec, caption, present)
    return drawn
