"""Closed-form per-layer updates of the edited matrix (algorithms.md §4).

Notation: W (d_model x d_ff) is the weight before the batch, K (d_ff x n) the batch's keys, R
(d_model x n) the residuals this layer must realise, C0 the key second moment, S_P = K_P K_P^T the
accumulated keys of previous batches, lambda_p = mom2_update_weight, lambda_n = norm_lambda (the norm
constraint, which penalises ||W' - W||_F^2 of each batch's update). All solves run in float64 with a
Cholesky factorisation of a symmetric positive-definite system; no explicit inverse is formed.
The editors share everything else (keys, targets, the sequential loop) and differ only in ``solve``;
an editor with ``restrains = True`` (MEMIT+RECT, MEMIT+PRUNE) also changes each update after the batch's solves
(``restrain``, encore.editing.restraints; docs/adding-an-editor.md).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from encore.editing import restraints


@dataclass
class LayerState:
    covariance: torch.Tensor  # C0, float64 (d_ff x d_ff), fixed
    previous_key_moment: torch.Tensor  # S_P, float64 (d_ff x d_ff), grows with every batch
    projector: torch.Tensor | None = None  # AlphaEdit null-space projector P, float64


def spd_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix^{-1} rhs for a symmetric positive-definite matrix (Cholesky; LU if it is not PD)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        del matrix
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.solve(matrix, rhs)


def _identity(size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(size, dtype=like.dtype, device=like.device)


class Editor(abc.ABC):
    """What every editor shares (algorithms.md §4): the hyperparameters lambda_p and lambda_n, the preserved matrix
    ``preservation``, the update of S_P after a solve and the (identity) restraint. A subclass gives its ``name``
    (the hparams' ``editor``), its closed form ``solve`` and ``from_hparams``, and is registered in ``EDITORS``
    (docs/adding-an-editor.md)."""

    name: ClassVar[str]
    needs_projector = False
    restrains = False  # True: edit_batch calls ``restrain`` for every layer and writes its result after the batch
    needs_original_weights = False  # True: ``restrain`` gets the unedited weight (EditorState.original_weights)

    def __init__(self, mom2_update_weight: float = 1.0, norm_lambda: float = 0.0):
        self.mom2_update_weight = mom2_update_weight
        self.norm_lambda = norm_lambda

    @classmethod
    @abc.abstractmethod
    def from_hparams(cls, hparams) -> Editor:
        """The editor with its values from ``hparams`` (encore.editing.hparams.Hyperparameters)."""

    def preservation(self, state: LayerState) -> torch.Tensor:
        """lambda_p C0 + lambda_n I + S_P (what every update must not disturb), a new float64 matrix built in
        place (one d_ff x d_ff allocation: 1.6 GB at Llama-3-8B's d_ff)."""
        matrix = state.covariance.to(torch.float64, copy=True).mul_(self.mom2_update_weight)
        matrix += state.previous_key_moment
        if self.norm_lambda:
            matrix.diagonal().add_(self.norm_lambda)
        return matrix

    @abc.abstractmethod
    def solve(self, state: LayerState, keys: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """Delta (d_model x d_ff) from keys K (d_ff x n) and residuals R (d_model x n), float64."""

    def update_state(self, state: LayerState, keys: torch.Tensor) -> None:
        """After the solve: S_P <- S_P + K K^T (pre-update keys of this batch)."""
        accumulate_keys(state.previous_key_moment, keys)

    def restrain(self, delta: torch.Tensor, weight: torch.Tensor, original_weight: torch.Tensor | None) -> torch.Tensor:
        """The update actually written for the batch (float64, like ``delta``), from the solved update ``delta``, the
        weight before the batch and the unedited weight (None unless ``needs_original_weights``). Identity here;
        called only when ``restrains`` is True, so MEMIT, EMMET and AlphaEdit never pass through it."""
        return delta


class MEMIT(Editor):
    """Sequential MEMIT (§4.1), with the norm constraint when lambda_n > 0 (§4.2; MEMIT+NC, ENCORE):

        Delta = R K^T (lambda_p C0 + lambda_n I + S_P + K K^T)^{-1}

    the minimiser of lambda_p ||(W'-W) K0||^2/N + ||(W'-W) K_P||^2 + ||W'K - (WK + R)||^2 + lambda_n ||W'-W||_F^2.
    """

    name = "memit"

    @classmethod
    def from_hparams(cls, hparams) -> MEMIT:
        return cls(hparams.mom2_update_weight, hparams.norm_lambda)

    def solve(self, state, keys, residuals):
        # A = lambda_p C0 + lambda_n I + S_P + K K^T, passed on without another reference (freed once factored)
        solved_keys = spd_solve(self.preservation(state).addmm_(keys, keys.T), keys)  # A^{-1} K
        return residuals @ solved_keys.T  # R K^T A^{-1}  (A symmetric)


class EMMET(Editor):
    """EMMET (§4.3): preserve C = lambda_p C0 (+ lambda_n I) + S_P subject to W'K = WK + R (relaxed by lambda_E):

        Delta = R (K^T C^{-1} K + lambda_E I)^{-1} K^T C^{-1}

    so Delta K = R - lambda_E R (K^T C^{-1} K + lambda_E I)^{-1} (the equality holds exactly as lambda_E -> 0).
    """

    name = "emmet"

    def __init__(self, mom2_update_weight: float = 1.0, norm_lambda: float = 0.0, emmet_lambda: float = 0.1):
        super().__init__(mom2_update_weight, norm_lambda)
        self.emmet_lambda = emmet_lambda

    @classmethod
    def from_hparams(cls, hparams) -> EMMET:
        return cls(hparams.mom2_update_weight, hparams.norm_lambda, hparams.emmet_lambda)

    def solve(self, state, keys, residuals):
        solved_keys = spd_solve(self.preservation(state), keys)  # C^{-1} K   (d_ff x n)
        gram = keys.T @ solved_keys  # K^T C^{-1} K  (n x n)
        if keys.shape[1] > 1:  # the reference adds lambda_E only for batches of more than one edit
            gram = gram + self.emmet_lambda * _identity(gram.shape[0], gram)
        return spd_solve(gram, residuals.T).T @ solved_keys.T  # R D^{-1} (C^{-1} K)^T


class AlphaEdit(Editor):
    """AlphaEdit (§4.4): the update lives in the null space of C0 (projector P), regularised by alpha:

        Delta = R K^T P (S P + alpha I)^{-1},   S = S_P + K K^T

    computed through the equivalent SPD system (P S P + alpha I) X = P K R^T, Delta = X^T (X = P X).
    The norm constraint adds lambda_n to alpha (the penalty ||Delta||_F^2 on an update with Delta = Delta P).
    lambda_p is not used.
    """

    name = "alphaedit"
    needs_projector = True

    def __init__(self, norm_lambda: float = 0.0, alpha: float = 10.0, nullspace_threshold: float = 0.02, **_ignored):
        super().__init__(mom2_update_weight=0.0, norm_lambda=norm_lambda)
        self.alpha = alpha
        self.nullspace_threshold = nullspace_threshold

    @classmethod
    def from_hparams(cls, hparams) -> AlphaEdit:
        return cls(hparams.norm_lambda, hparams.alphaedit_l2, hparams.nullspace_threshold)

    def solve(self, state, keys, residuals):
        projector = state.projector
        accumulated = state.previous_key_moment.addmm(keys, keys.T)  # S = S_P + K K^T
        half = projector @ accumulated
        del accumulated
        system = half @ projector
        del half
        system.diagonal().add_(self.alpha + self.norm_lambda)
        return spd_solve(system, projector @ (keys @ residuals.T)).T


def accumulate_keys(previous_key_moment: torch.Tensor, keys: torch.Tensor) -> None:
    """S_P <- S_P + K K^T in place (K: d_ff x n, float64). The one definition used while editing and when a
    snapshot's state is rebuilt from stored keys, so both give bitwise the same S_P on the same device."""
    previous_key_moment += keys @ keys.T


def null_space_projector(covariance: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = U_0 U_0^T over the eigenvectors of C0 whose eigenvalue is below ``threshold`` (float64)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
    null_basis = eigenvectors[:, eigenvalues < threshold]
    return null_basis @ null_basis.T


class MEMITRect(MEMIT):
    """MEMIT+RECT: each batch's MEMIT update keeps only its ``fraction`` of entries with the largest relative change
    |Delta_ij| / |W_ij + 1e-8| (W = the weight before the batch), the rest is zeroed (restraints.rect)."""

    name = "memit_rect"
    restrains = True

    def __init__(self, mom2_update_weight: float = 1.0, norm_lambda: float = 0.0, fraction: float = 0.4):
        super().__init__(mom2_update_weight, norm_lambda)
        self.fraction = fraction

    @classmethod
    def from_hparams(cls, hparams) -> MEMITRect:
        return cls(hparams.mom2_update_weight, hparams.norm_lambda, hparams.rect_fraction)

    def restrain(self, delta, weight, original_weight):
        return restraints.rect(delta, weight.to(delta.device), self.fraction)


class MEMITPrune(MEMIT):
    """MEMIT+PRUNE: after each batch, the accumulated edit A = W + Delta - W_0 has its singular values above
    b = sigma_max(W_0) mapped to log_a(s) - log_a(b) + b (restraints.prune); the written update is A' - (W - W_0)."""

    name = "memit_prune"
    restrains = True
    needs_original_weights = True

    def __init__(self, mom2_update_weight: float = 1.0, norm_lambda: float = 0.0, log_base: float = math.e):
        super().__init__(mom2_update_weight, norm_lambda)
        self.log_base = log_base

    @classmethod
    def from_hparams(cls, hparams) -> MEMITPrune:
        return cls(hparams.mom2_update_weight, hparams.norm_lambda, hparams.prune_log_base)

    def restrain(self, delta, weight, original_weight):
        original = original_weight.to(device=delta.device, dtype=torch.float64)
        edit = weight.to(device=delta.device, dtype=torch.float64) + delta - original  # A = W + Delta - W_0
        correction = restraints.prune_correction(edit, restraints.spectral_norm(original), self.log_base)
        return delta if correction is None else delta + correction  # W + Delta' - W_0 = A + correction


# The registry: hparams ``editor`` -> class (each builds itself with ``from_hparams``); the hparams schema's
# ``editor`` enum lists the same names (tests/editing/test_hparams.py)
EDITORS: dict[str, type[Editor]] = {editor.name: editor for editor in (MEMIT, EMMET, AlphaEdit, MEMITRect, MEMITPrune)}


def make_editor(hparams) -> Editor:
    """The editor named by ``hparams.editor`` with its hyperparameters."""
    if hparams.editor not in EDITORS:
        raise ValueError(f"unknown editor {hparams.editor!r}; known editors: {sorted(EDITORS)}")
    return EDITORS[hparams.editor].from_hparams(hparams)
