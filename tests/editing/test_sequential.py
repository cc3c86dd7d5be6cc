"""Sequential MEMIT on a tiny model: edits take effect, the state accumulates exactly, a resumed run
equals an uninterrupted one."""

import pytest
import torch
from conftest import FACTS, TEMPLATES, make_tiny_llama, wikitext_lines

from encore.editing.covariance import second_moments
from encore.editing.editors import MEMIT, make_editor
from encore.editing.hparams import Hyperparameters
from encore.editing.sequential import EditorState, edit_batch
from encore.editing.snapshots import SnapshotError, apply_snapshot, load_snapshot, save_snapshot
from encore.evaluation.counterfact import answer_nll
from encore.models.architecture import read_weight

RECORDS = FACTS
HPARAMS = Hyperparameters(
    editor="memit",
    layers=[1, 2],
    v_num_grad_steps=20,
    v_lr=1.0,
    mom2_update_weight=10.0,
    mom2_n_samples=40,
    clamp_norm_factor=4.0,
)


class RecordingEditor(MEMIT):
    def __init__(self):
        super().__init__(HPARAMS.mom2_update_weight)
        self.calls = []

    def solve(self, state, keys, residuals):
        delta = super().solve(state, keys, residuals)
        self.calls.append(
            {
                "previous": state.previous_key_moment.clone(),
                "preservation": self.mom2_update_weight * state.covariance.double(),
                "keys": keys.clone(),
                "residuals": residuals.clone(),
                "delta": delta,
            }
        )
        return delta


@pytest.fixture()
def covariances(tiny_llama, tokenizer):
    moments, _ = second_moments(tiny_llama, tokenizer, wikitext_lines(200)[:40], HPARAMS.layers, max_length=64)
    return moments


def fresh_state(model):
    return EditorState.initial(TEMPLATES, HPARAMS.layers, read_weight(model, 1).shape[1])


def test_one_batch_makes_edited_targets_more_probable(tiny_llama, tokenizer, covariances):
    prompts = [record.rewrite_prompt for record in RECORDS]
    new_targets = [record.target_new for record in RECORDS]
    before = answer_nll(tiny_llama, tokenizer, prompts, new_targets)
    edit_batch(tiny_llama, tokenizer, RECORDS, HPARAMS, make_editor(HPARAMS), fresh_state(tiny_llama), covariances)
    after = answer_nll(tiny_llama, tokenizer, prompts, new_targets)
    assert torch.all(after < before), (before, after)


def test_state_accumulates_exactly_the_solved_keys(tiny_llama, tokenizer, covariances):
    editor, state = RecordingEditor(), fresh_state(tiny_llama)
    weights_before = {layer: read_weight(tiny_llama, layer).clone() for layer in HPARAMS.layers}
    edit_batch(tiny_llama, tokenizer, RECORDS[:2], HPARAMS, editor, state, covariances)
    edit_batch(tiny_llama, tokenizer, RECORDS[2:], HPARAMS, editor, state, covariances)
    assert state.edits_done == 4 and state.batches_done == 2
    for layer_rank, layer in enumerate(HPARAMS.layers):
        calls = editor.calls[layer_rank::2]
        expected = sum(call["keys"] @ call["keys"].T for call in calls)
        assert torch.allclose(state.previous_key_moment[layer], expected, rtol=0, atol=1e-10)
        # the second batch solved with S_P = the first batch's keys
        assert torch.allclose(calls[1]["previous"], calls[0]["keys"] @ calls[0]["keys"].T, rtol=0, atol=1e-10)
        for call in calls:
            system = call["preservation"] + call["previous"] + call["keys"] @ call["keys"].T
            assert torch.allclose(call["delta"] @ system, call["residuals"] @ call["keys"].T, atol=1e-8)
        total = sum(call["delta"] for call in calls)
        assert torch.allclose(
            read_weight(tiny_llama, layer).double(), weights_before[layer].double() + total, atol=1e-5
        )


def test_resumed_run_is_bitwise_identical_to_uninterrupted(tokenizer, covariances, tmp_path):
    straight = make_tiny_llama(len(tokenizer))
    state = fresh_state(straight)
    for batch in (RECORDS[:2], RECORDS[2:]):
        edit_batch(straight, tokenizer, batch, HPARAMS, make_editor(HPARAMS), state, covariances)

    first = make_tiny_llama(len(tokenizer))
    state = fresh_state(first)
    edit_batch(first, tokenizer, RECORDS[:2], HPARAMS, make_editor(HPARAMS), state, covariances)
    save_snapshot(tmp_path / "snap", first, state, HPARAMS.layers, {"model": {"name": "tiny"}})
    del first

    resumed = make_tiny_llama(len(tokenizer))  # unedited model + snapshot
    snapshot = load_snapshot(
        tmp_path / "snap", expected_model={"name": "tiny"}, expected_layers=HPARAMS.layers, state_device="cpu"
    )
    apply_snapshot(resumed, snapshot)
    edit_batch(resumed, tokenizer, RECORDS[2:], HPARAMS, make_editor(HPARAMS), snapshot.state, covariances)
    for layer in HPARAMS.layers:
        assert torch.equal(read_weight(resumed, layer), read_weight(straight, layer))


def test_snapshot_checksum_and_identity_are_enforced(tiny_llama, tokenizer, tmp_path):
    state = fresh_state(tiny_llama)
    save_snapshot(tmp_path / "snap", tiny_llama, state, HPARAMS.layers, {"model": {"name": "tiny"}})
    with pytest.raises(SnapshotError, match="cannot be applied"):
        load_snapshot(tmp_path / "snap", expected_model={"name": "other"})
    with pytest.raises(SnapshotError, match="edits layers"):
        load_snapshot(tmp_path / "snap", expected_layers=[0, 1])
    weights = tmp_path / "snap" / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        load_snapshot(tmp_path / "snap")
    (tmp_path / "snap" / "manifest.json").unlink()
    with pytest.raises(SnapshotError, match="incomplete"):
        load_snapshot(tmp_path / "snap")
