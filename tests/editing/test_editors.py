"""Closed-form updates satisfy their optimality conditions (algorithms.md §4)."""

import pytest
import torch

from encore.editing.editors import EMMET, MEMIT, AlphaEdit, LayerState, null_space_projector

LAMBDA_P = 3.0


def random_problem(d_ff=40, d_model=12, n=6, seed=0, low_rank=False):
    generator = torch.Generator().manual_seed(seed)
    samples = torch.randn(d_ff, 3 * d_ff, generator=generator, dtype=torch.float64)
    if low_rank:  # a covariance with a genuine null space (rank 25 of 40)
        samples[:, :] = torch.randn(d_ff, 25, generator=generator, dtype=torch.float64) @ torch.randn(
            25, 3 * d_ff, generator=generator, dtype=torch.float64
        )
    covariance = samples @ samples.T / samples.shape[1]
    previous = torch.randn(d_ff, 15, generator=generator, dtype=torch.float64)
    keys = torch.randn(d_ff, n, generator=generator, dtype=torch.float64)
    residuals = torch.randn(d_model, n, generator=generator, dtype=torch.float64)
    state = LayerState(covariance=covariance, previous_key_moment=previous @ previous.T)
    return state, keys, residuals


def eye(n):
    return torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("norm_lambda", [0.0, 7.5])
def test_memit_update_solves_its_normal_equations(norm_lambda):
    state, keys, residuals = random_problem(seed=int(norm_lambda))
    delta = MEMIT(LAMBDA_P, norm_lambda).solve(state, keys, residuals)
    system = LAMBDA_P * state.covariance + state.previous_key_moment + keys @ keys.T + norm_lambda * eye(keys.shape[0])
    # d/dDelta of the objective = 0  <=>  Delta (lambda_p C0 + lambda_n I + S_P + K K^T) = R K^T
    assert torch.allclose(delta @ system, residuals @ keys.T, atol=1e-10)


def test_memit_update_is_the_minimum_of_the_objective():
    state, keys, residuals = random_problem(seed=2)
    delta = MEMIT(LAMBDA_P).solve(state, keys, residuals)

    def objective(d):
        preserved = torch.trace(d @ (LAMBDA_P * state.covariance + state.previous_key_moment) @ d.T)
        return preserved + ((d @ keys - residuals) ** 2).sum()

    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        perturbed = delta + 1e-3 * torch.randn(delta.shape, generator=generator, dtype=torch.float64)
        assert objective(perturbed) > objective(delta)


@pytest.mark.parametrize(
    "make",
    [lambda lam: MEMIT(LAMBDA_P, lam), lambda lam: EMMET(LAMBDA_P, lam), lambda lam: AlphaEdit(lam)],
    ids=["memit", "emmet", "alphaedit"],
)
def test_raising_norm_lambda_lowers_update_norm_monotonically(make):
    state, keys, residuals = random_problem(seed=4, low_rank=True)
    state.projector = null_space_projector(state.covariance, 0.02)
    norms = [make(value).solve(state, keys, residuals).norm() for value in [0, 1, 10, 100, 1000]]
    assert all(later < earlier for earlier, later in zip(norms, norms[1:]))


@pytest.mark.parametrize("norm_lambda", [0.0, 5.0])
def test_emmet_update_meets_its_constraint_up_to_lambda_e(norm_lambda):
    state, keys, residuals = random_problem(seed=5)
    editor = EMMET(LAMBDA_P, norm_lambda, emmet_lambda=0.1)
    delta = editor.solve(state, keys, residuals)
    preserved = LAMBDA_P * state.covariance + state.previous_key_moment + norm_lambda * eye(keys.shape[0])
    gram = keys.T @ torch.linalg.solve(preserved, keys) + 0.1 * eye(keys.shape[1])
    # W_new K = W K + R - lambda_E R D^{-1}
    assert torch.allclose(delta @ keys, residuals - 0.1 * residuals @ torch.linalg.inv(gram), atol=1e-9)
    # with lambda_E -> 0 the equality constraint holds exactly
    exact = EMMET(LAMBDA_P, norm_lambda, emmet_lambda=0.0).solve(state, keys, residuals)
    assert torch.allclose(exact @ keys, residuals, atol=1e-8)
    # and among all updates meeting it, EMMET's has the least preservation cost (KKT: Delta C = M K^T)
    multipliers = torch.linalg.lstsq(keys, (exact @ preserved).T).solution.T
    assert torch.allclose(exact @ preserved, multipliers @ keys.T, atol=1e-8)


def test_alphaedit_update_annihilates_the_preserved_subspace():
    state, keys, residuals = random_problem(seed=6, low_rank=True)
    projector = null_space_projector(state.covariance, 0.02)
    assert 10 <= int(round(float(torch.trace(projector)))) <= 20  # the 15-dim null space of a rank-25 C0
    state.projector = projector
    delta = AlphaEdit(alpha=10.0).solve(state, keys, residuals)
    preserved_keys = (eye(40) - projector) @ torch.randn(40, 8, dtype=torch.float64)
    assert (delta @ preserved_keys).norm() < 1e-9 * delta.norm() * preserved_keys.norm()
    # same as the reference form X = solve(P S + alpha I, P K R^T) with S = S_P + K K^T
    accumulated = state.previous_key_moment + keys @ keys.T
    reference = torch.linalg.solve(projector @ accumulated + 10.0 * eye(40), projector @ keys @ residuals.T).T
    assert torch.allclose(delta, reference, atol=1e-9)


def test_previous_keys_accumulate_exactly():
    state, keys, _ = random_problem(seed=7)
    start = state.previous_key_moment.clone()
    more_keys = torch.randn(keys.shape, dtype=torch.float64)
    for editor in (MEMIT(LAMBDA_P),):
        editor.update_state(state, keys)
        editor.update_state(state, more_keys)
    assert torch.allclose(
        state.previous_key_moment, start + keys @ keys.T + more_keys @ more_keys.T, rtol=0, atol=1e-12
    )


def test_the_base_is_abstract_and_every_registered_editor_builds_itself_from_its_hparams():
    from encore.editing.editors import EDITORS, Editor, make_editor
    from encore.editing.hparams import Hyperparameters

    with pytest.raises(TypeError):
        Editor(LAMBDA_P)
    base = {"layers": [1], "v_num_grad_steps": 2, "v_lr": 0.5, "mom2_update_weight": LAMBDA_P, "mom2_n_samples": 2}
    for name, cls in EDITORS.items():
        hparams = Hyperparameters.from_dict({**base, "editor": name, "norm_lambda": 2.0})
        editor = make_editor(hparams)
        assert type(editor) is cls and cls.name == name and editor.norm_lambda == 2.0
    with pytest.raises(ValueError, match="unknown editor 'nope'"):
        make_editor(Hyperparameters(**{**base, "editor": "nope"}))  # unvalidated: the schema would refuse it
