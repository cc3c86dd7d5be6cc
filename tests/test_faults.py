"""Fault injection (docs/faults.md): every fault either resumes to the results of an uninterrupted run (bitwise
where deterministic) or stops with a one-line error naming the file and the fix.

The end-to-end tests run the workflow on a tiny local model. Faults inside a rule script are injected by a
``sitecustomize`` module on PYTHONPATH that wraps one function of the job process (``ENCORE_TEST_FAULT``): it
either stops there until the test SIGKILLs the whole run, or fails like a full disk. Kills therefore land at a
chosen point of a job (after an output was written, before the job finished), not at a random time.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import data_dir, make_tiny_llama
from pipeline_helpers import args_for, make_workdir, save_tiny_model, snakemake, snakemake_command

from encore.data import datasets, files
from encore.editing.covariance import StatisticsCacheError, load_or_compute_statistics, load_statistic
from encore.editing.sequential import EditorState
from encore.editing.snapshots import KEYS, MANIFEST, WEIGHTS, SnapshotError, load_snapshot, save_snapshot
from encore.models import loading
from encore.models.loading import load_model

RUN = {
    "variants": ["plain"],
    "num_edits": 4,
    "batch_size": 2,
    "snapshot_every": 1,  # two segments: edits_00002, edits_00004
    "threads": 1,
    "evaluation": {"generation": "none", "downstream": "none", "analysis": "final", "analysis_records": 3},
}
RESULTS = Path("results") / "tiny"
RUN_DIR = RESULTS / "memit" / "plain" / "order0"
SNAPSHOTS = RUN_DIR / "snapshots"
SNAPSHOT_FILES = ["manifest.json", "weights.safetensors", "keys.safetensors", "ledger.csv", "norms.csv"]

SITECUSTOMIZE = '''
"""Fault injection for tests/test_faults.py: only with ENCORE_TEST_FAULT set, only in the rule script it names."""
import json
import os
import sys

_fault = json.loads(os.environ.get("ENCORE_TEST_FAULT") or "null")
if _fault and sys.argv and sys.argv[0].endswith(f".{_fault['script']}.py"):
    import errno
    import importlib
    import time

    _module, _, _attribute = _fault["target"].partition(":")
    _owner = importlib.import_module(_module)
    *_parents, _name = _attribute.split(".")
    for _parent in _parents:
        _owner = getattr(_owner, _parent)
    _original = getattr(_owner, _name)

    def _injected(*args, **kwargs):
        target = str(args[1]) if len(args) > 1 else ""  # save_file(tensors, path), DataFrame.to_csv(self, path)
        if _fault["match"] not in target:
            return _original(*args, **kwargs)
        if _fault["action"] == "disk-full":  # what a full disk leaves: part of the file, then the error
            with open(target, "wb") as handle:
                handle.write(b"\\0" * 4096)
            if _fault.get("error") == "safetensors":  # what safetensors raises on a full disk (a real tmpfs)
                from safetensors import SafetensorError

                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        result = _original(*args, **kwargs)  # "stop": the output is written, the job is not finished
        open(_fault["flag"], "w").close()
        time.sleep(600)  # the test kills the whole run here
        return result

    setattr(_owner, _name, _injected)
'''

# ------------------------------------------------------------------------------------------ fixtures / helpers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return save_tiny_model(root / "tiny-llama"), root / "resources"


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """An uninterrupted run: what every run with a fault must end with."""
    model_dir, resources = tiny
    root = tmp_path_factory.mktemp("reference")
    snakemake(*make_workdir(root, model_dir, resources, **RUN))
    return root


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hooks")
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def copy_of(reference: Path, root: Path) -> list[str]:
    """A copy of the finished reference run, mtimes and Snakemake metadata included: nothing to do there."""
    shutil.copytree(reference, root, symlinks=True)
    return args_for(root)


def forget_last_segment(root: Path) -> None:
    """As if the run had stopped after its first segment: the last snapshot and everything after it removed."""
    for path in (SNAPSHOTS / "edits_00004", RESULTS / "tables", RESULTS / "collected", RESULTS / "paper"):
        shutil.rmtree(root / path)
    for path in (root / RUN_DIR / "metrics").glob("edits_00004.*"):
        path.unlink()


def start(args, output: Path, hooks: Path | None = None, fault: dict | None = None) -> subprocess.Popen:
    command, env = snakemake_command(*args)
    if fault is not None:
        env = {
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")])),
            "ENCORE_TEST_FAULT": json.dumps(fault),
        }
    with open(output, "w") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def run_with_fault(args, hooks: Path, fault: dict, check=False) -> subprocess.CompletedProcess:
    command, env = snakemake_command(*args)
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))}
    env["ENCORE_TEST_FAULT"] = json.dumps(fault)
    return subprocess.run(command, env=env, capture_output=True, text=True, check=check)


def kill_at(args, root: Path, hooks: Path, fault: dict, timeout: float = 300) -> None:
    """Run until the faulty job reaches its stop, then SIGKILL Snakemake and every job (one process group)."""
    fault = {**fault, "action": "stop", "flag": str(root.parent / f"{root.name}.{fault['script']}.stopped")}
    output = root.parent / f"{root.name}.{fault['script']}.out"
    process = start(args, output, hooks, fault)
    deadline = time.time() + timeout
    while not Path(fault["flag"]).exists():
        if process.poll() is not None or time.time() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"the run ended before the stop in {fault['script']}:\n{output.read_text()[-3000:]}")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


VOLATILE = re.compile(r"(_s$|s_per_edit|seconds|time|^code$)")  # timings and code versions


def comparable(path: Path):
    """What must be equal between two runs: tensor files bitwise, CSVs without timing rows and columns,
    manifests without checksums (of ledgers with timings), code versions and cache paths; None: not compared."""
    if path.suffix == ".safetensors":
        return tensors_digest(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
        if "protocol" in frame:
            frame = frame[frame["protocol"] != "timing"]
        return frame[[column for column in frame.columns if not VOLATILE.search(column)]].to_csv(index=False)
    if path.name == MANIFEST:
        manifest = json.loads(path.read_text())
        return json.dumps({k: v for k, v in manifest.items() if k not in ("files", "code", "statistics")})
    if path.name == "index.md":
        return path.read_text()
    return None


def results_of(root: Path) -> dict:
    base = root / RESULTS
    return {str(path.relative_to(base)): comparable(path) for path in sorted(base.rglob("*")) if path.is_file()}


def assert_same_results(root: Path, reference: Path) -> None:
    mine, expected = results_of(root), results_of(reference)
    assert sorted(mine) == sorted(expected)
    assert [name for name in mine if mine[name] != expected[name]] == []
    assert "Nothing to be done" in snakemake(*args_for(root), "-n").stdout


def tensors_digest(path: Path) -> str:
    """Bitwise identity of a safetensors file's tensors and metadata (its header orders metadata at random)."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as handle:
        digest.update(json.dumps(handle.metadata(), sort_keys=True).encode())
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name)
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def statistics_files(resources: Path) -> dict[str, str]:
    base = resources / "statistics"
    return {str(path.relative_to(base)): tensors_digest(path) for path in sorted(base.rglob("*.safetensors"))}


