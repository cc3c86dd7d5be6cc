"""The registered data files: where each comes from, its checksum, and resolving it to a verified local path.

A file comes either from a local data directory with the layout of ``shared/data`` (``data_dir`` or the
``ENCORE_DATA_DIR`` environment variable) or is downloaded from its public original into a cache directory; either
way it is checked against its recorded sha256 (``REGISTRY``) before use. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class DataError(Exception):
    """A data file is missing, corrupt or malformed (the message is one line)."""


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face hub repository (the hub verifies its own LFS checksum)."""

    repo_id: str
    filename: str
    repo_type: str = "dataset"
    revision: str | None = None


@dataclass(frozen=True)
class DataFile:
    """One registered data file: where it lies locally and where its public original is."""

    key: str
    local_path: str  # relative to a data directory laid out like shared/data
    local_sha256: str
    url: str
    sha256: str | None = None  # checksum of the download, if known ...
    git_blob_sha1: str | None = None  # ... else git's blob hash of the download
    hub_file: HubFile | None = None  # downloaded with huggingface_hub instead of urllib


@dataclass
class ResolvedFile:
    """A verified file on disk."""

    key: str
    path: Path
    sha256: str
    source: str  # "local" | "download"
    url: str


_ENC = (
    "https://raw.githubusercontent.com/scalable-model-editing/knowledge-editing-regularization/"
    "6e3ba9a87978a23b6db2676ba7540216bf5d4fd0/data/"
)
_MEMIT = "https://memit.baulab.info/data/dsets/"
_PT_EXAMPLES = "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/"
_CF_ORDER = "dcecf276656879f2862cd513b587f658fa1e1b0b9bae09890ddfb2f718811870"
_ZSRE_ORDER = "386bd744dde14e988f90ff1564f984d4bd08966bd9ab5f029e317d93c5043eb7"
_QNA = "ccfb732fcb886b106fe2e16860b0c3e64ca0d263d479106977447a2d674658c7"
_WIKI = HubFile("wikimedia/wikipedia", "20231101.en/train-00000-of-00041.parquet")

