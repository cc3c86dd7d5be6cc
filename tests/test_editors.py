"""Closed-form updates satisfy their optimality conditions (algorithms.md §4)."""

import torch

from encore.editors import Editor, LayerState, make_editor


def random_problem(d_ff=40, d_model=12, n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = torch.randn(d_ff, 3 * d_ff, generator=generator, dtype=torch.float64)
    covariance = samples @ samples.T / samples.shape[1]
    previous = torch.randn(d_ff, 15, generator=generator, dtype=torch.float64)
    keys = torch.randn(d_ff, n, generator=generator, dtype=torch.float64)
    residuals = torch.randn(d_model, n, generator=generator, dtype=torch.float64)
    state = LayerState(preservation=3.0 * covariance, previous_keys=previous @ previous.T)
    return state, keys, residuals


def test_memit_update_solves_its_normal_equations():
    state, keys, residuals = random_problem()
    delta = Editor().solve(state, keys, residuals)
    system = state.preservation + state.previous_keys + keys @ keys.T
    # d/dDelta of the objective = 0  <=>  Delta (lambda_p C0 + S_P + K K^T) = R K^T
    assert torch.allclose(delta @ system, residuals @ keys.T, atol=1e-10)


def test_norm_constraint_update_solves_its_normal_equations():
    state, keys, residuals = random_problem(seed=1)
    delta = Editor(norm_lambda=7.5).solve(state, keys, residuals)
    system = state.preservation + state.previous_keys + keys @ keys.T + 7.5 * torch.eye(keys.shape[0], dtype=torch.float64)
    assert torch.allclose(delta @ system, residuals @ keys.T, atol=1e-10)


def test_memit_update_is_the_minimum_of_the_objective():
    state, keys, residuals = random_problem(seed=2)
    delta = Editor().solve(state, keys, residuals)

    def objective(d):
        preserved = torch.trace(d @ (state.preservation + state.previous_keys) @ d.T)
        return preserved + ((d @ keys - residuals) ** 2).sum()

    best = objective(delta)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        perturbed = delta + 1e-3 * torch.randn(delta.shape, generator=generator, dtype=torch.float64)
        assert objective(perturbed) > best


def test_raising_norm_lambda_lowers_update_norm_monotonically():
    state, keys, residuals = random_problem(seed=4)
    norms = [Editor(norm_lambda=value).solve(state, keys, residuals).norm() for value in [0, 1, 10, 100, 1000]]
    assert all(later < earlier for earlier, later in zip(norms, norms[1:]))


def test_previous_keys_accumulate_exactly():
    state, keys, _ = random_problem(seed=5)
    start = state.previous_keys.clone()
    editor = make_editor("memit")
    more_keys = torch.randn(keys.shape, dtype=torch.float64)
    editor.update_state(state, keys)
    editor.update_state(state, more_keys)
    assert torch.equal(state.previous_keys, start + keys @ keys.T + more_keys @ more_keys.T) or torch.allclose(
        state.previous_keys, start + keys @ keys.T + more_keys @ more_keys.T, rtol=0, atol=1e-12
    )
