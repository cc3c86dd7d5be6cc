"""Closed-form per-layer updates of the edited matrix (algorithms.md §4).

Notation: W (d_model x d_ff) is the weight before the batch, K (d_ff x n) the batch's keys,
R (d_model x n) the residuals this layer must realise, C0 the key second moment, S_P = K_P K_P^T the
accumulated keys of previous batches. All solves run in float64 with a Cholesky factorisation of the
symmetric positive-definite system (no explicit inverse).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerState:
    """What the solve at one layer needs: lambda_p * C0 (fixed) and the accumulated S_P (grows)."""

    preservation: torch.Tensor  # lambda_p * C0, float64 (d_ff x d_ff)
    previous_keys: torch.Tensor  # S_P, float64 (d_ff x d_ff)


def spd_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix^{-1} rhs for a symmetric positive-definite matrix (Cholesky; LU if it is not PD)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.solve(matrix, rhs)


class Editor:
    """Sequential MEMIT (§4.1) with the optional norm constraint lambda_n (§4.2, ENCORE/NC):

        Delta = R K^T (lambda_p C0 + lambda_n I + S_P + K K^T)^{-1}

    which minimises lambda_p ||(W'-W) K0||^2/N + ||(W'-W) K_P||^2 + ||W'K - (WK + R)||^2 + lambda_n ||W'-W||_F^2.
    Subclasses change ``solve`` only.
    """

    name = "memit"

    def __init__(self, norm_lambda: float = 0.0):
        self.norm_lambda = norm_lambda

    def system_matrix(self, state: LayerState, keys: torch.Tensor) -> torch.Tensor:
        matrix = state.preservation + state.previous_keys + keys @ keys.T
        if self.norm_lambda:
            matrix = matrix + self.norm_lambda * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
        return matrix

    def solve(self, state: LayerState, keys: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """Delta (d_model x d_ff) from keys K (d_ff x n) and residuals R (d_model x n), float64."""
        solved_keys = spd_solve(self.system_matrix(state, keys), keys)  # A^{-1} K
        return residuals @ solved_keys.T  # R K^T A^{-1}  (A symmetric)

    def update_state(self, state: LayerState, keys: torch.Tensor) -> None:
        """After the solve: S_P <- S_P + K K^T (pre-update keys of this batch)."""
        state.previous_keys += keys @ keys.T


EDITORS: dict[str, type[Editor]] = {"memit": Editor}


def make_editor(name: str, **hyperparameters) -> Editor:
    if name not in EDITORS:
        raise ValueError(f"unknown editor {name!r}; known editors: {sorted(EDITORS)}")
    return EDITORS[name](**hyperparameters)
