"""Tests for encore.data.files: the registry's checksums, resolving a registered file (local, corrupt, missing, the
shared data directory), downloads checked by sha256 or git blob sha1, and a file from the Hugging Face hub."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from encore.data import datasets, files
from encore.data.files import DataError

CF = "counterfact/counterfact_rome_schema_merged.json"


@pytest.fixture()
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("ENCORE_DATA_DIR", raising=False)


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