_FILES = [
    DataFile("counterfact", "counterfact/counterfact_rome_schema_merged.json",
             "7f28fbe697a03285d2132b3b7900515a7ea735ec1f76efc1e07c3e133b6ac0ff", _MEMIT + "counterfact.json",
             sha256="d017056125178a13728594e66a801357a8db9ed7973a7425554bb4271de9fc6f"),
    DataFile("counterfact_order", "counterfact/counterfact_sampled_unique_cf_10_20000.json", _CF_ORDER,
             _ENC + "counterfact_sampled_unique_cf_10_20000.json", sha256=_CF_ORDER),
    DataFile("zsre", "zsre/zsre_mend_eval_subset_merged.json",
             "500a8c611d72bef1b05f8732e640976f4ebc55f8a885d33adfc029ff8ddd2099", _MEMIT + "zsre_mend_eval.json",
             git_blob_sha1="8546c90abc10b77ebc9fd69de178cf7837ff86dc"),
    DataFile("zsre_order", "zsre/zsre_sampled_unique_10_10000.json", _ZSRE_ORDER,
             _ENC + "zsre_sampled_unique_10_10000.json", sha256=_ZSRE_ORDER),
    DataFile("counterfact_qna", "counterfact/counterfact_qna.json", _QNA, _ENC + "counterfact_qna.json", sha256=_QNA),
    DataFile("wikipedia", "corpus/wikipedia_en_wikiextractor_sample.jsonl.gz",
             "1078d9516f1ea4b0cb4733d093fd090b5571d215445854f9e3db5a1597a3c786",
             f"https://huggingface.co/datasets/{_WIKI.repo_id}/resolve/main/{_WIKI.filename}", hub_file=_WIKI),
    DataFile("wikitext2_valid", "corpus/wikitext-2/wiki.valid.tokens.gz",
             "3ac34ae2b6509075d52302c50a04a8a1970739ffe1a904f2cd374fefbea3cbf2",
             _PT_EXAMPLES + "word_language_model/data/wikitext-2/valid.txt",
             sha256="f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
    DataFile("wikitext2_test", "corpus/wikitext-2/wiki.test.tokens.gz",
             "a2b26b5d2619cc1f6cd34c8e116a451aed09af51479346aadfbf508ceb8b192e",
             _PT_EXAMPLES + "word_language_model/data/wikitext-2/test.txt",
             sha256="d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
]  # fmt: skip
REGISTRY: dict[str, DataFile] = {entry.key: entry for entry in _FILES}


_CHUNK = 1 << 20
_DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {}


def _hash_file(path: str | Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, streamed in 1 MiB chunks."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def file_digests(path: str | Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file (``_hash_file``), cached per process on (path, size, mtime)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_file(path)
    return _DIGESTS[key]


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file (streamed)."""
    return _hash_file(path)[0]


def file_git_blob_sha1(path: str | Path) -> str:
    """git's blob hash of a file: sha1(b"blob <size>\\0" + content), as `git hash-object` prints it."""
    return _hash_file(path)[1]


def _download_check(entry: DataFile, path: str | Path) -> tuple[bool, str, str]:
    """(ok, expected, actual) for a downloaded file, by sha256 or git blob sha1."""
    sha256, blob = file_digests(path)
    if entry.sha256:
        return sha256 == entry.sha256, f"sha256 {entry.sha256}", f"sha256 {sha256}"
    if entry.git_blob_sha1:
        return blob == entry.git_blob_sha1, f"git blob {entry.git_blob_sha1}", f"git blob {blob}"
    raise DataError(f"{entry.key}: registry entry has no checksum for its download")


def resolve_data_file(
    key: str, data_dir: str | Path | None = None, cache_dir: str | Path = "resources/data"
) -> ResolvedFile:
    """Return a verified local copy of registry file `key`.

    With a data directory (argument or ENCORE_DATA_DIR) the file must be there and match its
    sha256; otherwise the public original is downloaded into `cache_dir/<key>/` and checked.
    """
    if key not in REGISTRY:
        raise DataError(f"unknown data file {key!r}; known: {', '.join(sorted(REGISTRY))}")
    entry = REGISTRY[key]
    if data_dir is None:
        data_dir = os.environ.get("ENCORE_DATA_DIR") or None
    if data_dir is not None:
        path = Path(data_dir) / entry.local_path
        if not path.is_file():
            raise DataError(
                f"{key}: {path} not found; set data_dir/ENCORE_DATA_DIR to a copy of shared/data, "
                f"or unset it to download {entry.url}"
            )
        actual = file_digests(path)[0]
        if actual != entry.local_sha256:
            raise DataError(f"{key}: {path}: checksum mismatch, expected sha256 {entry.local_sha256}, got {actual}")
        return ResolvedFile(key, path, actual, "local", entry.url)
    if entry.hub_file is not None:
        return _resolve_hub(entry, Path(cache_dir))
    return _download(entry, Path(cache_dir))


def is_available(key: str, data_dir: str | Path | None = None, cache_dir: str | Path = "resources/data") -> bool:
    """Whether ``resolve_data_file`` would find ``key`` without downloading (a local data directory is used
    whenever one is set: a missing file there is reported by ``resolve_data_file``)."""
    entry = REGISTRY[key]
    if data_dir is not None or os.environ.get("ENCORE_DATA_DIR"):
        return True
    if entry.hub_file is not None:
        return False
    return (Path(cache_dir) / entry.key / Path(urllib.parse.urlparse(entry.url).path).name).is_file()


def _download(entry: DataFile, cache_dir: Path) -> ResolvedFile:
    """Download entry.url into the cache (verify first, then rename atomically)."""
    dest = cache_dir / entry.key / Path(urllib.parse.urlparse(entry.url).path).name
    if dest.is_file():
        if _download_check(entry, dest)[0]:
            return ResolvedFile(entry.key, dest, file_digests(dest)[0], "download", entry.url)
        dest.unlink()  # stale or corrupt cache entry: fetch again
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(entry.url, out)
        ok, expected, actual = _download_check(entry, tmp)
        sha256 = file_digests(tmp)[0]
        if not ok:
            raise DataError(f"{entry.key}: {entry.url} failed its checksum: expected {expected}, got {actual}")
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # urllib errors are OSErrors
            raise DataError(f"{entry.key}: download of {entry.url} failed: {exc}") from exc
        raise
    return ResolvedFile(entry.key, dest, sha256, "download", entry.url)


def _fetch(url: str, out: BinaryIO) -> None:
    """Copy `url` to `out`, with a tqdm progress bar only when stderr is a terminal."""
    from tqdm import tqdm

    with urllib.request.urlopen(url) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=not sys.stderr.isatty()) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _resolve_hub(entry: DataFile, cache_dir: Path) -> ResolvedFile:
    """Download a hub file with huggingface_hub (which checks its LFS hash); record our sha256."""
    from huggingface_hub import hf_hub_download

    hub = entry.hub_file
    try:
        path = hf_hub_download(repo_id=hub.repo_id, repo_type=hub.repo_type, filename=hub.filename,
                               revision=hub.revision, cache_dir=cache_dir / entry.key)  # fmt: skip
    except Exception as exc:
        raise DataError(f"{entry.key}: hub download of {hub.repo_id}/{hub.filename} failed: {exc}") from exc
    return ResolvedFile(entry.key, Path(path), file_digests(path)[0], "download", entry.url)
