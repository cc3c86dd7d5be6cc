"""Tests for encore.data.datasets: registry checksums, local/download resolution, record loaders, orderings."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from encore.data import datasets, files
from encore.data.files import DataError

CF = "counterfact/counterfact_rome_schema_merged.json"
ZSRE = "zsre/zsre_mend_eval_subset_merged.json"
CF_ORDER = "counterfact/counterfact_sampled_unique_cf_10_20000.json"
QNA = "counterfact/counterfact_qna.json"


@pytest.fixture(scope="module")
def cf_records(shared_data_dir):
    return datasets.load_counterfact(shared_data_dir / CF)


@pytest.fixture(scope="module")
def cf_raw(shared_data_dir):
    with open(shared_data_dir / CF, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def zsre_raw(shared_data_dir):
    with open(shared_data_dir / ZSRE, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture()
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("ENCORE_DATA_DIR", raising=False)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- registry / checksums


def test_registry_local_checksums_match_shared_data(shared_data_dir):
    assert set(files.REGISTRY) == {
        "counterfact", "counterfact_order", "zsre", "zsre_order", "counterfact_qna", "wikipedia", "wikitext2_valid",
        "wikitext2_test",
    }  # fmt: skip
    for key, entry in files.REGISTRY.items():
        assert entry.key == key
        assert files.file_sha256(shared_data_dir / entry.local_path) == entry.local_sha256, key
        # exactly one way to verify the download
        assert sum(x is not None for x in (entry.sha256, entry.git_blob_sha1, entry.hub_file)) == 1, key
    # byte-for-byte copies: the download checksum is the local one
    for key in ("counterfact_order", "zsre_order", "counterfact_qna"):
        assert files.REGISTRY[key].sha256 == files.REGISTRY[key].local_sha256
    assert files.REGISTRY["counterfact"].sha256.startswith("d0170561")
    assert files.REGISTRY["zsre"].git_blob_sha1 == "8546c90abc10b77ebc9fd69de178cf7837ff86dc"


@pytest.mark.parametrize("key", ["wikitext2_valid", "wikitext2_test"])
def test_wikitext_download_checksum_is_of_the_uncompressed_file(shared_data_dir, key, tmp_path):
    entry = files.REGISTRY[key]
    raw = gzip.decompress((shared_data_dir / entry.local_path).read_bytes())
    assert hashlib.sha256(raw).hexdigest() == entry.sha256
    # the local copy (gzip) and the download (plain text) read as the same text
    plain = tmp_path / Path(entry.url).name
    plain.write_bytes(raw)
    assert datasets.read_text(plain) == datasets.read_text(shared_data_dir / entry.local_path) == raw.decode()


def test_read_text_names_a_missing_file(tmp_path):
    with pytest.raises(files.DataError, match=f"^{tmp_path / 'wiki.test.tokens.gz'}: file not found$"):
        datasets.read_text(tmp_path / "wiki.test.tokens.gz")


def test_git_blob_sha1_matches_git_hash_object(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    for name, content in [("a.txt", b"hello world\n"), ("empty", b""), ("bin", bytes(range(256)) * 5000)]:
        path = tmp_path / name
        path.write_bytes(content)
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, check=True, text=True)
        assert files.file_git_blob_sha1(path) == expected.stdout.strip()
    assert files.file_sha256(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ----------------------------------------------------------------------------------- local data dir


def copy_to_data_dir(shared_data_dir: Path, root: Path, key: str) -> Path:
    rel = files.REGISTRY[key].local_path
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_data_dir / rel, root / rel)
    return root / rel


def test_resolve_local_verifies_once_per_process(shared_data_dir, tmp_path, monkeypatch):
    path = copy_to_data_dir(shared_data_dir, tmp_path, "counterfact_qna")
    calls = []
    real = files._hash_file
    monkeypatch.setattr(files, "_hash_file", lambda p: calls.append(p) or real(p))
    first = files.resolve_data_file("counterfact_qna", data_dir=tmp_path)
    assert (first.source, first.path, first.sha256) == (
        "local",
        path,
        files.REGISTRY["counterfact_qna"].local_sha256,
    )
    second = files.resolve_data_file("counterfact_qna", data_dir=tmp_path)
    assert second == first
    assert len(calls) == 1
    # a changed file (new mtime) is hashed again and rejected
    content = bytearray(path.read_bytes())
    content[100] ^= 0x01
    path.write_bytes(bytes(content))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataError) as err:
        files.resolve_data_file("counterfact_qna", data_dir=tmp_path)
    assert len(calls) == 2
    message = str(err.value)
    assert str(path) in message and files.REGISTRY["counterfact_qna"].local_sha256 in message
    assert files.file_sha256(path) in message and "\n" not in message


def test_resolve_local_corrupt_byte(shared_data_dir, tmp_path):
    path = copy_to_data_dir(shared_data_dir, tmp_path, "zsre_order")
    content = bytearray(path.read_bytes())
    content[-2] ^= 0x20
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="checksum mismatch"):
        files.resolve_data_file("zsre_order", data_dir=tmp_path)


def test_resolve_local_missing_file_and_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCORE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        files.resolve_data_file("zsre")  # data_dir comes from the environment
    message = str(err.value)
    assert message.startswith("zsre:")
    assert str(tmp_path / files.REGISTRY["zsre"].local_path) in message
    assert "ENCORE_DATA_DIR" in message and "\n" not in message
    with pytest.raises(DataError, match="unknown data file"):
        files.resolve_data_file("nope", data_dir=tmp_path)


def test_resolve_shared_data_dir(shared_data_dir):
    resolved = files.resolve_data_file("counterfact", data_dir=shared_data_dir)
    assert resolved.path == shared_data_dir / CF and resolved.source == "local"
    assert resolved.url == "https://memit.baulab.info/data/dsets/counterfact.json"


# ------------------------------------------------------------------------------------------ download


@pytest.fixture()
def url_counter(monkeypatch):
    opened = []
    real = urllib.request.urlopen

    def counting(url, *args, **kwargs):
        opened.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting)
    return opened


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_download_wrong_checksum_leaves_nothing(tmp_path, monkeypatch, url_counter, no_env_data_dir):
    source = tmp_path / "src" / "orders.json"
    source.parent.mkdir()
    source.write_bytes(b'{"0": [3, 1, 2]}')
    entry = dataclasses.replace(files.REGISTRY["zsre_order"], url=source.as_uri(), sha256="0" * 64)
    monkeypatch.setitem(files.REGISTRY, "zsre_order", entry)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        files.resolve_data_file("zsre_order", cache_dir=cache)
    assert "0" * 64 in str(err.value) and files.file_sha256(source) in str(err.value)
    assert files_under(cache) == []
    assert len(url_counter) == 1


def test_download_once_then_reuse(tmp_path, monkeypatch, url_counter, no_env_data_dir):
    source = tmp_path / "src" / "orders.json"
    source.parent.mkdir()
    source.write_bytes(b'{"0": [3, 1, 2], "1": [2]}')
    digest = files.file_sha256(source)
    entry = dataclasses.replace(files.REGISTRY["zsre_order"], url=source.as_uri(), sha256=digest)
    monkeypatch.setitem(files.REGISTRY, "zsre_order", entry)
    cache = tmp_path / "cache"
    first = files.resolve_data_file("zsre_order", cache_dir=cache)
    assert first.source == "download" and first.sha256 == digest
    assert first.path == cache / "zsre_order" / "orders.json"
    assert first.path.read_bytes() == source.read_bytes()
    assert files_under(cache) == [first.path]  # no temporary file left behind
    second = files.resolve_data_file("zsre_order", cache_dir=cache)
    assert second == first
    assert len(url_counter) == 1
    assert datasets.load_order(second.path, "0") == [3, 1, 2]
    # a corrupted cache entry is not trusted: it is fetched again
    first.path.write_bytes(b'{"0": [1]}')
    third = files.resolve_data_file("zsre_order", cache_dir=cache)
    assert len(url_counter) == 2 and third.path.read_bytes() == source.read_bytes()


def test_download_git_blob_checksum(tmp_path, monkeypatch, url_counter, no_env_data_dir):
    source = tmp_path / "zsre_mend_eval.json"
    source.write_bytes(b"[]\n")
    good = files.file_git_blob_sha1(source)
    base = files.REGISTRY["zsre"]
    monkeypatch.setitem(files.REGISTRY, "zsre", dataclasses.replace(base, url=source.as_uri(), git_blob_sha1="f" * 40))
    with pytest.raises(DataError, match="git blob"):
        files.resolve_data_file("zsre", cache_dir=tmp_path / "cache")
    assert files_under(tmp_path / "cache") == []
    monkeypatch.setitem(files.REGISTRY, "zsre", dataclasses.replace(base, url=source.as_uri(), git_blob_sha1=good))
    resolved = files.resolve_data_file("zsre", cache_dir=tmp_path / "cache")
    assert resolved.path.read_bytes() == b"[]\n" and resolved.sha256 == files.file_sha256(source)


def test_download_network_error_is_data_error(tmp_path, monkeypatch, no_env_data_dir):
    missing = (tmp_path / "does_not_exist.json").as_uri()
    monkeypatch.setitem(files.REGISTRY, "counterfact", dataclasses.replace(files.REGISTRY["counterfact"], url=missing))
    with pytest.raises(DataError, match="download of .* failed"):
        files.resolve_data_file("counterfact", cache_dir=tmp_path / "cache")
    assert files_under(tmp_path / "cache") == []


def test_hub_file_download(tmp_path, monkeypatch, no_env_data_dir):
    import huggingface_hub

    fake = tmp_path / "train.parquet"
    fake.write_bytes(b"PAR1 not really")
    seen = {}

    def fake_download(**kwargs):
        seen.update(kwargs)
        return str(fake)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    resolved = files.resolve_data_file("wikipedia", cache_dir=tmp_path / "cache")
    assert seen["repo_id"] == "wikimedia/wikipedia" and seen["repo_type"] == "dataset"
    assert seen["filename"] == "20231101.en/train-00000-of-00041.parquet"
    assert resolved.path == fake and resolved.sha256 == files.file_sha256(fake) and resolved.source == "download"


# ------------------------------------------------------------------------------------------ CounterFact


def test_load_counterfact_real(cf_records, cf_raw):
    assert len(cf_records) == 5072
    by_id = {r.case_id: r for r in cf_records}
    assert len(by_id) == 5072
    first = by_id[0]
    assert first.subject == "Danielle Darrieux"
    assert first.rewrite_prompt == "The mother tongue of Danielle Darrieux is"
    assert (first.target_new, first.target_true, first.relation_id) == ("English", "French", "P103")
    assert first.neighborhood_target is None
    for record, raw in zip(cf_records, cf_raw):
        assert record.prompt.count("{}") == 1
        assert record.case_id == raw["case_id"]
        assert record.rewrite_prompt == raw["requested_rewrite"]["prompt"].format(raw["requested_rewrite"]["subject"])
        assert len(record.paraphrase_prompts) == 2 and len(record.neighborhood_prompts) == 10
        assert len(record.generation_prompts) == 10


def test_load_counterfact_with_qna(shared_data_dir, cf_records):
    records = datasets.load_counterfact(shared_data_dir / CF, qna_path=shared_data_dir / QNA)
    by_id = {r.case_id: r for r in records}
    assert by_id[0].generation_prompts[-1] == "What is the mother tongue of Danielle Darrieux?"
    assert len(by_id[0].generation_prompts) == 11
    big = next(r for r in records if r.case_id >= 1000)
    assert len(big.generation_prompts) == 10


def corrupt_cases():
    def drop_target_new_str(recs):
        del recs[1]["requested_rewrite"]["target_new"]["str"]
        return "missing field 'requested_rewrite.target_new.str'"

    def prompt_without_placeholder(recs):
        recs[1]["requested_rewrite"]["prompt"] = "The mother tongue is"
        return "'requested_rewrite.prompt'"

    def two_placeholders(recs):
        recs[1]["requested_rewrite"]["prompt"] = "{} and {} is"
        return "exactly one"

    def wrong_type(recs):
        recs[1]["neighborhood_prompts"][3] = 7
        return "field 'neighborhood_prompts[3]' must be str, got int"

    def null_subject(recs):
        recs[1]["requested_rewrite"]["subject"] = None
        return "field 'requested_rewrite.subject' must be str, got NoneType"

    def duplicate(recs):
        recs[1]["case_id"] = recs[0]["case_id"]
        return "duplicate case_id"

    return [drop_target_new_str, prompt_without_placeholder, two_placeholders, wrong_type, null_subject, duplicate]


@pytest.mark.parametrize("corrupt", corrupt_cases(), ids=lambda f: f.__name__)
def test_load_counterfact_corrupt_record(tmp_path, cf_raw, corrupt):
    records = json.loads(json.dumps(cf_raw[:3]))
    expected = corrupt(records)
    path = write_json(tmp_path / "counterfact.json", records)
    with pytest.raises(DataError) as err:
        datasets.load_counterfact(path)
    message = str(err.value)
    assert message.startswith(f"counterfact.json: record 1 (case_id {records[1]['case_id']}): ")
    assert expected in message and "\n" not in message


def test_load_counterfact_missing_case_id_and_bad_json(tmp_path, cf_raw):
    records = json.loads(json.dumps(cf_raw[:2]))
    del records[1]["case_id"]
    with pytest.raises(DataError, match=r"record 1 \(case_id \?\): missing field 'case_id'"):
        datasets.load_counterfact(write_json(tmp_path / "cf.json", records))
    (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: invalid JSON"):
        datasets.load_counterfact(tmp_path / "bad.json")
    with pytest.raises(DataError, match="JSON list"):
        datasets.load_counterfact(write_json(tmp_path / "obj.json", {"a": 1}))


# ------------------------------------------------------------------------------------------------ zsRE


def test_load_zsre_real(shared_data_dir, zsre_raw):
    records = datasets.load_zsre(shared_data_dir / ZSRE)
    assert len(records) == 1084
    assert [r.case_id for r in records] == list(range(1084))
    for record, raw in zip(records, zsre_raw):
        assert record.prompt.count("{}") == 1
        assert record.rewrite_prompt == raw["src"]
        assert record.target_new == raw["answers"][0] and record.target_true == "<|endoftext|>"
        assert record.paraphrase_prompts == [raw["rephrase"]]
        (neighborhood,) = record.neighborhood_prompts
        assert neighborhood.endswith("?") and not neighborhood.startswith("nq question:")
        assert raw["loc"] == "nq question: " + neighborhood[:-1]
        assert record.neighborhood_target == raw["loc_ans"]
        assert record.generation_prompts == [] and record.relation_id is None
    assert records[0].prompt == "What university did {} attend?"


def test_load_zsre_generation_pool(shared_data_dir):
    pool = [f"prompt {i}" for i in range(100)]
    first = datasets.load_zsre(shared_data_dir / ZSRE, generation_pool=pool)
    again = datasets.load_zsre(shared_data_dir / ZSRE, generation_pool=pool)
    assert [r.generation_prompts for r in first] == [r.generation_prompts for r in again]
    assert all(len(r.generation_prompts) == 10 and set(r.generation_prompts) <= set(pool) for r in first)
    assert len(set(r.generation_prompts[0] for r in first[:50])) > 5  # differs between records


def test_load_zsre_corrupt(tmp_path, zsre_raw):
    records = json.loads(json.dumps(zsre_raw[:3]))
    records[2]["subject"] = "Nobody In Particular"
    with pytest.raises(DataError, match=r"zsre.json: record 2 \(case_id 2\): field 'src' does not contain the subject"):
        datasets.load_zsre(write_json(tmp_path / "zsre.json", records))
    records = json.loads(json.dumps(zsre_raw[:3]))
    del records[1]["loc_ans"]
    with pytest.raises(DataError, match=r"record 1 \(case_id 1\): missing field 'loc_ans'"):
        datasets.load_zsre(write_json(tmp_path / "zsre.json", records))
    records[1]["loc_ans"] = "x"
    records[1]["answers"] = []
    with pytest.raises(DataError, match="'answers' is empty"):
        datasets.load_zsre(write_json(tmp_path / "zsre.json", records))


def test_load_zsre_braces_and_repeated_subject(tmp_path, zsre_raw):
    record = dict(zsre_raw[0], subject="Bo", src="Is Bo {the} same as Bo?")
    (loaded,) = datasets.load_zsre(write_json(tmp_path / "z.json", [record]))
    assert loaded.prompt.count("{}") == 1
    assert loaded.rewrite_prompt == "Is Bo {the} same as Bo?"


# ---------------------------------------------------------------------------------------------- orders


def test_load_order_real_and_missing_sample(shared_data_dir):
    order = datasets.load_order(shared_data_dir / CF_ORDER, "0")
    assert len(order) == 20000 and len(set(order)) == 20000 and max(order) <= 21918
    assert datasets.load_order(shared_data_dir / CF_ORDER, 3) != order
    with pytest.raises(DataError) as err:
        datasets.load_order(shared_data_dir / CF_ORDER, "mcf")
    assert "'mcf'" in str(err.value) and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in str(err.value)


def test_order_records_synthetic():
    records = [datasets.EditRecord(i, "s", "{} is", "a", "b") for i in (1, 2, 3, 5)]
    kept, skipped = datasets.order_records(records, [5, 9, 1, 7, 3])
    assert [r.case_id for r in kept] == [5, 1, 3] and skipped == 2
    kept, skipped = datasets.order_records(records, [5, 9, 1, 7, 3], limit=2)
    assert [r.case_id for r in kept] == [5, 1] and skipped == 2


def test_order_records_real(shared_data_dir, cf_records):
    order = datasets.load_order(shared_data_dir / CF_ORDER, "0")
    kept, skipped = datasets.order_records(cf_records, order)
    assert len(kept) == 4680 and skipped == 20000 - 4680
    available = {r.case_id for r in cf_records}
    assert [r.case_id for r in kept] == [i for i in order if i in available]
    limited, skipped_limited = datasets.order_records(cf_records, order, limit=100)
    assert limited == kept[:100] and skipped_limited == skipped


# ---------------------------------------------------------------------------------------------- corpora


def test_iter_corpus_texts_jsonl(tmp_path):
    lines = [{"title": "A", "text": "alpha"}, {"title": "B", "text": "beta"}]
    plain = tmp_path / "c.jsonl"
    plain.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    packed = tmp_path / "c.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(datasets.iter_corpus_texts(plain)) == ["alpha", "beta"]
    assert list(datasets.iter_corpus_texts(packed)) == ["alpha", "beta"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    texts = datasets.iter_corpus_texts(bad)
    assert next(texts) == "ok"
    with pytest.raises(DataError, match="bad.jsonl: line 2"):
        next(texts)


def test_iter_corpus_texts_real_wikipedia(shared_data_dir):
    texts = datasets.iter_corpus_texts(shared_data_dir / files.REGISTRY["wikipedia"].local_path)
    first = [next(texts) for _ in range(5)]
    assert all(isinstance(t, str) and len(t) >= 200 for t in first)


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pip install pyarrow"):
        list(datasets.iter_corpus_texts(path))


# ----------------------------------------------------------------------- EasyEdit / KnowEdit record schemas

EASYEDIT_CF = [f"counterfact/easyedit_schema/counterfact-{split}.json" for split in ("edit", "train", "val")]
KNOWEDIT_ZSRE = "zsre/knowedit/ZsRE-test-all.json"


@pytest.fixture(scope="module")
def easyedit_raw(shared_data_dir):
    return json.loads((shared_data_dir / EASYEDIT_CF[0]).read_text(encoding="utf-8"))


def test_easyedit_counterfact_records_are_the_rome_records_with_one_prompt_each(shared_data_dir, cf_records):
    from encore.data.record_formats import load_records

    records, info = load_records(shared_data_dir / EASYEDIT_CF[0], "counterfact")
    assert info["schema"] == "easyedit" and info["records"] == len(records) == 10_000 and info["own_case_ids"]
    assert any("generation entropy (GE) is not measured" in note for note in info["notes"])
    first = records[0]
    assert (first.case_id, first.subject, first.prompt) == (0, "Danielle Darrieux", "The mother tongue of {} is")
    assert (first.target_new, first.target_true, first.generation_prompts) == ("English", "French", [])
    assert first.paraphrase_prompts == ["Where Danielle Darrieux is from, people speak the language of"]
    assert first.neighborhood_prompts == ["Michel Rocard is a native speaker of"] and first.neighborhood_target is None
    # every record also in the ROME-schema file has its fact, and its locality prompt is one of the 10 neighbours
    rome = {record.case_id: record for record in cf_records}
    shared = [record for record in records if record.case_id in rome]
    assert len(shared) > 1000
    for record in shared:
        full = rome[record.case_id]
        assert (record.rewrite_prompt, record.subject) == (full.rewrite_prompt, full.subject)
        assert (record.target_new, record.target_true) == (full.target_new, full.target_true)
        assert record.neighborhood_prompts[0] in full.neighborhood_prompts


def test_schema_is_detected_per_file_and_named_when_unknown(shared_data_dir, tmp_path, easyedit_raw):
    from encore.data.record_formats import detect_schema

    assert detect_schema(json.loads((shared_data_dir / CF).read_text()), "cf") == "rome"
    assert detect_schema(json.loads((shared_data_dir / ZSRE).read_text()), "zsre") == "mend"
    assert detect_schema(easyedit_raw, "ee") == "easyedit"
    assert detect_schema(json.loads((shared_data_dir / KNOWEDIT_ZSRE).read_text()), "ke") == "easyedit"
    with pytest.raises(DataError, match=r"^odd.json: record 0 fits no known schema \(fields \['question'\]\)"):
        detect_schema([{"question": "?"}], "odd.json")
    mixed = write_json(tmp_path / "mixed.json", [easyedit_raw[0], {"requested_rewrite": {}, "case_id": 5}])
    from encore.data.record_formats import load_records

    with pytest.raises(
        DataError, match=r"^mixed.json: record 1 \(case_id 5\): does not fit the file's easyedit schema"
    ):
        load_records(mixed, "counterfact")


def test_easyedit_zsre_record_maps_as_the_mend_record_but_edits_to_its_target(shared_data_dir, zsre_raw, tmp_path):
    """EasyEdit's ZsreDataset writes a MEND record as prompt=src, target_new=alt, ground_truth=answers[0],
    rephrase_prompt, locality_prompt=loc ("nq question: ..."), locality_ground_truth=loc_ans."""
    from encore.data.record_formats import load_records

    flat = [{"case_id": i, "prompt": r["src"], "subject": r["subject"], "target_new": r["alt"],
             "ground_truth": r["answers"][0], "rephrase_prompt": r["rephrase"], "locality_prompt": r["loc"],
             "locality_ground_truth": r["loc_ans"]} for i, r in enumerate(zsre_raw[:20])]  # fmt: skip
    records, info = load_records(write_json(tmp_path / "zsre-easyedit.json", flat), "zsre")
    assert info["notes"] == []
    for record, mend, raw in zip(records, datasets.load_zsre(shared_data_dir / ZSRE)[:20], zsre_raw):
        assert (record.prompt, record.subject, record.paraphrase_prompts) == (mend.prompt, mend.subject,
                                                                              mend.paraphrase_prompts)  # fmt: skip
        assert (record.neighborhood_prompts, record.neighborhood_target) == (mend.neighborhood_prompts,
                                                                              mend.neighborhood_target)  # fmt: skip
        assert (record.target_new, record.target_true) == (raw["alt"], raw["answers"][0])


def test_knowedit_zsre_scores_the_first_locality_prompt_and_names_the_rest(shared_data_dir, tmp_path):
    from encore.data.record_formats import load_records

    raw = json.loads((shared_data_dir / KNOWEDIT_ZSRE).read_text())[:5]
    records, info = load_records(write_json(tmp_path / "ke.json", raw), "zsre")
    first = records[0]
    assert (first.case_id, first.prompt, first.target_new, first.target_true) == (
        0, "Which family does {} belong to?", "Noctuidae", "Aspidoceratidae")  # fmt: skip
    assert first.paraphrase_prompts == ["What family are Epaspidoceras?"]
    assert (first.neighborhood_prompts, first.neighborhood_target) == (["The taxon rank of Epaspidoceras is"], "genus")
    extra = sum(len(r["locality"]["Relation_Specificity"]) - 1 for r in raw)
    assert info["notes"] == [f"{extra} KnowEdit locality prompts after each record's first are not scored",
                             "portability prompts are not an ENCORE metric: not scored"]  # fmt: skip
    # as CounterFact, KnowEdit's own-answer locality prompts cannot be CounterFact's NS: none is kept, and it is said
    records, info = load_records(write_json(tmp_path / "ke.json", raw), "counterfact")
    assert all(record.neighborhood_prompts == [] for record in records)
    assert "KnowEdit locality prompts carry answers of their own: not scored as CounterFact's NS" in info["notes"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ground_truth": None}, r"missing field 'ground_truth'"),
        ({"locality_ground_truth": "German"}, r"locality_ground_truth 'German' differs from ground_truth 'French'"),
        ({"subject": "Nobody"}, r"field 'prompt' does not contain the subject 'Nobody'"),
        ({"case_id": "0"}, r"field 'case_id' must be int, got str"),
        ({"ground_truth": 3}, r"field 'ground_truth' must be str or a list of str, got int"),
    ],
)
def test_a_bad_easyedit_record_is_named_in_a_one_line_error(tmp_path, easyedit_raw, change, message):
    from encore.data.record_formats import load_records

    record = {key: value for key, value in {**easyedit_raw[0], **change}.items() if value is not None}
    with pytest.raises(DataError, match=r"^bad.json: record 0 \(case_id 0\): " + message) as raised:
        load_records(write_json(tmp_path / "bad.json", [record]), "counterfact")
    assert "\n" not in str(raised.value)


def test_records_files_give_the_authors_order_over_all_21919_counterfact_records(shared_data_dir, tmp_path):
    from encore.data.requests import load_requests

    records, provenance = load_requests("counterfact", shared_data_dir, tmp_path, "0", None, records_files=EASYEDIT_CF)
    order = datasets.load_order(shared_data_dir / CF_ORDER, "0")
    assert [record.case_id for record in records] == order and provenance["order_ids_not_available"] == 0
    assert provenance["records_available"] == 21_919 and provenance["order"] == "authors"
    assert [entry["schema"] for entry in provenance["records_files"]] == ["easyedit"] * 3
    assert provenance["records_files"][0]["sha256"] == files.file_sha256(shared_data_dir / EASYEDIT_CF[0])
    rome, _ = load_requests("counterfact", shared_data_dir, tmp_path, "0", 50)  # the registered 5,072 records
    by_id = {record.case_id: record for record in records}
    assert [by_id[r.case_id].rewrite_prompt for r in rome] == [r.rewrite_prompt for r in rome]
    # zsRE records without ids of their own are edited in the files' order (as the registered local subset)
    zsre, provenance = load_requests("zsre", shared_data_dir, tmp_path, "0", None, records_files=[ZSRE])
    registered, _ = load_requests("zsre", shared_data_dir, tmp_path, "0", None)
    assert zsre == registered and provenance["order"] == "file"
    with pytest.raises(DataError, match=r"^records_files: nothere.json not found \(looked in .* or the working dir"):
        load_requests("counterfact", shared_data_dir, tmp_path, "0", None, records_files=["nothere.json"])
    with pytest.raises(DataError, match=r"records_files: case_id 0 is in .*counterfact-edit.json and in"):
        load_requests("counterfact", shared_data_dir, tmp_path, "0", None, records_files=EASYEDIT_CF[:1] * 2)


def test_missing_metrics_name_what_the_records_cannot_support(cf_records, easyedit_raw, tmp_path):
    from encore.data.record_formats import load_records, missing_metrics

    assert missing_metrics(cf_records[:10], "counterfact", generation=True) == {}
    easyedit, _ = load_records(write_json(tmp_path / "ee.json", easyedit_raw[:10]), "counterfact")
    assert list(missing_metrics(easyedit, "counterfact", generation=True)) == ["GE"]
    assert missing_metrics(easyedit, "counterfact", generation=False) == {}
    bare = [dataclasses.replace(record, paraphrase_prompts=[], neighborhood_prompts=[]) for record in easyedit]
    assert list(missing_metrics(bare, "counterfact", generation=False)) == ["PS", "NS", "S"]
