"""Restraints applied to an editor's update after the batch's solves: RECT and PRUNE (docs/algorithms-extensions.md).

Both act per edited matrix, in float64, on the update Delta (d_model x d_ff) of the batch:

RECT (Gu et al., EMNLP 2024, "Model Editing Harms General Abilities of Large Language Models: Regularization to
the Rescue"): keep the entries of Delta with the largest relative change r_ij = |Delta_ij| / |W_ij + eps| (W = the
weight before the batch, eps = 1e-8), zero the rest. Reference: scalable-model-editing/knowledge-editing-
regularization (ENCORE v2) memit/memit_rect_main.py, ``apply_memit_rect_to_model``: k_percent = 40, epsilon = 1e-8,
kept = r >= the k-th smallest r with k = int(N (100 - k_percent) / 100), N = d_model d_ff (so N - k + 1 entries
when no two ratios tie). Here exactly N - k + 1 entries are kept, ties broken by row-major position (first kept).

PRUNE (Ma et al., ICLR 2025, "Perturbation-Restrained Sequential Model Editing"): with the accumulated edit
A = W_current - W_original = U diag(s) V^T, every singular value above the bound b = sigma_max(W_original) is
mapped to F(s) = log_alpha(s) - log_alpha(b) + b (alpha = e by default); values <= b and U, V are untouched.
References: the ENCORE v2 repository experiments/evaluate_unified_editing.py (MEMIT_prune branch: torch.log, bound
= max singular value of the unedited weight, strict ">"), the PRUNE repository mjy1111/PRUNE (README: "log" = base e,
"log1_2" / "log1_5" = alpha 1.2 / 1.5). Deviations: applied after every batch, later batches editing the restrained
model (the references restrain once: after the last batch, or when loading saved weights for evaluation), and
written as W_0 + F(A) (the ENCORE v2 and AlphaEdit code add F(A) to the current weights, counting A twice).
Both restraints are applied after the batch's last layer is solved, as in the references (sequential.edit_batch).
"""

from __future__ import annotations

import math

import torch

RECT_EPSILON = 1e-8  # the reference's epsilon (added to W, not to |W|)


def rect_keep_count(numel: int, fraction: float) -> int:
    """N - k + 1 with k = int(N (1 - fraction)): what the reference's ``kthvalue`` threshold keeps (at most N)."""
    return min(numel, numel - int(numel * (1.0 - fraction)) + 1)


def rect_mask(delta: torch.Tensor, weight: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the entries RECT keeps: the ``rect_keep_count`` largest |Delta| / |W + eps| (stable order)."""
    ratio = (delta / (weight.to(delta.dtype) + RECT_EPSILON)).abs().reshape(-1)
    keep = rect_keep_count(ratio.numel(), fraction)
    order = torch.sort(ratio, descending=True, stable=True).indices  # ties: the earlier position first
    mask = torch.zeros(ratio.numel(), dtype=torch.bool, device=ratio.device)
    mask[order[:keep]] = True
    return mask.reshape(delta.shape)


def rect(delta: torch.Tensor, weight: torch.Tensor, fraction: float) -> torch.Tensor:
    """RECT: Delta on the kept entries (bitwise), 0 elsewhere."""
    return torch.where(rect_mask(delta, weight, fraction), delta, torch.zeros_like(delta))


def prune_map(singular_values: torch.Tensor, bound: float, log_base: float = math.e) -> torch.Tensor:
    """PRUNE's F: s -> log_a(s) - log_a(b) + b for s > b, s otherwise. F is increasing (the order of the singular
    values is kept) and F(s) < s for s > b when b >= 1 / ln(a) (b >= 1 for a = e; true of LLM weights)."""
    scale = math.log(log_base)
    mapped = (singular_values.log() - math.log(bound)) / scale + bound
    return torch.where(singular_values > bound, mapped, singular_values)


def prune_correction(edit: torch.Tensor, bound: float, log_base: float = math.e) -> torch.Tensor | None:
    """U_k diag(F(s_k) - s_k) V_k^T over the k singular values of the accumulated edit A above ``bound`` (None when
    there are none): A + this is A with those values mapped by ``prune_map``, the rest of its SVD unchanged."""
    left, values, right = torch.linalg.svd(edit, full_matrices=False)
    above = values > bound
    if not bool(above.any()):
        return None
    change = prune_map(values[above], bound, log_base) - values[above]
    return (left[:, above] * change) @ right[above]


def prune(edit: torch.Tensor, bound: float, log_base: float = math.e) -> torch.Tensor:
    """PRUNE's restrained accumulated edit (``edit`` itself when no singular value exceeds ``bound``)."""
    correction = prune_correction(edit, bound, log_base)
    return edit if correction is None else edit + correction


def spectral_norm(matrix: torch.Tensor) -> float:
    """sigma_max (float64), PRUNE's bound for the original matrix."""
    return float(torch.linalg.svdvals(matrix.to(torch.float64))[0])
