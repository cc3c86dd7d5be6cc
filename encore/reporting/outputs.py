"""What the table and figure modules share: the runs' names, the paper's groups of runs, and the Index of
outputs written and missing. Both ``report`` and ``figures`` import it, so neither imports the other at
module level (``report.build_paper_outputs`` draws the figures; ``figures`` needs nothing of ``report``)."""

from __future__ import annotations

from pathlib import Path

LABELS = {("memit", "plain"): "MEMIT", ("memit", "mpes"): "MEMIT+MPES", ("memit", "nc"): "MEMIT+NC",
          ("memit", "mpes_nc"): "ENCORE", ("emmet", "plain"): "EMMET", ("emmet", "mpes"): "EMMET+MPES",
          ("emmet", "nc"): "EMMET+NC", ("emmet", "mpes_nc"): "EMMET+MPES+NC", ("alphaedit", "plain"): "AlphaEdit",
          ("alphaedit", "mpes"): "AlphaEdit+MPES", ("alphaedit", "nc"): "AlphaEdit+NC",
          ("alphaedit", "mpes_nc"): "AlphaEdit+MPES+NC", ("memit_rect", "plain"): "MEMIT+RECT",
          ("memit_rect", "mpes"): "MEMIT+RECT+MPES", ("memit_prune", "plain"): "MEMIT+PRUNE",
          ("memit_prune", "mpes"): "MEMIT+PRUNE+MPES"}  # fmt: skip
BASE = [
    ("memit", "plain"),
    ("memit", "mpes"),
    ("alphaedit", "plain"),
    ("alphaedit", "mpes"),
    ("emmet", "plain"),
    ("emmet", "mpes"),
]
ENCORE_FAMILY = [("memit", "plain"), ("memit", "mpes"), ("memit", "nc"), ("memit", "mpes_nc")]
ALL_EIGHT = [("emmet", "plain"), ("emmet", "mpes"), ("alphaedit", "plain"), ("alphaedit", "mpes"), *ENCORE_FAMILY]


def label(method: str, variant: str) -> str:
    return LABELS.get((method, variant), f"{method}/{variant}")


class Index:
    """What was written and what is missing (with the runs or settings that would produce it); ``figures``:
    the matplotlib Figure of each figure drawn, by name, for inspection."""

    def __init__(self):
        self.made: list[tuple[str, str]] = []
        self.missing: list[tuple[str, str]] = []
        self.figures: dict = {}

    def write(self, path: Path, title: str) -> None:
        lines = [f"# {title}", "", "## Written", ""] + [f"- {name}: {what}" for name, what in self.made]
        lines += ["", "## Not written (missing inputs)", ""] + [f"- {name}: {why}" for name, why in self.missing]
        Path(path).write_text("\n".join(lines) + "\n")
