"""Data files and record loaders.

Files come either from a local data directory with the layout of ``shared/data`` (``data_dir`` or
the ``ENCORE_DATA_DIR`` environment variable) or are downloaded from their public originals into a
cache directory. Every file is checked against a known checksum. Nothing is ever unpickled.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO


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


@dataclass
class EditRecord:
    """One edit request plus its evaluation prompts (CounterFact or zsRE)."""

    case_id: int
    subject: str
    prompt: str  # template with "{}" for the subject
    target_new: str
    target_true: str
    paraphrase_prompts: list[str] = field(default_factory=list)
    neighborhood_prompts: list[str] = field(default_factory=list)
    generation_prompts: list[str] = field(default_factory=list)
    relation_id: str | None = None
    neighborhood_target: str | None = None  # zsRE loc_ans; None for CounterFact (use target_true)

    @property
    def rewrite_prompt(self) -> str:
        return self.prompt.format(self.subject)


class RecordLocation:
    """Builds one-line error messages for record `index` of file `name`."""

    def __init__(self, name: str, index: int, case_id: Any = "?"):
        self.name, self.index, self.case_id = name, index, case_id

    def error(self, text: str) -> DataError:
        return DataError(f"{self.name}: record {self.index} (case_id {self.case_id}): {text}")

    def get(self, obj: Any, path: str, kind: type) -> Any:
        """Value at dotted `path` in `obj`, checked to be of type `kind`."""
        for part in path.split("."):
            if not isinstance(obj, dict) or part not in obj:
                raise self.error(f"missing field '{path}'")
            obj = obj[part]
        if not isinstance(obj, kind) or (kind is int and isinstance(obj, bool)):
            raise self.error(f"field '{path}' must be {kind.__name__}, got {type(obj).__name__}")
        return obj

    def strings(self, obj: Any, path: str) -> list[str]:
        """A list of str at `path`."""
        items = self.get(obj, path, list)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"field '{path}[{i}]' must be str, got {type(item).__name__}")
        return list(items)


def _read_json(path: str | Path, kind: type) -> Any:
    """Parse a JSON file whose top level must be of type `kind` (list or dict)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{Path(path).name}: invalid JSON: {exc}") from None
    if not isinstance(data, kind):
        raise DataError(f"{Path(path).name}: expected a JSON {kind.__name__} at top level, got {type(data).__name__}")
    return data


def load_counterfact(path: str | Path, qna_path: str | Path | None = None) -> list[EditRecord]:
    """Load and validate CounterFact records in the ROME schema.

    With `qna_path` (counterfact_qna.json) each record's QnA question is appended to its
    generation prompts, matched on case_id (as the reference does for case_id < 1000).
    """
    name = Path(path).name
    records, seen = [], {}
    for index, raw in enumerate(_read_json(path, list)):
        where = RecordLocation(name, index, raw.get("case_id", "?") if isinstance(raw, dict) else "?")
        record = counterfact_record(raw, where)
        if record.case_id in seen:
            raise where.error(f"duplicate case_id (first at record {seen[record.case_id]})")
        seen[record.case_id] = index
        records.append(record)
    if qna_path is not None:
        qna_name = Path(qna_path).name
        by_id = {record.case_id: record for record in records}
        for index, raw in enumerate(_read_json(qna_path, list)):
            where = RecordLocation(qna_name, index)
            case_id = where.get(raw, "case_index", int)
            question = where.get(raw, "qna_question", str)
            if case_id in by_id:
                by_id[case_id].generation_prompts.append(question)
    return records


def counterfact_record(raw: Any, where: RecordLocation) -> EditRecord:
    """One CounterFact record in the ROME schema (``where`` names it in errors)."""
    case_id = where.get(raw, "case_id", int)
    prompt = where.get(raw, "requested_rewrite.prompt", str)
    if prompt.count("{}") != 1:
        raise where.error(f"field 'requested_rewrite.prompt' must contain exactly one '{{}}': {prompt!r}")
    return EditRecord(
        case_id=case_id,
        subject=where.get(raw, "requested_rewrite.subject", str),
        prompt=prompt,
        target_new=where.get(raw, "requested_rewrite.target_new.str", str),
        target_true=where.get(raw, "requested_rewrite.target_true.str", str),
        paraphrase_prompts=where.strings(raw, "paraphrase_prompts"),
        neighborhood_prompts=where.strings(raw, "neighborhood_prompts"),
        generation_prompts=where.strings(raw, "generation_prompts"),
        relation_id=where.get(raw, "requested_rewrite.relation_id", str),
    )


_NQ_PREFIX = "nq question: "


