"""What the table and figure modules share: the runs' names, the paper's groups of runs, and the Index of
outputs written and missing. Both ``paper_tables`` and ``figures`` import it, so neither imports the other at
module level (``paper_tables.build_paper_outputs`` draws the figures; ``figures`` needs nothing of ``paper_tables``)."""

from __future__ import annotations

from pathlib import Path

# the runs by name, (method, variant): the one place the reporting modules take them from
MEMIT, MEMIT_MPES, MEMIT_NC, ENCORE = ("memit", "plain"), ("memit", "mpes"), ("memit", "nc"), ("memit", "mpes_nc")
EMMET, EMMET_MPES, EMMET_NC = ("emmet", "plain"), ("emmet", "mpes"), ("emmet", "nc")
ALPHAEDIT, ALPHAEDIT_MPES = ("alphaedit", "plain"), ("alphaedit", "mpes")
RECT, PRUNE = ("memit_rect", "plain"), ("memit_prune", "plain")
UNEDITED = ("unedited", "unedited")

LABELS = {MEMIT: "MEMIT", MEMIT_MPES: "MEMIT+MPES", MEMIT_NC: "MEMIT+NC", ENCORE: "ENCORE", EMMET: "EMMET",
          EMMET_MPES: "EMMET+MPES", EMMET_NC: "EMMET+NC", ("emmet", "mpes_nc"): "EMMET+MPES+NC",
          ALPHAEDIT: "AlphaEdit", ALPHAEDIT_MPES: "AlphaEdit+MPES", ("alphaedit", "nc"): "AlphaEdit+NC",
          ("alphaedit", "mpes_nc"): "AlphaEdit+MPES+NC", RECT: "MEMIT+RECT", ("memit_rect", "mpes"): "MEMIT+RECT+MPES",
          PRUNE: "MEMIT+PRUNE", ("memit_prune", "mpes"): "MEMIT+PRUNE+MPES"}  # fmt: skip
BASE = [MEMIT, MEMIT_MPES, ALPHAEDIT, ALPHAEDIT_MPES, EMMET, EMMET_MPES]
ENCORE_FAMILY = [MEMIT, MEMIT_MPES, MEMIT_NC, ENCORE]
ALL_EIGHT = [EMMET, EMMET_MPES, ALPHAEDIT, ALPHAEDIT_MPES, *ENCORE_FAMILY]
REGULARISER_RUNS = [MEMIT, ENCORE, RECT, PRUNE]  # the lifelong-editing regularisers beside MEMIT and ENCORE
REGULARISERS = "(RECT, PRUNE: not in the paper)"  # in the titles of their tables' and figures' layouts


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
