"""A published study's data files (``docs/results/<study>/data/``): plain CSVs, or gzip-compressed CSVs when large.

Every reader of a published or collected data directory finds a file with ``data_path``; publishing writes it with
``write_data_file``.
"""

from __future__ import annotations

from pathlib import Path

# A published data file over this size is stored gzip-compressed beside its name (<name>.gz, still a CSV: pandas and
# zcat read it): the per-item downstream records of a nine-run study are ~10 MB of text, ~1 MB compressed.
COMPRESS_ABOVE_BYTES = 1_000_000


def data_path(directory: Path, name: str) -> Path:
    """Where a published data file lives: ``directory/name``, else its compressed ``directory/name.gz``; the plain
    path when neither exists (a missing optional file)."""
    plain = Path(directory) / name
    compressed = plain.with_name(name + ".gz")
    return compressed if not plain.exists() and compressed.exists() else plain


def write_data_file(source: Path, directory: Path, name: str) -> Path:
    """Copy a collected CSV into a published ``data/`` directory, gzip-compressed (deterministic bytes: no time or
    name in the header) when over COMPRESS_ABOVE_BYTES; the other form of the file is removed."""
    import gzip

    data = Path(source).read_bytes()
    plain = Path(directory) / name
    compressed = plain.with_name(name + ".gz")
    if len(data) > COMPRESS_ABOVE_BYTES:
        with open(compressed, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
            handle.write(data)
        plain.unlink(missing_ok=True)
        return compressed
    plain.write_bytes(data)
    compressed.unlink(missing_ok=True)
    return plain
