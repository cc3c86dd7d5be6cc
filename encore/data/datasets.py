"""The records an experiment edits and the texts it reads: ``EditRecord``, the CounterFact and zsRE loaders, the
authors' edit orderings, and the corpus and held-out texts (the files themselves: encore.data.files).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encore.data.files import DataError


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
