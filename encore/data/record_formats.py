"""Edit-request files (and single request dicts) in the record schemas the loaders read, detected per file.

Schemas (``detect_schema``: from the fields of a file's first record; every record is then checked):
  rome      CounterFact as ROME/MEMIT ship it: requested_rewrite {prompt with "{}", subject, target_new.str,
            target_true.str, relation_id}, paraphrase_prompts (2), neighborhood_prompts (10), generation_prompts
  mend      zsRE as MEND/MEMIT ship it: subject, src, answers, rephrase, loc, loc_ans (edited to answers[0])
  easyedit  EasyEdit's flat edit records (its counterfact-{edit,train,val}.json and ZsreDataset's records):
            subject, prompt (the subject written out, or a "{}" slot), target_new, ground_truth (str or [str]),
            optional case_id, rephrase_prompt, locality_prompt, locality_ground_truth; KnowEdit's nested
            ``locality`` ({kind: [{prompt, ground_truth}]}) and ``portability`` are recognised too. Records are
            edited to their target_new (EasyEdit's convention; for zsRE this is MEND's ``alt``, not answers[0]).

An EasyEdit record is mapped without inventing anything: prompt -> the template with the first occurrence of the
subject as "{}", ground_truth -> target_true, rephrase_prompt -> the only paraphrase prompt, locality_prompt ->
the only neighborhood prompt (CounterFact: scored against target_true, so locality_ground_truth must equal
ground_truth; zsRE: its own answer, "nq question: " dropped and "?" added as for MEND). What it lacks is named
by ``file_notes`` (recorded with the data provenance) and by ``missing_metrics`` at evaluation: no generation
prompts (GE is skipped), one paraphrase prompt instead of two and one neighborhood prompt instead of ten (PS and
NS are means over what there is; the records files count them), KnowEdit's portability prompts and every
locality prompt after the first are not scored. Attribute prompts are not read from any schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from encore.data.datasets import (
    _NQ_PREFIX,
    EditRecord,
    RecordLocation,
    _read_json,
    counterfact_record,
    subject_template,
    zsre_record,
)
from encore.data.files import DataError

_LOCALITY_PREFERENCE = ("Relation_Specificity", "Forgetfulness")  # KnowEdit kinds, in EasyEdit's order


def schema_of(raw: Any) -> str | None:
    """The schema of one record (a dict), or None if it fits none."""
    if not isinstance(raw, dict):
        return None
    if "requested_rewrite" in raw:
        return "rome"
    if "src" in raw:
        return "mend"
    if "prompt" in raw or "target_new" in raw:  # its other fields are checked by easyedit_record
        return "easyedit"
    return None


def detect_schema(records: list, name: str) -> str:
    """The schema of a file's records, from its first record; a one-line error naming the file otherwise."""
    if not records:
        raise DataError(f"{name}: no records")
    schema = schema_of(records[0])
    if schema is None:
        fields = sorted(records[0]) if isinstance(records[0], dict) else type(records[0]).__name__
        raise DataError(
            f"{name}: record 0 fits no known schema (fields {fields}); expected ROME CounterFact (requested_rewrite), "
            "MEND zsRE (src, answers, ...) or EasyEdit (subject, prompt, target_new, ...)"
        )
    return schema


def _first_string(where: RecordLocation, value: Any, field_name: str) -> str:
    """A str, or the first str of a (nested) list of them, as EasyEdit's ground truths come."""
    while isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, str):
        raise where.error(f"field '{field_name}' must be str or a list of str, got {type(value).__name__}")
    return value


def _strings(where: RecordLocation, raw: dict, field_name: str) -> list[str]:
    """An optional prompt field: absent or empty -> [], str -> [str], list of str -> itself."""
    value = raw.get(field_name)
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [value]
    return where.strings(raw, field_name)


