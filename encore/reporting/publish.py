"""Publish a study with the project: its collected CSVs, and the tables and figures regenerated from them.

    python -m encore.reporting.publish results/lifelong-cpu/collected docs/results/lifelong-cpu   # copy + build
    python -m encore.reporting.publish --regenerate docs/results/lifelong-cpu                     # rebuild from the CSVs

``<out>/data/`` holds the four collected CSVs (metrics, norms, ledger, runs: text only, no tensors); the
tables (Markdown and CSV) and figures (PNG) under ``<out>/tables`` and ``<out>/figures`` are made from them
alone, with the same code as the pipeline's ``paper_outputs`` rule, so no model is needed to redraw them.
``<out>/results.md`` puts each paper claim beside the study's numbers (``encore.reporting.claims``), followed by the
hand-written ``<out>/notes.md``.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from encore.reporting.claims import write_results
from encore.reporting.report import build_paper_outputs, editing_table, verify_collected

DATA_FILES = ("metrics.csv", "norms.csv", "ledger.csv", "runs.csv")


def regenerate(out: Path, title: str | None = None) -> list[Path]:
    """Tables and figures of ``out/data``; returns the files written (PDF and LaTeX copies are not kept)."""
    out = Path(out)
    data, tables, figures = out / "data", out / "tables", out / "figures"
    for directory in (tables, figures):
        shutil.rmtree(directory, ignore_errors=True)
    build_paper_outputs(data, tables, figures, out / "index.md", title=title or f"Tables and figures: {out.name}")
    editing_table([data / "metrics.csv"], tables / "editing_metrics.csv", tables / "editing_metrics.md",
                  ledger_files=[data / "ledger.csv"])  # fmt: skip
    for extra in [*figures.glob("*.pdf"), *tables.glob("*.tex")]:
        extra.unlink()
    index = out / "index.md"
    index.write_text(re.sub(r", [\w.-]+\.(pdf|tex)\b", "", index.read_text()))
    write_results(data, out / "results.md", f"Results: {out.name}", notes=out / "notes.md")
    return sorted(p for p in out.rglob("*") if p.is_file() and data not in p.parents and p.name != "notes.md")


def publish(collected: Path, out: Path, title: str | None = None) -> list[Path]:
    verify_collected(collected)  # what is published is what collect_results wrote
    (Path(out) / "data").mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        shutil.copyfile(Path(collected) / name, Path(out) / "data" / name)
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
    main()
