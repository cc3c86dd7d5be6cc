"""Snapshots: the edited layers' weights plus the editor state, with checksums (safetensors + JSON).

A snapshot directory holds ``weights.safetensors`` (W_l, d_model x d_ff, per edited layer),
``state.safetensors`` (S_P per layer, torch RNG state) and ``manifest.json`` (model identity, layers,
edits done, edited case ids, context templates, hyperparameters, provenance and the sha256 of every
file). The manifest is written last, so a directory without one is incomplete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from encore.architecture import read_weight, write_weight
from encore.sequential import EditorState

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
STATE = "state.safetensors"


class SnapshotError(RuntimeError):
    """A snapshot is missing, corrupted or belongs to another model / layer set."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Snapshot:
    directory: Path
    manifest: dict
    weights: dict[int, torch.Tensor]
    state: EditorState

    @property
    def edits(self) -> int:
        return self.manifest["edits_done"]


def save_snapshot(
    directory: Path, model, state: EditorState, layers: list[int], manifest: dict, extra_files: tuple[str, ...] = ()
) -> Path:
    """Write weights, state and (last) the manifest. ``extra_files`` already in ``directory`` get checksums too."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {f"layer{layer}": read_weight(model, layer).detach().contiguous().clone() for layer in layers}
    save_file(weights, str(directory / WEIGHTS), metadata={"orientation": "d_model x d_ff"})
    tensors = {f"previous_keys.layer{layer}": state.previous_keys[layer].contiguous() for layer in layers}
    tensors["torch_rng_state"] = state.torch_rng_state
    save_file(tensors, str(directory / STATE))
    names = [WEIGHTS, STATE, *extra_files]
    full = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "layers": list(layers),
        "edits_done": state.edits_done,
        "batches_done": state.batches_done,
        "context_templates": state.context_templates,
        "files": {name: file_sha256(directory / name) for name in names},
    }
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(full, indent=1))
    temporary.replace(directory / MANIFEST)
    for name in [*names, MANIFEST]:
        (directory / name).chmod(0o644)
    return directory / MANIFEST


def load_snapshot(
    directory: Path, expected_model: dict | None = None, expected_layers: list[int] | None = None
) -> Snapshot:
    """Read and verify a snapshot; fail with a one-line error on a checksum or identity mismatch."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise SnapshotError(f"{directory}: no {MANIFEST} (incomplete snapshot); rerun the segment that writes it")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.exists():
            raise SnapshotError(f"{path}: missing file listed in the snapshot manifest")
        actual = file_sha256(path)
        if actual != expected:
            raise SnapshotError(
                f"{path}: checksum mismatch (expected {expected[:12]}.., got {actual[:12]}..); the snapshot is corrupted, rerun its segment"
            )
    if expected_model is not None and manifest.get("model") != expected_model:
        raise SnapshotError(
            f"{directory}: snapshot of model {manifest.get('model')} cannot be applied to {expected_model}"
        )
    layers = [int(layer) for layer in manifest["layers"]]
    if expected_layers is not None and sorted(expected_layers) != sorted(layers):
        raise SnapshotError(f"{directory}: snapshot edits layers {layers}, expected {sorted(expected_layers)}")
    weights_file = load_file(str(directory / WEIGHTS))
    state_file = load_file(str(directory / STATE))
    state = EditorState(
        context_templates=manifest["context_templates"],
        previous_keys={layer: state_file[f"previous_keys.layer{layer}"] for layer in layers},
        edits_done=manifest["edits_done"],
        batches_done=manifest["batches_done"],
        torch_rng_state=state_file["torch_rng_state"],
    )
    weights = {layer: weights_file[f"layer{layer}"] for layer in layers}
    return Snapshot(directory=directory, manifest=manifest, weights=weights, state=state)


def apply_snapshot(model, snapshot: Snapshot) -> None:
    """Overwrite the edited layers of an unedited model with the snapshot's weights."""
    for layer, weight in snapshot.weights.items():
        if tuple(read_weight(model, layer).shape) != tuple(weight.shape):
            raise SnapshotError(
                f"{snapshot.directory}: layer {layer} has shape {tuple(weight.shape)}, model has {tuple(read_weight(model, layer).shape)}"
            )
        write_weight(model, layer, weight)