def _knowedit_locality(where: RecordLocation, locality: Any) -> list[tuple[str, str]]:
    """(prompt, answer) of every KnowEdit locality entry, the kinds in EasyEdit's order of preference."""
    if not isinstance(locality, dict):
        raise where.error(f"field 'locality' must be an object of lists, got {type(locality).__name__}")
    kinds = [k for k in _LOCALITY_PREFERENCE if k in locality] + sorted(set(locality) - set(_LOCALITY_PREFERENCE))
    pairs = []
    for kind in kinds:
        entries = locality[kind]
        if not isinstance(entries, list):
            raise where.error(f"field 'locality.{kind}' must be a list, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "prompt" not in entry or "ground_truth" not in entry:
                raise where.error(f"field 'locality.{kind}[{i}]' must have a prompt and a ground_truth")
            pairs.append(
                (
                    _first_string(where, entry["prompt"], f"locality.{kind}[{i}].prompt"),
                    _first_string(where, entry["ground_truth"], f"locality.{kind}[{i}].ground_truth"),
                )
            )
    return pairs


def easyedit_record(
    raw: Any, where: RecordLocation, case_id: int, dataset: str, require_true: bool = True
) -> EditRecord:
    """One EasyEdit-schema record as an EditRecord for ``dataset`` (counterfact | zsre); see the module doc.
    ``require_true``: a CounterFact record must have its ground_truth (CounterFact's metrics compare with it)."""
    subject = where.get(raw, "subject", str)
    text = where.get(raw, "prompt", str)
    if "{}" in text:
        if text.count("{}") != 1 or not subject:
            raise where.error(f"field 'prompt' must contain exactly one '{{}}' and a non-empty subject: {text!r}")
        prompt = text
    else:
        prompt = subject_template(text, subject, where, "prompt")
    truth_field = next((name for name in ("ground_truth", "target_true") if raw.get(name) is not None), None)
    target_true = _first_string(where, raw[truth_field], truth_field) if truth_field else None
    if dataset == "counterfact" and require_true and target_true is None:
        raise where.error("missing field 'ground_truth' (CounterFact compares target_new with the true answer)")
    nested = isinstance(raw.get("locality"), dict)
    if nested:
        pairs = _knowedit_locality(where, raw["locality"])
    elif raw.get("locality_prompt"):
        answer = raw.get("locality_ground_truth")
        answer = None if answer is None else _first_string(where, answer, "locality_ground_truth")
        pairs = [(where.get(raw, "locality_prompt", str), answer)]
    else:
        pairs = []
    neighborhood, neighborhood_target = [], None
    if dataset == "counterfact" and pairs and not nested:  # KnowEdit's own-answer locality: not CounterFact's NS
        prompt_text, answer = pairs[0]
        if answer is not None and answer != target_true:
            raise where.error(
                f"locality_ground_truth {answer!r} differs from ground_truth {target_true!r}: CounterFact's NS "
                "scores target_true against target_new on the locality prompt; load the file as zsre to score "
                "its own answer"
            )
        neighborhood = [prompt_text]
    elif dataset != "counterfact" and pairs:
        prompt_text, neighborhood_target = pairs[0]
        if neighborhood_target is None:
            raise where.error("field 'locality_prompt' has no 'locality_ground_truth' (zsRE's NS scores that answer)")
        if prompt_text.startswith(_NQ_PREFIX):  # MEND's NQ question, as zsre_record turns it into a prompt
            prompt_text = prompt_text.removeprefix(_NQ_PREFIX) + "?"
        neighborhood = [prompt_text]
    if target_true is None and dataset == "zsre":
        target_true = "<|endoftext|>"  # as zsre_record: zsRE's metrics never read it
    return EditRecord(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=_first_string(where, raw["target_new"], "target_new"),
        target_true=target_true,
        paraphrase_prompts=_strings(where, raw, "rephrase_prompt") or _strings(where, raw, "rephrase_prompts"),
        neighborhood_prompts=neighborhood,
        neighborhood_target=neighborhood_target,
    )


def file_notes(raw_records: list, schema: str, dataset: str) -> list[str]:
    """What the file's schema cannot give the pipeline's metrics (empty for the ROME and MEND schemas)."""
    if schema != "easyedit":
        return []
    notes = []
    if dataset == "counterfact":
        notes.append("no generation prompts: generation entropy (GE) is not measured")
        notes.append("PS over one rephrase prompt per record (ROME schema: 2), NS over one locality prompt (ROME: 10)")
        if any(isinstance(raw.get("locality"), dict) for raw in raw_records):
            notes.append("KnowEdit locality prompts carry answers of their own: not scored as CounterFact's NS")
    else:
        extra = sum(max(0, len(_knowedit_pairs(raw)) - 1) for raw in raw_records)
        if extra:
            notes.append(f"{extra} KnowEdit locality prompts after each record's first are not scored")
    if any(raw.get("portability") for raw in raw_records):
        notes.append("portability prompts are not an ENCORE metric: not scored")
    return notes


def _knowedit_pairs(raw: dict) -> list:
    locality = raw.get("locality")
    return [entry for entries in locality.values() for entry in entries] if isinstance(locality, dict) else []


def parse_record(
    raw: Any, where: RecordLocation, case_id: int, dataset: str, schema: str | None = None, require_true: bool = True
) -> EditRecord:
    """One record of ``schema`` (detected from its fields when None) as an EditRecord; an EasyEdit record's own
    case_id wins over ``case_id``."""
    schema = schema or schema_of(raw)
    if schema == "rome":
        return counterfact_record(raw, where)
    if schema == "mend":
        return zsre_record(raw, where, case_id)
    if schema == "easyedit":
        record = easyedit_record(raw, where, raw.get("case_id", case_id), dataset, require_true)
        if not isinstance(record.case_id, int) or isinstance(record.case_id, bool):
            raise where.error(f"field 'case_id' must be int, got {type(record.case_id).__name__}")
        return record
    fields = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
    raise where.error(
        f"fits no known schema (fields {fields}); give subject, prompt and target_new (EasyEdit), "
        "requested_rewrite (ROME CounterFact) or src and answers (MEND zsRE)"
    )


def load_records(path: str | Path, dataset: str, first_case_id: int = 0) -> tuple[list[EditRecord], dict]:
    """The records of one file, its schema detected, and what to record about it (path, schema, records, notes).
    Records without a case_id of their own (MEND, EasyEdit zsRE) are numbered by position from ``first_case_id``."""
    name = Path(path).name
    raw_records = _read_json(path, list)
    schema = detect_schema(raw_records, name)
    records = []
    for index, raw in enumerate(raw_records):
        where = RecordLocation(name, index, raw.get("case_id", first_case_id + index) if isinstance(raw, dict) else "?")
        if schema_of(raw) != schema:
            raise where.error(f"does not fit the file's {schema} schema (detected from record 0)")
        records.append(parse_record(raw, where, first_case_id + index, dataset, schema))
    own_ids = schema == "rome" or all(isinstance(raw, dict) and "case_id" in raw for raw in raw_records)
    info = {"path": str(path), "schema": schema, "records": len(records), "own_case_ids": own_ids,
            "notes": file_notes(raw_records, schema, dataset)}  # fmt: skip
    return records, info


def missing_metrics(
    records: list[EditRecord], dataset: str, generation: bool, generation_efficacy: bool = False
) -> dict[str, str]:
    """Metrics the records cannot support, each with why (evaluation skips them and records this; PS and PS_gen are
    still reported, as NaN). ``generation`` / ``generation_efficacy``: whether GE / ES_gen and PS_gen are wanted."""
    missing = {}
    if generation and dataset == "counterfact" and not any(r.generation_prompts for r in records):
        missing["GE"] = "no record has generation prompts (EasyEdit-schema records carry none)"
    if not any(r.paraphrase_prompts for r in records):
        missing["PS"] = "no record has paraphrase (rephrase) prompts"
        if generation_efficacy:
            missing["PS_gen"] = missing["PS"]
    if not any(r.neighborhood_prompts for r in records):
        missing["NS"] = "no record has neighborhood (locality) prompts"
    if dataset == "counterfact" and ("PS" in missing or "NS" in missing):
        missing["S"] = "the harmonic mean needs ES, PS and NS"
    return missing
