"""Target optimisation: batching is exact, MPES stops where it must, the clamp holds."""

import pytest
import torch
from conftest import TARGET_RECORDS, TEMPLATES

from encore.data.datasets import EditRecord
from encore.editing.targets import TargetSettings, optimise_targets

# Subject at the end of the prompt: the last subject token predicts the (single-token) target, so a
# delta at the last block steers it quickly -- a constructed case where MPES is reached.
STEERABLE = TARGET_RECORDS[:2]  # cases 1-2: the bare subject as prompt
ORDINARY = [
    TARGET_RECORDS[2],  # case 3: "The mother tongue of Danielle Darrieux is" English
    EditRecord(case_id=4, subject="Toko Yasuda", prompt="{} plays the", target_new="piano", target_true="guitar"),
]
FAST = dict(layer=3, lr=1.5, clamp_norm_factor=10.0, weight_decay=0.0, kl_factor=0.0, loss_stop=0.0)


def qualifying_iterations(result, request):
    return [t["iteration"] for t in result.trace if t["request"] == request and t["num_correct"] == t["positions"]]


@pytest.mark.parametrize("mpes", [None, 0, 2])
def test_batched_optimisation_equals_per_request_runs(tiny_llama, tokenizer, mpes):
    model = tiny_llama.double()
    records = STEERABLE + ORDINARY
    settings = TargetSettings(
        layer=2, steps=12, lr=1.0, mpes=mpes, kl_factor=0.1, weight_decay=0.5, clamp_norm_factor=4.0
    )
    batched = optimise_targets(model, tokenizer, records, settings, TEMPLATES)
    for row, record in enumerate(records):
        alone = optimise_targets(model, tokenizer, [record], settings, TEMPLATES)
        scale = alone.z[0].abs().max()
        assert (batched.z[row] - alone.z[0]).abs().max() / scale <= 1e-5
        assert batched.iterations[row] == alone.iterations[0]
        assert batched.stop_reason[row] == alone.stop_reason[0]


@pytest.mark.parametrize("cutoff", [0, 2])
def test_mpes_stops_after_cutoff_plus_one_qualifying_iterations(tiny_llama, tokenizer, cutoff):
    model = tiny_llama.double()
    free = optimise_targets(model, tokenizer, STEERABLE, TargetSettings(steps=25, **FAST), TEMPLATES)
    stopped = optimise_targets(model, tokenizer, STEERABLE, TargetSettings(steps=25, mpes=cutoff, **FAST), TEMPLATES)
    for request in range(len(STEERABLE)):
        qualifying = qualifying_iterations(free, request)
        assert len(qualifying) > cutoff, "constructed case must reach the MPES criterion"
        expected_forwards = qualifying[cutoff] + 1
        assert stopped.iterations[request] == expected_forwards
        assert stopped.stop_reason[request] == "mpes"
        # stopping keeps delta as it was at that forward pass: a budget-limited run ends at the same point
        budget = optimise_targets(
            model, tokenizer, [STEERABLE[request]], TargetSettings(steps=expected_forwards, **FAST), TEMPLATES
        )
        assert torch.allclose(stopped.delta[request], budget.delta[0], rtol=1e-9, atol=1e-9)


def test_loss_stop_and_budget_are_reported(tiny_llama, tokenizer):
    model = tiny_llama.double()
    settings = TargetSettings(steps=25, **{**FAST, "loss_stop": 1.0})
    result = optimise_targets(model, tokenizer, STEERABLE + ORDINARY[:1], settings, TEMPLATES)
    for request, reason in enumerate(result.stop_reason):
        losses = [t["loss"] for t in result.trace if t["request"] == request]
        if reason == "loss":
            assert losses[-1] < 1.0 and all(value >= 1.0 for value in losses[:-1])
        else:
            assert reason == "budget" and result.iterations[request] == 25
    assert "loss" in result.stop_reason


def test_optimisation_raises_target_probability_and_respects_clamp(tiny_model, tokenizer):
    model = tiny_model.double()
    settings = TargetSettings(layer=2, steps=15, lr=0.5, clamp_norm_factor=0.75)
    result = optimise_targets(model, tokenizer, ORDINARY, settings, TEMPLATES)
    for request in range(len(ORDINARY)):
        losses = [t["loss"] for t in result.trace if t["request"] == request]
        assert losses[-1] < losses[0]
        assert result.delta[request].norm() <= 0.75 * result.h_init[request].norm() * (1 + 1e-9)
    assert torch.allclose(result.z, result.h_init + result.delta)


def test_v1_rule_stops_when_exactly_one_token_per_context_prompt_is_right(tiny_llama, tokenizer):
    """The official v1 code tests num_correct == number of context prompts, which for a two-token target
    fires when only half of the positions are right (and never when all are); the default rule needs all."""
    model = tiny_llama.double()
    record = EditRecord(case_id=5, subject="Toko Yasuda", prompt="{}", target_new="city of", target_true="x")
    free = optimise_targets(model, tokenizer, [record], TargetSettings(steps=25, **FAST), TEMPLATES)
    n_context = len(TEMPLATES[1])
    assert free.trace[0]["positions"] == 2 * n_context  # a two-token target
    v1_qualifying = [t["iteration"] for t in free.trace if t["num_correct"] == n_context]
    assert v1_qualifying, "constructed case must reach num_correct == number of context prompts"
    v1 = optimise_targets(
        model, tokenizer, [record], TargetSettings(steps=25, mpes=0, mpes_rule="v1", **FAST), TEMPLATES
    )
    assert v1.iterations[0] == v1_qualifying[0] + 1 and v1.stop_reason[0] == "mpes"
    all_rule = optimise_targets(model, tokenizer, [record], TargetSettings(steps=25, mpes=0, **FAST), TEMPLATES)
    all_qualifying = qualifying_iterations(free, 0)
    expected = all_qualifying[0] + 1 if all_qualifying else 25
    assert all_rule.iterations[0] == expected


def test_mpes_counts_qualifying_forwards_not_necessarily_consecutive():
    from encore.editing.targets import mpes_stop

    all_rule, v1 = TargetSettings(layer=0, mpes=1), TargetSettings(layer=0, mpes=1, mpes_rule="v1")
    count, hits = 0, []
    for correct in (6, 5, 6):  # 2 context prompts x 3 target tokens: 6 positions, the middle forward misses one
        count, stop = mpes_stop(count, correct, positions=6, n_context=2, settings=all_rule)
        hits.append((count, stop))
    assert hits == [(1, False), (1, False), (2, True)]  # stops at the (m + 1) = 2nd qualifying forward
    assert mpes_stop(0, 2, positions=6, n_context=2, settings=v1) == (1, False)  # v1: #context prompts right
    assert mpes_stop(1, 2, positions=6, n_context=2, settings=v1) == (2, True)
