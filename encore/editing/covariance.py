"""Key second moments C0 = (1/N) sum_t k_t k_t^T over corpus tokens (algorithms.md §3).

k_t is the input of the edited down-projection at every non-padding token of ``n_samples`` corpus
documents, chosen by a fixed permutation (random.Random(1)) and truncated to ``max_length`` tokens.
All requested layers are collected in one pass that stops after the highest one; sums accumulate in
float32. Results are cached per layer under a content-addressed name (model identity, layer, corpus
checksum, samples, max length, dtype) with a checksum of the tensor; a hit never recomputes. A cache file
that cannot be read or fails its checksum raises ``StatisticsCacheError`` (one line, naming the file); the
statistics rule and the edit segments then recompute it (same key, so the same file and, on the same device,
the same bits). C0 imported from the reference code's statistics files enters the same cache under a key naming the
file it came from (encore.editing.statistics_files).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from encore.cli import one_line
from encore.models.architecture import architecture_of, down_proj_module
from encore.models.hooks import record_inputs, run_until
from encore.models.tokens import pad_id, pad_right
from encore.progress import Progress

STATISTICS_VERSION = 1  # bump when the definition of the statistic changes


def statistics_key(
    model_identity: dict, layer: int, corpus_sha256: str, n_samples: int, max_length: int, dtype: str
) -> dict:
    return {
        "statistic": "second_moment_of_down_proj_inputs",
        "version": STATISTICS_VERSION,
        "model": model_identity,
        "layer": layer,
        "corpus_sha256": corpus_sha256,
        "n_samples": n_samples,
        "max_length": max_length,
        "dtype": dtype,
    }


def statistics_path(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    model_name = str(key["model"].get("name") or key["model"].get("repo_id") or "model").replace("/", "--")
    return Path(cache_dir) / model_name / f"layer{key['layer']:02d}-{digest}.safetensors"


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().cpu().numpy().tobytes()).hexdigest()


class StatisticsCacheError(ValueError):
    """A statistics cache file is unreadable, corrupted or made for another setting (``path`` says which)."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}; delete it and rerun to recompute it")
        self.path, self.problem = Path(path), problem


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def save_statistic(path: Path, key: dict, second_moment: torch.Tensor, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"key": json.dumps(key, sort_keys=True), "count": str(count), "sha256": tensor_sha256(second_moment)}
    # per process (parallel jobs may write the same file); those a killed process of this host left are removed
    prefix = f"{path.stem}.tmp-{socket.gethostname()}-"
    for stale in path.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix) :]
        if pid.isdigit() and not _running(int(pid)):
            stale.unlink(missing_ok=True)
    temporary = path.with_name(f"{prefix}{os.getpid()}")
    try:
        save_file({"second_moment": second_moment.contiguous()}, str(temporary), metadata=metadata)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def load_statistic(path: Path, key: dict) -> torch.Tensor:
    """Load C0, checking that the file was made for ``key`` and that its checksum matches; any failure raises
    StatisticsCacheError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            stored_key = json.loads(metadata.get("key", "{}"))
            second_moment = handle.get_tensor("second_moment") if stored_key == key else None
    except FileNotFoundError:
        raise StatisticsCacheError(path, "missing") from None
    except Exception as error:  # truncated or garbled: safetensors, JSON or I/O errors
        raise StatisticsCacheError(path, f"unreadable ({one_line(error)})") from None
    if stored_key != key:
        raise StatisticsCacheError(path, "statistics were computed for a different setting")
    if tensor_sha256(second_moment) != metadata.get("sha256"):
        raise StatisticsCacheError(path, "checksum mismatch (file corrupted)")
    return second_moment


def cached_statistic(path: Path, key: dict) -> torch.Tensor | None:
    """The cached statistic at ``path``, or None when it is missing or fails verification (said in the log)."""
    if not path.exists():
        return None
    try:
        return load_statistic(path, key)
    except StatisticsCacheError as error:
        print(f"{error.path}: {error.problem}; recomputing it", flush=True)
        return None


def sample_documents(texts: Sequence[str], n_samples: int, seed: int = 1) -> list[str]:
    """The first n_samples documents of a fixed pseudo-random permutation (reference: random seed 1)."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order[:n_samples]]