def load_zsre(path: str | Path, generation_pool: Sequence[str] | None = None) -> list[EditRecord]:
    """Load and validate zsRE records in the MEMIT/MEND eval schema (case_id = position).

    With `generation_pool`, each record gets 10 generation prompts sampled with
    random.Random(case_id); otherwise none.
    """
    name = Path(path).name
    return [
        zsre_record(raw, RecordLocation(name, index, index), index, generation_pool)
        for index, raw in enumerate(_read_json(path, list))
    ]


def subject_template(text: str, subject: str, where: RecordLocation, field_name: str) -> str:
    """``text`` with its first occurrence of ``subject`` replaced by the "{}" slot, literal braces escaped so that
    ``template.format(subject) == text``; a one-line error when the subject is empty or not in the text."""
    if not subject or subject not in text:
        raise where.error(f"field '{field_name}' does not contain the subject {subject!r}: {text!r}")
    escaped = text.replace("{", "{{").replace("}", "}}")
    return escaped.replace(subject.replace("{", "{{").replace("}", "}}"), "{}", 1)


def zsre_record(
    raw: Any, where: RecordLocation, case_id: int, generation_pool: Sequence[str] | None = None
) -> EditRecord:
    """One zsRE record in the MEND schema: the edit target is ``answers[0]`` and the neighborhood prompt the NQ
    question ``loc`` without its "nq question: " prefix plus "?" (the MEMIT reference)."""
    subject = where.get(raw, "subject", str)
    prompt = subject_template(where.get(raw, "src", str), subject, where, "src")
    answers = where.strings(raw, "answers")
    if not answers:
        raise where.error("field 'answers' is empty")
    generation: list[str] = []
    if generation_pool:
        generation = random.Random(case_id).sample(list(generation_pool), min(10, len(generation_pool)))
    return EditRecord(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=answers[0],
        target_true="<|endoftext|>",
        paraphrase_prompts=[where.get(raw, "rephrase", str)],
        neighborhood_prompts=[where.get(raw, "loc", str).removeprefix(_NQ_PREFIX) + "?"],
        generation_prompts=generation,
        neighborhood_target=where.get(raw, "loc_ans", str),
    )


def load_order(path: str | Path, sample: str | int = "0") -> list[int]:
    """One edit ordering (list of case ids) from an orderings file {"0": [...], ...}."""
    name, sample = Path(path).name, str(sample)
    data = _read_json(path, dict)
    if sample not in data:
        raise DataError(f"{name}: sample {sample!r} not found; available: {', '.join(sorted(data))}")
    order = data[sample]
    if not isinstance(order, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in order):
        raise DataError(f"{name}: sample {sample!r} must be a list of int")
    return order


def order_records(
    records: Sequence[EditRecord], order: Sequence[int], limit: int | None = None
) -> tuple[list[EditRecord], int]:
    """Records in `order`; ids not among `records` are dropped and counted (over the whole order).

    `limit` (if given) truncates the filtered list.
    """
    by_id = {record.case_id: record for record in records}
    kept = [by_id[case_id] for case_id in order if case_id in by_id]
    skipped = len(order) - len(kept)
    return (kept if limit is None else kept[:limit]), skipped


def read_text(path: str | Path) -> str:
    """The whole of a UTF-8 text file, gzip-compressed (``.gz``, the local copy) or plain (the download)."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: unreadable text file ({type(exc).__name__}: {exc})") from None


def iter_corpus_texts(path: str | Path) -> Iterator[str]:
    """Yield the "text" field of each document of a .jsonl, .jsonl.gz or .parquet file."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        yield from _iter_parquet_texts(path)
        return
    if path.name.endswith(".jsonl.gz"):
        handle = gzip.open(path, "rt", encoding="utf-8")
    elif path.name.endswith(".jsonl"):
        handle = open(path, encoding="utf-8")
    else:
        raise DataError(f"{path.name}: unsupported corpus format (expected .jsonl, .jsonl.gz or .parquet)")

    def invalid(number: int, error: json.JSONDecodeError) -> DataError:
        return DataError(f"{path.name}: line {number}: invalid JSON: {error}")

    with handle:
        for number, document in json_lines(handle, invalid):
            if not isinstance(document, dict) or not isinstance(document.get("text"), str):
                raise DataError(f"{path.name}: line {number}: missing str field 'text'")
            yield document["text"]


def json_lines(lines: Iterable[str], invalid: Callable[[int, json.JSONDecodeError], Exception]) -> Iterator[tuple]:
    """(line number from 1, parsed value) of every non-blank line of a JSON-lines text (an open file); a line that
    is not JSON raises ``invalid(number, error)``, the caller's one-line error naming its file."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise invalid(number, error) from None
        yield number, value


def _iter_parquet_texts(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path.name} needs pyarrow: pip install pyarrow") from None
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
        yield from batch.column(0).to_pylist()
