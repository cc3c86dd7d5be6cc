"""Snapshots keep only their segment's keys; S_P is rebuilt exactly from the chain; corrupt links are named."""

import json

import pytest
import torch
from conftest import make_tiny_llama

from encore.editing.editors import accumulate_keys
from encore.editing.sequential import EditorState
from encore.editing.snapshots import KEYS, SnapshotError, load_snapshot, save_snapshot
from encore.models.architecture import read_weight, write_weight

LAYERS = [1, 2]
TEMPLATES = [["{}"]]


def fake_segment(model, state: EditorState, batches: int, generator: torch.Generator) -> None:
    """What edit_batch does to the state and weights, with random keys (n = 3 per batch)."""
    d_ff = read_weight(model, LAYERS[0]).shape[1]
    for _ in range(batches):
        for layer in LAYERS:
            keys = torch.randn(3, d_ff, generator=generator)
            state.segment_keys.setdefault(layer, []).append(keys)
            accumulate_keys(state.previous_key_moment[layer], keys.double().T)
            write_weight(model, layer, read_weight(model, layer) + 0.01)
        state.edits_done += 3
        state.batches_done += 1


def three_segments(tmp_path, tokenizer):
    model = make_tiny_llama(len(tokenizer))
    generator = torch.Generator().manual_seed(0)
    state = EditorState.initial(TEMPLATES, LAYERS, read_weight(model, 1).shape[1])
    previous = None
    for _ in range(3):
        fake_segment(model, state, batches=2, generator=generator)
        directory = tmp_path / f"edits_{state.edits_done:05d}"
        save_snapshot(directory, model, state, LAYERS, {"model": {"name": "tiny"}}, previous=previous)
        state.segment_keys = {}
        previous = directory
    return state, previous


def test_rebuilt_state_equals_the_accumulated_one_bitwise(tmp_path, tokenizer):
    state, last = three_segments(tmp_path, tokenizer)
    snapshot = load_snapshot(last, state_device="cpu")
    assert snapshot.state.edits_done == 18 and snapshot.state.batches_done == 6
    for layer in LAYERS:
        assert torch.equal(snapshot.state.previous_key_moment[layer], state.previous_key_moment[layer])


def test_a_snapshot_stores_its_own_keys_not_the_accumulated_matrix(tmp_path, tokenizer):
    state, last = three_segments(tmp_path, tokenizer)
    from safetensors.torch import load_file

    stored = load_file(str(last / KEYS))
    d_ff = state.previous_key_moment[LAYERS[0]].shape[0]
    assert stored["batch_sizes"].tolist() == [3, 3]
    assert all(stored[f"keys.layer{layer}"].shape == (6, d_ff) for layer in LAYERS)
    assert all(tensor.numel() < d_ff * d_ff for tensor in stored.values())
    assert json.loads((last / "manifest.json").read_text())["previous_snapshot"] == "../edits_00012"


def test_evaluation_reads_weights_without_rebuilding_the_state(tmp_path, tokenizer):
    _, last = three_segments(tmp_path, tokenizer)
    (tmp_path / "edits_00006" / KEYS).write_bytes(b"gone")  # an earlier link is damaged ...
    assert load_snapshot(last).state is None  # ... evaluation does not need it
    with pytest.raises(SnapshotError, match=r"edits_00006/keys.safetensors: checksum mismatch"):
        load_snapshot(last, state_device="cpu")  # resuming does, and names the file


def test_format_1_snapshots_with_stored_state_still_resume(tmp_path, tokenizer):
    from safetensors.torch import save_file

    from encore.data.files import file_sha256
    from encore.editing.snapshots import WEIGHTS

    model = make_tiny_llama(len(tokenizer))
    d_ff = read_weight(model, 1).shape[1]
    directory = tmp_path / "old"
    directory.mkdir()
    previous_key_moment = {layer: torch.rand(d_ff, d_ff, dtype=torch.float64) for layer in LAYERS}
    save_file({f"layer{layer}": read_weight(model, layer).contiguous() for layer in LAYERS}, str(directory / WEIGHTS))
    save_file({**{f"previous_key_moment.layer{layer}": previous_key_moment[layer] for layer in LAYERS},
               "torch_rng_state": torch.get_rng_state()}, str(directory / "state.safetensors"))  # fmt: skip
    manifest = {"format_version": 1, "layers": LAYERS, "edits_done": 4, "batches_done": 2,
                "context_templates": TEMPLATES, "previous_snapshot": "results/x/edits_00002",
                "files": {name: file_sha256(directory / name) for name in (WEIGHTS, "state.safetensors")}}  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))
    state = load_snapshot(directory, state_device="cpu").state
    assert all(torch.equal(state.previous_key_moment[layer], previous_key_moment[layer]) for layer in LAYERS)
