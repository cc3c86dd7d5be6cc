"""Publish a study with the project: its collected CSVs, and the tables and figures regenerated from them.

    python -m encore.reporting.publish results/lifelong-cpu/collected docs/results/lifelong-cpu   # copy + build
    python -m encore.reporting.publish --regenerate docs/results/lifelong-cpu                     # rebuild from the CSVs

``<out>/data/`` holds the collected CSVs (metrics, norms, ledger, runs, and records where collected: text only,
no tensors); the tables (Markdown and CSV) and figures (PNG) under ``<out>/tables`` and ``<out>/figures`` are made
from them alone, with the same code as the pipeline's ``paper_outputs`` rule, so no model is needed to redraw them.
``<out>/results.md`` puts each paper claim beside the study's numbers (``encore.reporting.claims``), followed by the
hand-written ``<out>/notes.md``.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from encore.reporting.claims.results import write_results
from encore.reporting.collect import COLLECTED, OPTIONAL_COLLECTED, verify_collected
from encore.reporting.data_files import data_path, write_data_file
from encore.reporting.figures import HEADLINE
from encore.reporting.outputs import Index
from encore.reporting.paper_tables import build_paper_outputs
from encore.reporting.summary import editing_table


def regenerate(out: Path, title: str | None = None) -> list[Path]:
    """Tables and figures of ``out/data``; returns the files written (PDF and LaTeX copies are not kept)."""
    out = Path(out)
    data, tables, figures = out / "data", out / "tables", out / "figures"
    for directory in (tables, figures):
        shutil.rmtree(directory, ignore_errors=True)
    made = build_paper_outputs(
        data, tables, figures, out / "index.md", title=title or f"Tables and figures: {out.name}"
    )
    editing_table([data_path(data, "metrics.csv")], tables / "editing_metrics.csv", tables / "editing_metrics.md",
                  ledger_files=[data_path(data, "ledger.csv")])  # fmt: skip
    for extra in [*figures.glob("*.pdf"), *tables.glob("*.tex")]:
        extra.unlink()
    index = out / "index.md"
    index.write_text(re.sub(r", [\w.-]+\.(pdf|tex)\b", "", index.read_text()))
    write_results(data, out / "results.md", f"Results: {out.name}", notes=out / "notes.md")
    embed_figures(out / "results.md", made, notes=out / "notes.md")
    return sorted(p for p in out.rglob("*") if p.is_file() and data not in p.parents and p.name != "notes.md")


def embed_figures(results_md: Path, index: Index, notes: Path | None = None) -> None:
    """Put a "Figures" section in results.md before the hand-written notes (or at the end): the headline
    figures drawn (``figures.HEADLINE`` order) as image links relative to results.md, with their captions."""
    captions = {files.split(", ")[0]: caption for files, caption in index.made}
    drawn = [name for name in HEADLINE if f"{name}.png" in captions]
    lines = ["## Figures", "", "Every figure and caption, and the figures not drawn with the runs they need: "
             "[index.md](index.md).", ""]  # fmt: skip
    for name in drawn:
        paper_figure, _, caption = captions[f"{name}.png"].partition(": ")
        lines += [f"![{paper_figure}](figures/{name}.png)", "", f"*{name}* ({paper_figure}): {caption}", ""]
    section = "\n".join(lines)
    text = Path(results_md).read_text()
    hand_written = Path(notes).read_text().rstrip() if notes is not None and Path(notes).exists() else ""
    at = text.rfind(hand_written) if hand_written else -1
    text = text[:at] + section + "\n" + text[at:] if at > 0 else text.rstrip() + "\n\n" + section
    Path(results_md).write_text(text)


def publish(collected: Path, out: Path, title: str | None = None) -> list[Path]:
    verify_collected(collected)  # what is published is what collect_results wrote
    (Path(out) / "data").mkdir(parents=True, exist_ok=True)
    for name in COLLECTED + OPTIONAL_COLLECTED:  # the optional ones copied when collected (older studies lack them)
        source, data = Path(collected) / name, Path(out) / "data"
        if name in OPTIONAL_COLLECTED and not source.exists():
            for stale in (data / name, data / f"{name}.gz"):
                stale.unlink(missing_ok=True)  # not left over from an earlier publication
            continue
        write_data_file(source, data, name)  # large ones gzip-compressed
    return regenerate(out, title)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="results/<exp>/collected, or with --regenerate the published directory")
    parser.add_argument("out", nargs="?", help="the published directory (docs/results/<study>)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild tables and figures from <source>/data")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    written = regenerate(Path(args.source), args.title) if args.regenerate else publish(
        Path(args.source), Path(args.out), args.title)  # fmt: skip
    print(f"{len(written)} files written")


if __name__ == "__main__":
    from encore.cli import run

    run(main)
