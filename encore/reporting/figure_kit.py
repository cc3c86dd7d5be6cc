"""What every paper figure shares: which runs it draws (and when it is not drawn at all), its title, its panels
on one y-axis, its caption in the index, and saving it as PNG and PDF.

Rules (issue 18, "Figures that hide or duplicate"):
- runs compared in one figure share one y-axis (``panels`` makes them with ``sharey=True``);
- every title names the paper figure, the model, the data set and the edit count (``FigureContext.heading``);
- a caption names only the runs drawn; the runs a figure lacks are listed under "Not written" in the index;
- a per-editor figure whose distinguishing runs (``Spec.needs``) were not made is not drawn, since it would
  repeat another figure under a caption promising other runs;
- a run whose data equal another run's (MEMIT+PRUNE before PRUNE acts is MEMIT) would hide that run's line: it
  is drawn dashed over it, and its legend, panel title and caption say so (``identical_runs``).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from encore.reporting.outputs import Index, label  # noqa: E402

DATASET_NAMES = {"counterfact": "CounterFact", "zsre": "zsRE"}


@dataclass(frozen=True)
class Spec:
    """One paper figure: file stem, the paper figure it stands for, what it plots, the runs it draws, and
    ``needs``: runs of which one must exist, else it would repeat ``repeats`` (a figure drawn from the rest)."""

    name: str
    paper: str
    what: str
    runs: tuple
    needs: tuple = ()
    repeats: str = ""


@dataclass(frozen=True)
class FigureContext:
    """What every title names: the model and the data set of the experiment; each run's edited layers."""

    model: str
    dataset: str
    edited_layers: dict

    def heading(self, spec: Spec, edits, runs=()) -> str:
        """'<paper figure>: <what> (<runs drawn>)' over '<model>, <data set>, <edit count> edits' (a range when
        the runs' last snapshots differ)."""
        counts = sorted({int(e) for e in edits})
        count = f"{counts[-1]:,}" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,}"
        data = DATASET_NAMES.get(self.dataset, self.dataset)
        shown = f" ({names(runs)})" if runs else ""
        return f"{spec.paper}: {spec.what}{shown}\n{self.model}, {data}, {count} edits"


def run_name(run) -> str:
    return f"{run[0]}/{run[1]}"


def names(runs) -> str:
    return ", ".join(label(*run) for run in runs)


def runs_to_draw(spec: Spec, have, index: Index, needs_text: str) -> list:
    """The runs of ``spec`` that exist (in the spec's order); [] with the reason in ``index.missing`` when the
    figure is not drawn. Runs left out of a drawn figure are listed there too, never in its caption."""
    have = set(have)
    present = [run for run in spec.runs if run in have]
    absent = [run_name(run) for run in spec.runs if run not in have]
    if not present:
        index.missing.append((spec.name, f"needs {needs_text} of {', '.join(absent)}"))
        return []
    if spec.needs and not any(run in have for run in spec.needs):
        wanted = " or ".join(run_name(run) for run in spec.needs)
        index.missing.append((spec.name, f"needs {needs_text} of the run {wanted} (without it, it would repeat "
                              f"{spec.repeats})"))  # fmt: skip
        return []
    if absent:
        index.missing.append((f"{spec.name} (runs left out)", f"runs not made: {', '.join(absent)}"))
    return present


def identical_runs(data: dict) -> dict:
    """{run: the first earlier run with the same data} for every run of ``data`` ({run: DataFrame or Series}, in
    drawing order) whose values equal an earlier run's at every index (within 1e-9)."""
    twins, runs = {}, list(data)
    for position, run in enumerate(runs):
        for earlier in runs[:position]:
            a, b = data[earlier], data[run]
            if earlier not in twins and a.shape == b.shape and a.index.equals(b.index):
                left, right = (np.asarray(frame, dtype=float) for frame in (a, b))
                if np.allclose(left, right, rtol=0, atol=1e-9, equal_nan=True):
                    twins[run] = earlier
                    break
    return twins


def twin_note(run, twins: dict) -> str:
    """' (identical to MEMIT)' for a run in ``twins``, else ''."""
    return f" (identical to {label(*twins[run])})" if run in twins else ""


def twins_caption(twins: dict, dashed: bool = True) -> str:
    """Caption sentence naming the runs drawn over an identical run."""
    if not twins:
        return ""
    pairs = "; ".join(f"{label(*run)} equals {label(*twin)}" for run, twin in twins.items())
    return f" Identical data: {pairs}" + (", drawn dashed over it." if dashed else ".")


def panels(count: int, width: float = 4.4, height: float = 3.4, sharey: bool = True):
    """A constrained-layout figure with ``count`` panels (at most 4 a row) on one shared y-axis."""
    columns = min(4, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(max(width * columns, 6.8), height * rows + 0.7),
        squeeze=False,
        sharey=sharey,
        layout="constrained",
    )
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat[:count])


def save(figure, stem: Path) -> list[str]:
    """PNG (150 dpi) and PDF of ``figure`` (left open for inspection, closed in pyplot's registry)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(f"{stem}.png", dpi=150)
    figure.savefig(f"{stem}.pdf", metadata={"CreationDate": None})
    plt.close(figure)
    return [f"{stem.name}.png", f"{stem.name}.pdf"]


def record(index: Index, figure, out: Path, spec: Spec, caption: str, runs) -> dict:
    """Save ``figure`` as ``out/<spec.name>``, list it in the index with a caption naming the runs drawn. A title
    wider than the figure is wrapped (about 11 characters per inch), so none is cut off."""
    title = figure._suptitle
    if title is not None:
        limit = int(figure.get_figwidth() * 11)
        lines = title.get_text().split("\n")
        title.set_text("\n".join(textwrap.fill(line, limit, break_long_words=False) for line in lines))
    shown = f" Runs: {names(runs)}." if runs else ""
    index.made.append((", ".join(save(figure, Path(out) / spec.name)), f"{spec.paper}: {caption}{shown}"))
    return {spec.name: figure}


def ylim(values, pad: float = 0.06) -> tuple[float, float]:
    """A y-range holding every value and 0 with a margin (growth starts at 0: the axis is not cut above it)."""
    values = [float(v) for v in values]
    low, high = min([0.0, *values]), max([0.0, *values])
    margin = pad * ((high - low) or 1.0)
    return low - margin, high + margin
