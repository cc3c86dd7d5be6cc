"""MEMIT+RECT and MEMIT+PRUNE (encore.editing.restraints): the restraints against their definitions, the
sequential loop's reference order, resume == uninterrupted for PRUNE's carried original weights."""

import math

import pytest
import torch
from conftest import FACTS, REPO, TEMPLATES, make_tiny_llama, wikitext_lines

from encore.editing import restraints
from encore.editing.covariance import second_moments
from encore.editing.editors import EDITORS, EMMET, MEMIT, AlphaEdit, LayerState, MEMITPrune, MEMITRect, make_editor
from encore.editing.hparams import Hyperparameters
from encore.editing.sequential import EditorState, edit_batch
from encore.editing.snapshots import ORIGINAL, apply_snapshot, load_snapshot, save_snapshot
from encore.models.architecture import read_weight

LAYERS = [1, 2]
RECORDS = FACTS


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def with_spectrum(values, rows=12, cols=40, seed=0):
    """A float64 (rows x cols) matrix U diag(values) V^T with random orthonormal U, V; returns (matrix, U, V)."""
    left, _ = torch.linalg.qr(torch.randn(rows, len(values), generator=generator(seed), dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(cols, len(values), generator=generator(seed + 1), dtype=torch.float64))
    return left @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ right.T, left, right


# --- RECT ------------------------------------------------------------------------------------------------------


def test_rect_keeps_exactly_the_top_fraction_by_relative_change_and_their_values_bitwise():
    delta = torch.randn(12, 40, generator=generator(1), dtype=torch.float64)
    weight = torch.randn(12, 40, generator=generator(2))  # float32, as the model holds it
    kept = restraints.rect(delta, weight, 0.4)
    mask = kept != 0
    ratio = (delta / (weight.double() + 1e-8)).abs()
    # the reference's rule (kthvalue threshold, k = int(N * 60 / 100)) selects the same entries when nothing ties
    threshold = torch.kthvalue(ratio.reshape(-1), int(ratio.numel() * (100 - 40) / 100)).values
    assert torch.equal(mask, ratio >= threshold)
    assert int(mask.sum()) == 480 - 288 + 1 == restraints.rect_keep_count(480, 0.4)
    assert ratio[mask].min() > ratio[~mask].max()
    assert torch.equal(kept[mask], delta[mask]) and bool((kept[~mask] == 0).all())


def test_rect_breaks_ties_by_position_and_keeps_the_count():
    weight = torch.ones(4, 10)
    delta = torch.zeros(4, 10, dtype=torch.float64)
    delta[:, :5] = 2.0  # 20 tied entries with the largest ratio, 20 tied zeros
    mask = restraints.rect_mask(delta, weight, 0.2)  # keeps 40 - 32 + 1 = 9 of the 20 tied maxima
    assert int(mask.sum()) == 9
    first_nine = torch.zeros(40, dtype=torch.bool)
    first_nine[torch.nonzero(delta.reshape(-1) == 2.0).reshape(-1)[:9]] = True
    assert torch.equal(mask.reshape(-1), first_nine)  # row-major order: the earliest tied positions
    assert torch.equal(restraints.rect_mask(delta, weight, 0.2), mask)  # deterministic
    assert int(restraints.rect_mask(delta, weight, 1.0).sum()) == 40  # fraction 1 keeps everything


def test_memit_rect_keeps_memit_update_entries_bitwise():
    generator_ = generator(3)
    samples = torch.randn(40, 120, generator=generator_, dtype=torch.float64)
    state = LayerState(
        covariance=samples @ samples.T / 120, previous_key_moment=torch.zeros(40, 40, dtype=torch.float64)
    )
    keys = torch.randn(40, 6, generator=generator_, dtype=torch.float64)
    residuals = torch.randn(12, 6, generator=generator_, dtype=torch.float64)
    weight = torch.randn(12, 40, generator=generator_)
    rect = MEMITRect(3.0, 0.0, fraction=0.25)
    delta = MEMIT(3.0).solve(state, keys, residuals)
    assert torch.equal(rect.solve(state, keys, residuals), delta)  # the solve is MEMIT's
    kept = rect.restrain(delta, weight, None)
    mask = restraints.rect_mask(delta, weight, 0.25)
    assert torch.equal(kept[mask], delta[mask]) and int((kept != 0).sum()) == restraints.rect_keep_count(480, 0.25)


# --- PRUNE -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("log_base", "bound"), [(math.e, 3.0), (1.2, 6.0)])  # bound >= 1 / ln(base): F(s) < s
def test_prune_maps_singular_values_above_the_bound_and_keeps_the_rest(log_base, bound):
    values = [40.0, 12.0, 8.0, 2.5, 1.0, 0.1]
    edit, left, right = with_spectrum(values)
    restrained = restraints.prune(edit, bound, log_base)
    left2, values2, right2 = torch.linalg.svd(restrained, full_matrices=False)
    expected = [math.log(s, log_base) - math.log(bound, log_base) + bound if s > bound else s for s in values]
    assert torch.allclose(values2[:6], torch.tensor(sorted(expected, reverse=True), dtype=torch.float64), atol=1e-10)
    # F keeps the order, so the i-th singular vectors are the edit's (up to sign)
    assert torch.allclose((left2[:, :6] * left).sum(0).abs(), torch.ones(6, dtype=torch.float64), atol=1e-8)
    assert torch.allclose((right2[:6].T * right).sum(0).abs(), torch.ones(6, dtype=torch.float64), atol=1e-8)
    # values above the bound come down but stay above it; nothing exceeds F(largest) = b + log_a(s_max / b)
    above = [(s, f) for s, f in zip(values, expected) if s > bound]
    assert all(bound < f < s for s, f in above)
    assert float(values2[0]) <= bound + math.log(values[0] / bound, log_base) + 1e-9
    # the part of the edit below the bound is untouched: A - A' lies in the span of the restrained directions
    below = left[:, 3:] @ torch.diag(torch.tensor(values[3:], dtype=torch.float64)) @ right[:, 3:].T
    projected = restrained - left[:, :3] @ (left[:, :3].T @ restrained)
    assert torch.allclose(projected, below, atol=1e-10)


def test_prune_with_the_bound_above_every_singular_value_is_the_identity():
    edit, _, _ = with_spectrum([5.0, 2.0, 1.0])
    assert restraints.prune(edit, 5.5) is edit and restraints.prune_correction(edit, 5.5) is None
    original, _, _ = with_spectrum([6.0, 3.0, 1.0], seed=7)  # sigma_max(W_0) = 6 > every value of the edit
    weight = original + 0.5 * edit
    delta = 0.5 * edit
    assert MEMITPrune().restrain(delta, weight, original) is delta


def test_memit_prune_restrains_the_accumulated_edit_not_the_batch_update():
    original, _, _ = with_spectrum([4.0, 2.0, 1.0, 0.5], seed=5)  # bound b = 4
    earlier, _, _ = with_spectrum([3.0, 1.0], seed=9)  # previous batches' edit, below the bound on its own
    weight = original + earlier
    delta, _, _ = with_spectrum([6.0, 0.5], seed=11)
    restrained = MEMITPrune().restrain(delta, weight, original)
    accumulated = weight + delta - original
    expected = restraints.prune(accumulated, 4.0)
    assert torch.allclose(weight + restrained - original, expected, atol=1e-12)
    values = torch.linalg.svdvals(accumulated)
    new_values = torch.linalg.svdvals(weight + restrained - original)
    mapped = torch.where(values > 4.0, values.log() - math.log(4.0) + 4.0, values)
    assert bool((values > 4.0).any()) and torch.allclose(new_values, mapped, atol=1e-10)


# --- registration ----------------------------------------------------------------------------------------------


def test_methods_are_registered_checked_and_built_from_their_files():
    from encore.experiment import check_methods

    check_methods(["memit", "memit_rect", "memit_prune"], REPO / "hparams")
    with pytest.raises(ValueError, match="memit_rekt"):
        check_methods(["memit_rekt"], REPO / "hparams")
    rect = make_editor(Hyperparameters.from_yaml(REPO / "hparams/MEMIT_RECT/smollm2-135m.yaml"))
    prune = make_editor(Hyperparameters.from_yaml(REPO / "hparams/MEMIT_PRUNE/smollm2-135m.yaml", "mpes"))
    memit = Hyperparameters.from_yaml(REPO / "hparams/MEMIT/smollm2-135m.yaml")
    assert isinstance(rect, MEMITRect) and rect.fraction == 0.4 and rect.mom2_update_weight == memit.mom2_update_weight
    assert isinstance(prune, MEMITPrune) and prune.log_base == math.e and EDITORS["memit_prune"] is MEMITPrune
    assert not any(cls.restrains or cls.needs_original_weights for cls in (MEMIT, EMMET, AlphaEdit))


# --- the sequential loop ---------------------------------------------------------------------------------------


HPARAMS = Hyperparameters(
    editor="memit", layers=LAYERS, v_num_grad_steps=8, v_lr=1.0, mom2_update_weight=10.0, mom2_n_samples=40,
    clamp_norm_factor=4.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def covariances(tokenizer):
    documents = wikitext_lines(200)[:40]
    moments, _ = second_moments(make_tiny_llama(len(tokenizer)), tokenizer, documents, LAYERS, max_length=64)
    return moments


LAMBDA_P = 1.0  # PRUNE test: weak enough preservation that the accumulated edit exceeds the bound


def fresh_state(model):
    state = EditorState.initial(TEMPLATES, LAYERS, read_weight(model, 1).shape[1])
    state.torch_rng_state = torch.Generator().manual_seed(0).get_state()  # the same targets in every run
    return state


def run(editor, tokenizer, covariances, batches, model=None, state=None):
    model = model if model is not None else make_tiny_llama(len(tokenizer))
    state = state if state is not None else fresh_state(model)
    for batch in batches:
        edit_batch(model, tokenizer, batch, HPARAMS, editor, state, covariances)
    return model, state


def test_memit_rect_in_the_loop_keeps_memit_written_entries_in_the_reference_order(tokenizer, covariances):
    unedited = make_tiny_llama(len(tokenizer))
    memit, _ = run(MEMIT(10.0), tokenizer, covariances, [RECORDS])
    rect, _ = run(MEMITRect(10.0, fraction=0.4), tokenizer, covariances, [RECORDS])
    for layer in LAYERS:
        before, full, kept = (read_weight(m, layer) for m in (unedited, memit, rect))
        changed = kept != before
        # every layer's update was solved against the unrestrained writes of the layers below (as in the
        # reference), so the kept entries are MEMIT's weights bitwise and the others are untouched
        assert torch.equal(kept[changed], full[changed]) and torch.equal(kept[~changed], before[~changed])
        assert int(changed.sum()) == restraints.rect_keep_count(before.numel(), 0.4)


def test_memit_prune_resumed_from_a_snapshot_equals_the_uninterrupted_run_bitwise(tokenizer, covariances, tmp_path):
    batches = [RECORDS[:2], RECORDS[2:]]  # with lambda_p = 1, layer 2's edit outgrows sigma_max(W_0) = 3.67
    straight, straight_state = run(MEMITPrune(LAMBDA_P), tokenizer, covariances, batches)
    memit, _ = run(MEMIT(LAMBDA_P), tokenizer, covariances, batches)

    first, state = run(MEMITPrune(LAMBDA_P), tokenizer, covariances, batches[:1])
    save_snapshot(tmp_path / "s1", first, state, LAYERS, {"model": {"name": "tiny"}})
    state.segment_keys = {}
    save_snapshot(tmp_path / "s2", first, state, LAYERS, {"model": {"name": "tiny"}}, previous=tmp_path / "s1")
    assert (tmp_path / "s1" / ORIGINAL).exists() and not (tmp_path / "s2" / ORIGINAL).exists()  # once per chain

    resumed = make_tiny_llama(len(tokenizer))
    snapshot = load_snapshot(tmp_path / "s2", expected_layers=LAYERS, state_device="cpu")
    unedited = {layer: read_weight(resumed, layer).clone() for layer in LAYERS}
    apply_snapshot(resumed, snapshot)
    run(MEMITPrune(LAMBDA_P), tokenizer, covariances, batches[1:], model=resumed, state=snapshot.state)
    for layer in LAYERS:
        assert torch.equal(snapshot.state.original_weights[layer], unedited[layer])
        assert torch.equal(straight_state.original_weights[layer], unedited[layer])
        assert torch.equal(read_weight(resumed, layer), read_weight(straight, layer))
    # the restraint was active: the accumulated edit's top singular value exceeded sigma_max(W_0)
    assert any(not torch.equal(read_weight(straight, layer), read_weight(memit, layer)) for layer in LAYERS)


def test_memit_prune_refuses_a_state_without_original_weights_after_the_first_batch(tokenizer, covariances):
    model = make_tiny_llama(len(tokenizer))
    state = fresh_state(model)
    state.batches_done = 1
    with pytest.raises(ValueError, match="memit_prune: the state has no original weights after 1 batches"):
        edit_batch(model, tokenizer, RECORDS[:1], HPARAMS, MEMITPrune(10.0), state, covariances)
