"""Are two results directories of the same experiment bitwise the same, timings aside?

    python tools/compare_results.py results/demo /elsewhere/results/demo

Used to show that a refactor changed no result: run the same config before and after, then compare. Compared:
every tensor of every ``*.safetensors`` (snapshot weights and keys, statistics caches: same names, dtypes, shapes and
bytes), and every CSV with its timing columns (``*_s``, ``*s_per_edit*``, ``time_change_pct``, ``seconds``), the code
version column (``code``) and timing rows (metric ``*seconds``) dropped, cell by cell as text. Manifests and
provenance files are not compared (they record paths, times and the code version). Prints one line per file and ends with the count of differences (exit status 1 if any).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

TIMING_COLUMNS = ("seconds", "time_change_pct", "code")  # and every column ending in _s or naming s_per_edit


def tensor_digests(path: Path) -> dict[str, str]:
    """{tensor name: sha256 of dtype, shape and raw bytes}."""
    digests = {}
    for name, tensor in sorted(load_file(str(path)).items()):
        header = f"{tensor.dtype}{tuple(tensor.shape)}".encode()
        digests[name] = hashlib.sha256(
            header + tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        ).hexdigest()
    return digests


def csv_without_timings(path: Path) -> str:
    """The CSV as text, timing columns and timing rows dropped (everything else as written)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    timing = [c for c in frame.columns if c.endswith("_s") or "s_per_edit" in c or c in TIMING_COLUMNS]
    frame = frame.drop(columns=timing)
    if "metric" in frame.columns:
        frame = frame[~frame["metric"].str.endswith("seconds")]
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def compare(first: Path, second: Path) -> list[str]:
    """One line per compared file ("same" or what differs); missing files on either side are differences."""
    names = {p.relative_to(first) for p in first.rglob("*") if p.suffix in (".safetensors", ".csv")}
    names |= {p.relative_to(second) for p in second.rglob("*") if p.suffix in (".safetensors", ".csv")}
    lines = []
    for name in sorted(names):
        a, b = first / name, second / name
        if not (a.is_file() and b.is_file()):
            lines.append(f"DIFFERS {name}: only in {first if a.is_file() else second}")
            continue
        if name.suffix == ".safetensors":
            same = tensor_digests(a) == tensor_digests(b)
        else:
            same = csv_without_timings(a) == csv_without_timings(b)
        lines.append(f"{'same   ' if same else 'DIFFERS'} {name}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    for directory in (args.first, args.second):
        if not directory.is_dir():
            sys.exit(f"{directory}: no such results directory")
    lines = compare(args.first, args.second)
    print("\n".join(lines))
    differing = sum(line.startswith("DIFFERS") for line in lines)
    print(f"{len(lines)} files compared, {differing} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
