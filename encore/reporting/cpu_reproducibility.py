"""One run made twice, on two CPUs: a study directory lost and started again on a machine whose bf16 kernels round
otherwise (docs/studies.md, "A lost study directory"; docs/precision.md, "Across CPUs"). The snapshots of the first
making (set aside in ``first-directory/`` beside the published study) against the new ones, snapshot by snapshot,
paired over the same facts.

    python -m encore.reporting.cpu_reproducibility docs/results/lifelong-cpu

writes ``cpu-reproducibility.csv`` (run, method, variant, edits, metric, making, value, low, high, facts, n_facts)
and ``cpu-reproducibility.md`` (made from that CSV alone) into the study; ``make study-collect`` does it after every
round. With es, ps, ns the per-fact scores of records.csv, for every snapshot both makings evaluated:

    ES, PS, NS = 100 · mean over the facts of es, ps, ns           S = 3 / (1/ES + 1/PS + 1/NS)
    Δm = m(new CPU) − m(first CPU)                                  (m = ES, PS, NS, S; growth_L as a difference)

paired over the facts both scored, with the 95% paired bootstrap interval of ``precision_compounding.score_rows``
(the same computation as the bf16-against-fp32 page: two makings of one run differ here only in the CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from encore.reporting.precision_compounding import COLUMNS, csv_text, growth_rows, load, score_rows

FIRST_DIRECTORY = "first-directory"  # beside the published study: the data of the runs made again
CSV, PAGE = "cpu-reproducibility.csv", "cpu-reproducibility.md"
FIRST, NEW, DIFFERENCE = "first CPU", "new CPU", "new - first"


def compare(study_dir: Path) -> pd.DataFrame:
    """The tidy rows of every run set aside and every snapshot both makings evaluated (``making`` names which)."""
    new, first = load(study_dir), load(Path(study_dir) / FIRST_DIRECTORY)
    rows = []
    for run in dict.fromkeys(zip(first.metrics["method"], first.metrics["variant"])):
        snapshots = [set(s.metrics.loc[(s.metrics["method"] == run[0]) & (s.metrics["variant"] == run[1]), "edits"])
                     for s in (new, first)]  # fmt: skip
        for edits in sorted(set.intersection(*snapshots)):
            made = ([new, first], run, int(edits), [NEW, FIRST], DIFFERENCE)
            rows += score_rows(*made) + growth_rows(*made)
    table = pd.DataFrame(rows, columns=COLUMNS).rename(columns={"precision": "making"})
    return table.astype({"edits": int, "n_facts": "Int64"})


def page(table: pd.DataFrame) -> str:
    """The page, from the CSV's rows alone."""
    lines = ["# One run made on two CPUs", "",
             f"Generated from [{CSV}]({CSV}) by `python -m encore.reporting.cpu_reproducibility`. The study directory "
             "was lost and started again on another machine; a run published only in part there was made again "
             f"whole, and its first making is kept in `{FIRST_DIRECTORY}/`. Same commit, locks, seed and thread "
             "count; only the CPU differs (its bf16 kernels round otherwise: docs/precision.md, \"Across CPUs\"). "
             "Each row: a snapshot both makings evaluated, scored on the same facts; the difference new − first "
             "with its 95% paired bootstrap interval over those facts.", ""]  # fmt: skip
    if table.empty:
        return "\n".join([*lines, "No snapshot evaluated in both makings yet.", ""])
    for run, rows in table.groupby("run", sort=False):
        lines += [f"## {run}", "", f"| edits | metric | {FIRST} | {NEW} | new − first [95% interval] | facts |",
                  "|---:|---|---:|---:|---|---|"]  # fmt: skip
        for (edits, metric), cell in rows.groupby(["edits", "metric"], sort=False):
            value = cell.set_index("making")
            d = value.loc[DIFFERENCE]
            interval = f" [{d['low']:+.1f}, {d['high']:+.1f}]" if pd.notna(d["low"]) else ""
            facts = f"{int(d['n_facts'])} ({d['facts']})" if pd.notna(d["n_facts"]) else ""
            lines.append(f"| {edits:,} | {metric} | {value.loc[FIRST, 'value']:.1f} | {value.loc[NEW, 'value']:.1f} | "
                         f"{d['value']:+.1f}{interval} | {facts} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def write(study_dir: Path) -> list[Path]:
    """cpu-reproducibility.csv and .md into ``study_dir``, when it has a first-directory/ (else nothing)."""
    study_dir = Path(study_dir)
    if not (study_dir / FIRST_DIRECTORY / "data").is_dir():
        return []
    text = csv_text(compare(study_dir))
    (study_dir / CSV).write_text(text)
    (study_dir / PAGE).write_text(page(pd.read_csv(study_dir / CSV)))
    return [study_dir / CSV, study_dir / PAGE]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help=f"a published study with a {FIRST_DIRECTORY}/ (docs/results/<study>)")
    written = write(Path(parser.parse_args(argv).study))
    print(f"{len(written)} files written" if written else f"no {FIRST_DIRECTORY}/: nothing to compare")


if __name__ == "__main__":
    from encore.cli import run

    run(main)
