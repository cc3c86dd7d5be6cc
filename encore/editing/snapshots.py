"""Snapshots: the edited layers' weights plus what resuming needs, with checksums (safetensors + JSON).

A snapshot directory holds ``weights.safetensors`` (W_l, d_model x d_ff, per edited layer, in the model's
dtype), ``keys.safetensors`` (the keys K of this segment's batches per layer, in the model's dtype, with
the batch sizes and the torch RNG state) and ``manifest.json`` (model identity, layers, edits done,
edited case ids, context templates, hyperparameters, provenance, the previous snapshot of the chain and
the sha256 of every file). The manifest is written last, so a directory without one is incomplete.

Storage choice: S_P = sum over all previous batches of K K^T (float64, d_ff x d_ff per layer; 8.2 GB for
Llama-3-8B's five layers) is not stored. Each snapshot keeps only its own segment's keys (d_ff x edits,
~57 MB per layer per 1,000 edits for Llama-3-8B in float32), and S_P is rebuilt by replaying
``accumulate_keys`` over the chain of snapshots, in the original order: the same operations on the same
device, so a resumed run is bitwise identical to an uninterrupted one. Evaluation reads the weights only.
Format 1 snapshots (S_P stored in ``state.safetensors``) are still read.

Editors that need the unedited weights (MEMIT+PRUNE: EditorState.original_weights) get ``original.safetensors``
(W_l before any edit, model dtype) in the first snapshot of the chain only; resuming reads it from there.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from encore.cli import one_line
from encore.data.files import file_sha256
from encore.editing.editors import accumulate_keys
from encore.editing.sequential import EditorState
from encore.models.architecture import read_weight, write_weight

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
KEYS = "keys.safetensors"
STATE_V1 = "state.safetensors"
ORIGINAL = "original.safetensors"


class SnapshotError(RuntimeError):
    """A snapshot is missing, corrupted or belongs to another model / layer set."""


@dataclass
class Snapshot:
    directory: Path
    manifest: dict
    weights: dict[int, torch.Tensor]
    state: EditorState | None  # None unless loaded for resuming

    @property
    def edits(self) -> int:
        return self.manifest["edits_done"]


def _write_atomically(path: Path, write) -> None:
    """``write`` to a temporary name, then rename; a failed write (disk full, no permission) leaves nothing behind
    and raises a one-line SnapshotError naming the file (the previous snapshots are never touched)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        write(temporary)
        temporary.replace(path)
    except Exception as error:  # OSError, or safetensors' SafetensorError wrapping one
        temporary.unlink(missing_ok=True)
        reason = one_line(error)
        if isinstance(error, OSError) and error.strerror:
            reason = error.strerror
        full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in reason
        fix = f"free space on the disk holding {path.parent}" if full else "fix that"
        raise SnapshotError(
            f"{path}: cannot write the snapshot ({reason}); {fix} and rerun: "
            "the run resumes from the previous snapshot, which is intact"
        ) from error


def save_snapshot(
    directory: Path,
    model,
    state: EditorState,
    layers: list[int],
    manifest: dict,
    extra_files: tuple[str, ...] = (),
    previous: Path | None = None,
) -> Path:
    """Write weights, this segment's keys and (last) the manifest; ``extra_files`` already in ``directory`` get
    checksums too. ``previous``: the snapshot this segment continued from (None for the first)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {f"layer{layer}": read_weight(model, layer).detach().contiguous().cpu().clone() for layer in layers}
    _write_atomically(
        directory / WEIGHTS, lambda path: save_file(weights, str(path), metadata={"orientation": "d_model x d_ff"})
    )
    batch_sizes = [len(keys) for keys in state.segment_keys.get(layers[0], [])]
    tensors = {
        f"keys.layer{layer}": (torch.cat(state.segment_keys[layer]) if batch_sizes else torch.zeros(0)).contiguous()
        for layer in layers
    }
    tensors["batch_sizes"] = torch.tensor(batch_sizes, dtype=torch.int64)
    tensors["torch_rng_state"] = state.torch_rng_state
    _write_atomically(directory / KEYS, lambda path: save_file(tensors, str(path)))
    names = [WEIGHTS, KEYS, *extra_files]
    if state.original_weights is not None and previous is None:  # once per chain, in its first snapshot
        originals = {f"layer{layer}": state.original_weights[layer].contiguous() for layer in layers}
        _write_atomically(directory / ORIGINAL, lambda path: save_file(originals, str(path)))
        names.append(ORIGINAL)
    full = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "layers": list(layers),
        "edits_done": state.edits_done,
        "batches_done": state.batches_done,
        "context_templates": state.context_templates,
        "previous_snapshot": os.path.relpath(previous, directory) if previous is not None else None,
        "files": {name: file_sha256(directory / name) for name in names},
    }
    _write_atomically(directory / MANIFEST, lambda path: path.write_text(json.dumps(full, indent=1)))
    for name in [*names, MANIFEST]:
        (directory / name).chmod(0o644)
    return directory / MANIFEST


def read_verified_manifest(directory: Path, names: list[str] | None = None) -> dict:
    """The manifest, after checking the checksums of ``names`` (default: every listed file)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise SnapshotError(f"{directory}: no {MANIFEST} (incomplete snapshot); delete {directory} and rerun")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as error:
        raise SnapshotError(f"{manifest_path}: not valid JSON ({error}); delete {directory} and rerun") from None
    for name, expected in manifest["files"].items():
        if names is not None and name not in names:
            continue
        path = directory / name
        if not path.exists():
            raise SnapshotError(f"{path}: missing file listed in the snapshot manifest; delete {directory} and rerun")
        actual = file_sha256(path)
        if actual != expected:
            raise SnapshotError(
                f"{path}: checksum mismatch (expected {expected[:12]}.., got {actual[:12]}..); the snapshot is "
                f"corrupted: delete {directory} and rerun (its segment is recomputed from the previous snapshot)"
            )
    return manifest


