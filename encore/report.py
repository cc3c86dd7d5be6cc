"""Tables and figures built from cached results only (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

EDITING_METRICS = ["ES", "PS", "NS", "S"]


def read_csvs(paths) -> pd.DataFrame:
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"missing result files (run the pipeline for them first): {', '.join(missing)}")
    return pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)


MAIN_PROTOCOL = r"^(counterfact|zsre)/(edited-so-far|to-be-edited)/(nll-comparison|token-top1)$"
DOWNSTREAM_COLUMNS = {"downstream/generate": "DS_generate", "downstream/label-loglik": "DS_loglik"}


def editing_table(metric_files, csv_path: Path, markdown_path: Path, all_metrics_path: Path | None = None) -> pd.DataFrame:
    """One row per (method, variant, edits): ES, PS, NS, S (percent) on the facts edited so far
    (the unedited model: on the facts to be edited), GE x100 and the average downstream F1 x100
    where they were computed. ``all_metrics_path`` receives every tidy row of every file."""
    tidy = read_csvs(metric_files)
    if all_metrics_path is not None:
        tidy.to_csv(all_metrics_path, index=False)
    main = tidy[tidy["protocol"].str.match(MAIN_PROTOCOL) & tidy["metric"].isin(EDITING_METRICS + ["n_records"])]
    extra = tidy[tidy["metric"] == "GE"]
    for prefix, column in DOWNSTREAM_COLUMNS.items():
        rows = tidy[(tidy["metric"] == "average.f1") & tidy["protocol"].str.startswith(prefix)].copy()
        rows["metric"] = column
        extra = pd.concat([extra, rows])
    keys = ["model", "dataset", "method", "variant", "edits"]
    table = pd.concat([main, extra]).pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    columns = [c for c in ["n_records", *EDITING_METRICS, "GE", *DOWNSTREAM_COLUMNS.values()] if c in table.columns]
    table = table[keys + columns].sort_values(["method", "variant", "edits"])
    table["n_records"] = table["n_records"].astype(int)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    markdown_path.write_text(table.to_markdown(index=False, floatfmt=".2f") + "\n")
    return table


def norm_growth_figure(norm_files, png_path: Path) -> None:
    """Frobenius norm of each edited down-projection vs number of edits (paper Fig. 1)."""
    norms = read_csvs(norm_files)
    norms["run"] = norms["method"] + " / " + norms["variant"]
    panels = sorted(norms["run"].unique())
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, method in zip(axes.flat, panels):
        subset = norms[norms["run"] == method]
        for layer, rows in subset.groupby("layer"):
            rows = rows.sort_values("edits")
            axis.plot(rows["edits"], rows["frobenius_norm"], marker="o", markersize=3, label=f"layer {layer}")
        axis.set_title(method)
        axis.set_xlabel("number of edits")
        axis.set_ylabel(r"$\|W_\ell\|_F$ of edited down-projection")
        axis.legend(fontsize=8)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=150)
    plt.close(figure)