def statistic_count(path: Path) -> int:
    """The number of tokens n a cached C0 was averaged over (0 for derived files such as projectors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {}).get("count", 0))
    except Exception as error:  # truncated or garbled
        raise StatisticsCacheError(path, f"unreadable ({one_line(error)})") from None


@torch.no_grad()
def second_moments(
    model, tokenizer, documents: Sequence[str], layers: Sequence[int], max_length: int, batch_size: int = 8
) -> tuple[dict[int, torch.Tensor], int]:
    """Return ({layer: C0 (float32, d_ff x d_ff)}, number of tokens) in one pass over the documents."""
    sums, count = second_moment_sums(model, tokenizer, documents, layers, max_length, batch_size)
    return {layer: (sums[layer] / count) for layer in layers}, count


@torch.no_grad()
def second_moment_sums(
    model, tokenizer, documents: Sequence[str], layers: Sequence[int], max_length: int, batch_size: int = 8
) -> tuple[dict[int, torch.Tensor], int]:
    """({layer: S = sum_t k_t k_t^T (float32, d_ff x d_ff)}, n tokens): C0 = S / n (``second_moments``)."""
    modules = {layer: down_proj_module(model, layer) for layer in layers}
    last_block = model.get_submodule(architecture_of(model).block(max(layers)))
    sums = {layer: None for layer in layers}
    count = 0
    encoded = [tokenizer(text, truncation=True, max_length=max_length).input_ids for text in documents]
    encoded = [ids for ids in encoded if ids]
    progress = Progress(len(encoded), f"statistics (layers {', '.join(map(str, layers))})", "documents")
    for start in range(0, len(encoded), batch_size):
        batch = pad_right(encoded[start : start + batch_size], pad_id(tokenizer), model.device)
        with record_inputs(modules) as seen:
            run_until(model, last_block, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        mask = batch.attention_mask.bool()
        for layer in layers:
            keys = seen[layer][mask].float()
            product = keys.T @ keys
            sums[layer] = product if sums[layer] is None else sums[layer] + product
        count += int(mask.sum())
        progress.update(len(batch.lengths), tokens=count)
    progress.close()
    return sums, count


def load_or_compute_statistics(
    model,
    tokenizer,
    model_identity: dict,
    layers: Sequence[int],
    documents_loader,
    corpus_sha256: str,
    n_samples: int,
    max_length: int,
    cache_dir: Path,
    dtype: str = "float32",
    batch_size: int = 8,
) -> dict[int, Path]:
    """Ensure a cached C0 exists for every layer; compute the missing ones in a single pass.

    ``documents_loader()`` returns the list of corpus texts (only called on a cache miss).
    Returns {layer: path of the cache file}.
    """
    paths, missing = {}, []
    for layer in layers:
        key = statistics_key(model_identity, layer, corpus_sha256, n_samples, max_length, dtype)
        paths[layer] = statistics_path(cache_dir, key)
        if cached_statistic(paths[layer], key) is None:  # missing, or corrupted: recomputed
            missing.append(layer)
    if missing:
        documents = sample_documents(documents_loader(), n_samples)
        moments, count = second_moments(model, tokenizer, documents, missing, max_length, batch_size)
        for layer in missing:
            key = statistics_key(model_identity, layer, corpus_sha256, n_samples, max_length, dtype)
            save_statistic(paths[layer], key, moments[layer].to(getattr(torch, dtype)).cpu(), count)
    return paths


def load_or_compute_projector(statistic_path: Path, key: dict, threshold: float, device="cpu") -> torch.Tensor:
    """AlphaEdit's null-space projector of a cached C0, cached next to it (same checksum scheme). The float64
    eigendecomposition runs on ``device`` (a GPU does d_ff = 14336 in seconds; two CPU cores take hours)."""
    from encore.editing.editors import null_space_projector

    projector_key = {**key, "derived": "null_space_projector", "threshold": threshold}
    path = Path(statistic_path).with_name(f"{Path(statistic_path).stem}-projector-{threshold:g}.safetensors")
    cached = cached_statistic(path, projector_key)
    if cached is not None:
        return cached
    projector = null_space_projector(load_statistic(Path(statistic_path), key).to(device), threshold).float().cpu()
    save_statistic(path, projector_key, projector, count=0)
    return projector