def chain(directory: Path) -> list[Path]:
    """The snapshots from the first segment of the run up to ``directory``, in editing order."""
    links, current = [], Path(directory)
    while current is not None:
        links.insert(0, current)
        previous = read_verified_manifest(current, names=[]).get("previous_snapshot")
        current = (current / previous).resolve() if previous else None
        if current is not None and current in links:
            raise SnapshotError(f"{directory}: the chain of previous snapshots loops at {current}")
    return links


def rebuild_previous_keys(directory: Path, layers: list[int], d_ff: int, device="cpu") -> dict[int, torch.Tensor]:
    """S_P per layer after the last batch of ``directory``: accumulate_keys over the chain's stored keys."""
    if read_verified_manifest(directory, names=[]).get("format_version", 1) == 1:  # S_P stored directly
        read_verified_manifest(directory, names=[STATE_V1])
        stored = load_file(str(Path(directory) / STATE_V1))
        return {layer: stored[f"previous_key_moment.layer{layer}"].to(device) for layer in layers}
    links = chain(directory)
    previous_key_moment = {layer: torch.zeros(d_ff, d_ff, dtype=torch.float64, device=device) for layer in layers}
    for link in links:
        read_verified_manifest(link, names=[KEYS])
        stored = load_file(str(link / KEYS))
        sizes = stored["batch_sizes"].tolist()
        for layer in layers:
            for keys in torch.split(stored[f"keys.layer{layer}"], sizes) if sizes else []:
                accumulate_keys(previous_key_moment[layer], keys.to(device).double().T)
    return previous_key_moment


def read_original_weights(directory: Path, layers: list[int]) -> dict[int, torch.Tensor] | None:
    """The unedited weights stored in the first snapshot of ``directory``'s chain (None if it holds none)."""
    first = chain(directory)[0]
    if ORIGINAL not in read_verified_manifest(first, names=[]).get("files", {}):
        return None
    read_verified_manifest(first, names=[ORIGINAL])
    stored = load_file(str(first / ORIGINAL))
    return {layer: stored[f"layer{layer}"] for layer in layers}


def load_snapshot(
    directory: Path,
    expected_model: dict | None = None,
    expected_layers: list[int] | None = None,
    state_device=None,
) -> Snapshot:
    """Read and verify a snapshot; fail with a one-line error on a checksum or identity mismatch.
    With ``state_device`` the editor state is rebuilt there too (for resuming), else ``state`` is None."""
    directory = Path(directory)
    manifest = read_verified_manifest(directory)
    if expected_model is not None and manifest.get("model") != expected_model:
        raise SnapshotError(
            f"{directory}: snapshot of model {manifest.get('model')} cannot be applied to {expected_model}"
        )
    layers = [int(layer) for layer in manifest["layers"]]
    if expected_layers is not None and sorted(expected_layers) != sorted(layers):
        raise SnapshotError(f"{directory}: snapshot edits layers {layers}, expected {sorted(expected_layers)}")
    weights_file = load_file(str(directory / WEIGHTS))
    weights = {layer: weights_file[f"layer{layer}"] for layer in layers}
    state = None
    if state_device is not None:
        format_2 = manifest.get("format_version", 1) >= 2
        stored = load_file(str(directory / (KEYS if format_2 else STATE_V1)))
        d_ff = weights[layers[0]].shape[1]
        state = EditorState(
            context_templates=manifest["context_templates"],
            previous_key_moment=rebuild_previous_keys(directory, layers, d_ff, state_device),
            edits_done=manifest["edits_done"],
            batches_done=manifest["batches_done"],
            torch_rng_state=stored["torch_rng_state"],
            original_weights=read_original_weights(directory, layers) if format_2 else None,
        )
    return Snapshot(directory=directory, manifest=manifest, weights=weights, state=state)


def apply_snapshot(model, snapshot: Snapshot) -> None:
    """Overwrite the edited layers of an unedited model with the snapshot's weights."""
    for layer, weight in snapshot.weights.items():
        if tuple(read_weight(model, layer).shape) != tuple(weight.shape):
            raise SnapshotError(
                f"{snapshot.directory}: layer {layer} has shape {tuple(weight.shape)}, model has {tuple(read_weight(model, layer).shape)}"
            )
        write_weight(model, layer, weight)