def the_error(result, *needles: str) -> str:
    """The one console line that carries the error: it must name the file and the fix."""
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if all(needle in line for needle in needles)]
    assert result.returncode != 0 and lines, f"no line with {needles}:\n{output[-4000:]}"
    return lines[0]


def flip_a_bit(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ----------------------------------------------------------------------------------------------- 1. SIGKILL

KILL_POINTS = [
    # the statistics cache file written under its temporary name, not yet renamed
    {"script": "statistics", "target": "encore.editing.covariance:save_file", "match": ".tmp"},
    # the metrics of the last snapshot written, the job not yet recorded as finished
    {"script": "evaluate_snapshot", "target": "pandas:DataFrame.to_csv", "match": "edits_00004.csv"},
    # the first of the collected CSVs written, the others not
    {"script": "collect_results", "target": "pandas:DataFrame.to_csv", "match": "collected/metrics.csv"},
    # the first paper table written, no figures, no index
    {"script": "paper_outputs", "target": "pandas:DataFrame.to_csv", "match": "table01"},
]


@pytest.mark.slow
def test_killed_in_statistics_evaluation_and_report_rules_resumes_to_the_same_results(tiny, reference, hooks, tmp_path):
    model_dir, reference_resources = tiny
    root, resources = tmp_path / "run", tmp_path / "resources"  # caches of its own: statistics computed here
    args = make_workdir(root, model_dir, resources, **RUN)
    for number, fault in enumerate(KILL_POINTS):
        kill_at(args, root, hooks, fault)
        if number == 0:  # the killed controller leaves its lock behind; the message says what to do
            refused = snakemake(*args, check=False)
            assert refused.returncode != 0 and "--unlock" in refused.stdout + refused.stderr
        snakemake(*args, "--unlock")
    snakemake(*args)
    assert_same_results(root, reference)
    assert statistics_files(resources) == statistics_files(reference_resources)
    assert not [path for path in (resources / "statistics").rglob("*") if ".tmp" in path.name]  # none left behind


# ------------------------------------------------------------------------------------------ 2. two runs at once


@pytest.mark.slow
def test_a_second_run_on_the_same_directory_is_refused_and_the_first_finishes(reference, tmp_path):
    root = tmp_path / "run"
    args = copy_of(reference, root)
    forget_last_segment(root)
    first = start(args, tmp_path / "first.out")
    deadline = time.time() + 120
    while not list((root / ".snakemake" / "locks").glob("*.lock")):  # the first run holds the directory
        assert first.poll() is None and time.time() < deadline, (tmp_path / "first.out").read_text()[-3000:]
        time.sleep(0.05)
    second = snakemake(*args, check=False)
    assert second.returncode != 0
    assert "Error: Directory cannot be locked" in second.stdout + second.stderr
    assert first.wait(timeout=600) == 0, (tmp_path / "first.out").read_text()[-3000:]
    assert_same_results(root, reference)


# ------------------------------------------------------------------------------------- 4. corrupted files


def two_snapshots(directory: Path, model) -> EditorState:
    """Two segments of two edits each (layers 1 and 2, random keys), saved as the pipeline saves them."""
    state = EditorState.initial([["{}"]], [1, 2], 96)
    previous = None
    for edits in (2, 4):
        state.segment_keys = {layer: [torch.randn(2, 96)] for layer in (1, 2)}
        state.edits_done, state.batches_done = edits, edits // 2
        save_snapshot(
            directory / f"edits_{edits:05d}", model, state, [1, 2], {"model": {"name": "t"}}, previous=previous
        )
        previous = directory / f"edits_{edits:05d}"
    return state


@pytest.mark.parametrize("damage", [flip_a_bit, truncate], ids=["bit-flip", "truncated"])
@pytest.mark.parametrize("name", [WEIGHTS, KEYS])
def test_a_corrupted_snapshot_file_is_named_with_the_fix(tmp_path, name, damage):
    two_snapshots(tmp_path, make_tiny_llama(64, layers=3))
    damage(tmp_path / "edits_00002" / name)
    # loading the snapshot itself (evaluation, or resuming from it) and, for its keys, resuming after it
    users = [tmp_path / "edits_00002"] + ([tmp_path / "edits_00004"] if name == KEYS else [])
    for directory in users:
        with pytest.raises(SnapshotError) as error:
            load_snapshot(directory, state_device="cpu")
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{tmp_path / 'edits_00002' / name}: checksum mismatch")
        assert f"delete {tmp_path / 'edits_00002'} and rerun" in message


@pytest.mark.slow
def test_a_corrupted_snapshot_stops_the_next_segment_and_the_fix_resumes(reference, tmp_path):
    root = tmp_path / "run"
    args = copy_of(reference, root)
    forget_last_segment(root)
    flip_a_bit(root / SNAPSHOTS / "edits_00002" / KEYS)
    failed = snakemake(*args, check=False)
    line = the_error(failed, "edit_segment failed", "edits_00002/keys.safetensors: checksum mismatch")
    assert "delete results/tiny/memit/plain/order0/snapshots/edits_00002 and rerun" in line
    shutil.rmtree(root / SNAPSHOTS / "edits_00002")  # the fix the message gives
    snakemake(*args)
    assert_same_results(root, reference)


@pytest.mark.parametrize("damage", [flip_a_bit, truncate], ids=["bit-flip", "truncated"])
def test_a_corrupted_statistics_cache_is_named_and_recomputed(tiny, tmp_path, damage):
    model_dir, _ = tiny
    loaded = load_model(model_dir)
    corpus = files.resolve_data_file("wikipedia", data_dir(), tmp_path / "data")
    documents = list(datasets.iter_corpus_texts(corpus.path))[:200]

    def statistics():
        return load_or_compute_statistics(
            loaded.model, loaded.tokenizer, loaded.identity, [1, 2], lambda: documents, "corpus", 8, 32, tmp_path
        )

    path = statistics()[1]
    key = json.loads(load_file_metadata(path)["key"])
    original = tensors_digest(path)
    damage(path)
    with pytest.raises(StatisticsCacheError) as error:
        load_statistic(path, key)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert message.endswith("; delete it and rerun to recompute it")
    assert statistics()[1] == path and tensors_digest(path) == original  # recomputed, bitwise the same


def load_file_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.mark.slow
def test_a_corrupted_statistics_cache_is_recomputed_by_the_next_segment(tiny, reference, tmp_path):
    _, resources = tiny
    root = tmp_path / "run"
    args = copy_of(reference, root)
    forget_last_segment(root)
    path = Path(json.loads((root / RESULTS / "statistics" / "memit.json").read_text())["layers"]["1"]["path"])
    original, digest = path.read_bytes(), tensors_digest(path)
    try:
        truncate(path)
        snakemake(*args)
        assert tensors_digest(path) == digest
        log = (root / "logs" / "tiny" / "memit" / "plain" / "order0" / "edit_00004.log").read_text()
        assert f"{path}: unreadable" in log and "recomputing the statistics" in log
    finally:
        path.write_bytes(original)
    assert_same_results(root, reference)


@pytest.fixture()
def fake_packaged_model(monkeypatch, tmp_path):
    """A packaged model whose conversion writes a small model.safetensors; conversions are counted."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" * 100)
    entry = loading.PackagedModel(
        name="fake-model",
        requirements=("fake==1",),
        parts=(("fake", "fake.gguf"),),
        gguf_file="fake.gguf",
        sha256=sha256(gguf),
        size=gguf.stat().st_size,
    )
    monkeypatch.setitem(loading.PACKAGED_MODELS, entry.name, entry)
    monkeypatch.setattr(loading, "_locate_parts", lambda entry: [gguf])
    conversions = []

    def convert(source: Path, target: Path) -> None:
        conversions.append(source)
        target.mkdir(parents=True)
        torch.manual_seed(0)
        from safetensors.torch import save_file

        save_file({"w": torch.randn(64, 64)}, str(target / "model.safetensors"))
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert", convert)
    return entry.name, tmp_path / "cache", conversions


@pytest.mark.parametrize("damage", [flip_a_bit, truncate], ids=["bit-flip", "truncated"])
def test_a_corrupted_model_cache_is_rebuilt(fake_packaged_model, capsys, damage):
    name, cache, conversions = fake_packaged_model
    dense = loading.prepare_packaged_model(name, cache)
    manifest = json.loads((dense / loading.MANIFEST).read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    original = (dense / "model.safetensors").read_bytes()
    assert loading.prepare_packaged_model(name, cache) == dense and len(conversions) == 1  # verified, reused

    damage(dense / "model.safetensors")
    assert loading.prepare_packaged_model(name, cache) == dense
    assert len(conversions) == 2 and (dense / "model.safetensors").read_bytes() == original
    assert f"{dense / 'model.safetensors'} fails its sha256 check (corrupted); rebuilding it" in capsys.readouterr().err


def test_a_model_cache_without_file_checksums_gets_them_without_reconversion(fake_packaged_model):
    name, cache, conversions = fake_packaged_model
    dense = loading.prepare_packaged_model(name, cache)
    manifest = json.loads((dense / loading.MANIFEST).read_text())
    (dense / loading.MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != "files"}))
    assert loading.prepare_packaged_model(name, cache) == dense and len(conversions) == 1
    assert json.loads((dense / loading.MANIFEST).read_text()) == manifest


@pytest.mark.slow
def test_a_corrupted_collected_csv_stops_the_report_and_the_fix_recollects(reference, tmp_path):
    root = tmp_path / "run"
    args = copy_of(reference, root)
    collected = root / RESULTS / "collected" / "metrics.csv"
    text = collected.read_text()
    collected.write_text(text.replace("25.0", "75.0", 1))  # one changed digit: still a valid CSV
    assert collected.read_text() != text
    failed = snakemake(*args, check=False)
    line = the_error(failed, "paper_outputs failed", "collected/metrics.csv: checksum differs from sha256.json")
    assert line.endswith("delete it and rerun snakemake to collect the results again")
    collected.unlink()  # the fix the message gives
    snakemake(*args)
    assert_same_results(root, reference)


# -------------------------------------------------------------------------------------------- 5. disk full


def test_a_full_disk_while_writing_a_snapshot_keeps_the_previous_one(monkeypatch, tmp_path):
    from encore.editing import snapshots

    model = make_tiny_llama(64, layers=3)
    state = two_snapshots(tmp_path, model)
    first = tmp_path / "edits_00004"
    before = {name: sha256(first / name) for name in (MANIFEST, WEIGHTS, KEYS)}
    real_save = snapshots.save_file

    def full_disk(tensors, filename, metadata=None):
        if filename.endswith(KEYS + ".tmp"):
            Path(filename).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(snapshots, "save_file", full_disk)
    second = tmp_path / "edits_00006"
    state.edits_done = 6
    with pytest.raises(SnapshotError) as error:
        save_snapshot(second, model, state, [1, 2], {"model": {"name": "t"}}, previous=first)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{second / KEYS}: cannot write the snapshot")
    assert f"No space left on device); free space on the disk holding {second} and rerun" in message
    assert not list(tmp_path.rglob("*.tmp")) and not (second / MANIFEST).exists()
    assert {name: sha256(first / name) for name in before} == before
    load_snapshot(first, state_device="cpu")


@pytest.mark.slow
def test_a_full_disk_in_a_segment_stops_with_the_fix_and_the_rerun_resumes(reference, hooks, tmp_path):
    root = tmp_path / "run"
    args = copy_of(reference, root)
    forget_last_segment(root)
    first = root / SNAPSHOTS / "edits_00002"
    before = {name: sha256(first / name) for name in SNAPSHOT_FILES}
    fault = {
        "script": "edit_segment",
        "target": "encore.editing.snapshots:save_file",
        "match": "edits_00004/weights",
        "action": "disk-full",
        "error": "safetensors",
    }
    failed = run_with_fault(args, hooks, fault)
    line = the_error(failed, "edit_segment failed", "edits_00004/weights.safetensors: cannot write the snapshot")
    assert "No space left on device (os error 28)); free space on the disk holding" in line
    assert line.endswith("and rerun: the run resumes from the previous snapshot, which is intact")
    assert {name: sha256(first / name) for name in SNAPSHOT_FILES} == before
    load_snapshot(first, state_device="cpu")
    assert not (root / SNAPSHOTS / "edits_00004").exists() or not any((root / SNAPSHOTS / "edits_00004").iterdir())
    snakemake(*args)  # space freed
    assert_same_results(root, reference)
