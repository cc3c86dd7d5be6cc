"""One published study from runs made under the same protocol at different times (runs added later beside a
published study), cut at a common number of edits.

    python -m encore.reporting.combine docs/results/lifelong-cpu results/lifelong-cpu-rect-prune/collected \\
        --up-to 500 --out docs/results/rect-prune-cpu

A source is a published directory (its ``data/``) or a ``collected/`` directory. The data files are
concatenated, each cut at ``--up-to`` edits (snapshots, norms, ledger rows and records after it dropped), and
the tables and figures rebuilt from them (``publish.regenerate``). Refused, with the key and the files named:
sources that differ in model, dataset, batch size, seed, C0 sample count, edit ordering or scoring precision; a run in two sources;
a snapshot count scored in both under different editing-metric protocols. Metrics that only some sources have
(e.g. perplexity, added later) are kept and listed, never filled in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from encore.evaluation import protocols
from encore.reporting.collect import COLLECTED, OPTIONAL_COLLECTED, RUN
from encore.reporting.data_files import data_path, write_data_file
from encore.reporting.publish import regenerate

SHARED_SETTINGS = ("model", "batch_size", "seed", "mom2_n_samples", "order", "score_precision")
DEFAULTS = {"score_precision": "fp32"}  # runs.csv written before the key existed: every run was scored in fp32


class CombineError(ValueError):
    pass


def _data_dir(source: Path) -> Path:
    return source / "data" if (source / "data").is_dir() else source


def _cut(frame: pd.DataFrame, name: str, up_to: int | None) -> pd.DataFrame:
    if up_to is None:
        return frame
    if name == "ledger.csv":
        return frame[frame["position"] < up_to]
    return frame[frame["edits"] <= up_to] if "edits" in frame and name != "runs.csv" else frame


def _check_settings(runs: list[tuple[Path, pd.DataFrame]]) -> None:
    for key in SHARED_SETTINGS:
        if key in DEFAULTS:
            runs = [(path, frame if key in frame else frame.assign(**{key: DEFAULTS[key]})) for path, frame in runs]
        values = {str(v) for _, frame in runs if key in frame for v in frame[key].unique()}
        if len(values) > 1:
            where = "; ".join(f"{path}: {sorted(map(str, frame[key].unique()))}" for path, frame in runs)
            raise CombineError(f"runs.csv key {key!r} differs between the sources ({where}); combine only one protocol")


def _check_runs_and_protocols(metrics: list[tuple[Path, pd.DataFrame]]) -> list[str]:
    seen: dict[tuple, Path] = {}
    for path, frame in metrics:
        for run in frame[RUN].drop_duplicates().itertuples(index=False):
            if tuple(run) in seen:
                raise CombineError(f"run {'/'.join(map(str, run))} is in {seen[tuple(run)]} and in {path}; keep one")
            seen[tuple(run)] = path
    if len({str(v) for _, frame in metrics for v in frame["dataset"].unique()}) > 1:
        raise CombineError("metrics.csv key 'dataset' differs between the sources; combine only one dataset")
    editing = {path: frame[frame["protocol"].str.startswith(protocols.EDITING_FAMILIES)] for path, frame in metrics}
    for edits in sorted(set.intersection(*(set(frame["edits"]) for frame in editing.values()))):
        tags = {path: set(frame.loc[frame["edits"] == edits, "protocol"]) for path, frame in editing.items()}
        if len({frozenset(p) for p in tags.values()}) > 1:
            where = "; ".join(f"{path}: {sorted(p)}" for path, p in tags.items())
            raise CombineError(f"metrics.csv: the editing protocols at {edits} edits differ ({where})")
    all_protocols = {path: set(frame["protocol"]) for path, frame in metrics}
    union = set.union(*all_protocols.values())
    return [f"{protocol}: only in {', '.join(str(p) for p, have in all_protocols.items() if protocol in have)}"
            for protocol in sorted(union) if not all(protocol in have for have in all_protocols.values())]  # fmt: skip


def combine(sources, out: Path, up_to: int | None = None, title: str | None = None) -> list[str]:
    """Write ``out/data`` from ``sources`` (cut at ``up_to`` edits) and regenerate; returns the protocols that not
    every source has."""
    directories = [_data_dir(Path(source)) for source in sources]
    frames = {name: [] for name in COLLECTED + OPTIONAL_COLLECTED}
    for directory in directories:
        for name in frames:
            if data_path(directory, name).exists():  # plain or gzip-compressed
                frames[name].append((directory, _cut(pd.read_csv(data_path(directory, name)), name, up_to)))
            elif name not in OPTIONAL_COLLECTED:
                raise CombineError(f"{directory / name}: missing; a source needs {', '.join(COLLECTED)}")
    _check_settings(frames["runs.csv"])
    only_some = _check_runs_and_protocols(frames["metrics.csv"])
    data = Path(out) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in frames:
        for stale in (data / name, data / f"{name}.gz"):
            stale.unlink(missing_ok=True)
        if frames[name]:
            combined = pd.concat([frame for _, frame in frames[name]], ignore_index=True)
            combined.to_csv(data / name, index=False)
            write_data_file(data / name, data, name)  # compressed when large
    regenerate(Path(out), title)
    return only_some


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="published directories (docs/results/<study>) or collected/ ones")
    parser.add_argument("--out", required=True, help="the combined published directory")
    parser.add_argument(
        "--up-to", type=int, help="drop snapshots, norms, ledger rows and records after this many edits"
    )
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    try:
        only_some = combine(args.sources, Path(args.out), args.up_to, args.title)
    except CombineError as error:
        raise SystemExit(f"combine: {error}") from None
    for line in only_some:
        print(f"not in every source: {line}")
    print(f"combined {len(args.sources)} sources into {args.out}")


if __name__ == "__main__":
    from encore.cli import run

    run(main)
