"""Mixed precision (config key ``precision``): bfloat16 matrix products, everything else in float32.

precision: fp32 (the default: nothing changes) | bf16-mixed. Under bf16-mixed every ``nn.Linear`` (and GPT-2's
``Conv1D``) of a float32 model computes

    y = float32( bf16(x) @ bf16(W)^T ) + b

(the kernels accumulate in float32: oneDNN on the CPU, cuBLAS on CUDA), so its input and output stay float32 and
everything between the products stays float32: embeddings, norms, rotary embeddings, attention (softmax(QK^T/√d)V;
on the CPU the float32 sdpa kernels are also the faster ones), the residual stream, the element-wise MLP, the
log-softmax and loss, the optimised delta, MPES's top-1 test and the norms. The editors' closed-form solves stay
float64. bfloat16 copies of the weights (half the float32 weights' memory) are made on first use and remade when a
weight changes (its version counter moves on every in-place write, e.g. ``write_weight``).

Like ``tf32``, the setting is process-wide: ``resolve_execution`` applies it (``set_precision``) after the hardware
check, and the code that runs the model's forward passes opens ``matmul_precision(model)``: target optimisation
(encore.editing.targets), keys (encore.editing.keys) and answer scoring (encore.evaluation.counterfact, .prefix_scoring:
the editing metrics and the downstream tasks). C0 statistics, generation entropy, perplexity and the analyses stay
float32. Benchmarks and tests switch it with ``precision_scope``.
"""

from __future__ import annotations

import functools
import platform
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "bf16-mixed")
_active = {"precision": "fp32"}
_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions with native bfloat16 dot products


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith(("flags", "Features")) for flag in line.split()}


def cpu_has_bf16() -> bool:
    """Native bfloat16 matrix products on this CPU: AVX512-BF16 or AMX (x86), BF16 (aarch64)."""
    query = getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)
    if any(function is not None and function() for function in query):
        return True
    flags = _cpu_flags()
    return any(flag in flags for flag in _CPU_FLAGS) or (platform.machine() == "aarch64" and "bf16" in flags)


def bf16_missing(device: str) -> str | None:
    """Why ``device`` cannot run bfloat16 matrix products natively, or None when it can."""
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} has no native bfloat16 (needs compute capability >= 8.0)"
        return None
    if not cpu_has_bf16():
        return f"this CPU ({platform.processor() or platform.machine()}) has neither AVX512-BF16 nor AMX"
    return None


def check_precision(precision: str, device: str, dtype: str) -> None:
    """One-line errors naming the config key ``precision`` and the fix."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if dtype != "float32":
        raise ValueError(f"precision: {precision} keeps float32 weights and needs dtype: float32 (got {dtype}); "
                         "set dtype: float32 or precision: fp32")  # fmt: skip
    reason = bf16_missing(device)
    if reason:
        raise ValueError(f"precision: {precision} needs bfloat16 matrix products, but {reason}; set precision: fp32")


def set_precision(precision: str) -> None:
    """Make ``precision`` the process-wide setting (``resolve_execution`` calls this after its checks)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    _active["precision"] = precision


def get_precision() -> str:
    return _active["precision"]


@contextmanager
def precision_scope(precision: str):
    """The process-wide setting is ``precision`` inside the block (side-by-side benchmarks, tests)."""
    previous = get_precision()
    set_precision(precision)
    try:
        yield
    finally:
        set_precision(previous)


def _bf16_weight(module) -> torch.Tensor:
    """bfloat16 copy of the module's weight as (out, in), remade when the weight object, storage or version changes."""
    weight = module.weight
    key = (weight.data_ptr(), weight._version)
    cached = module.__dict__.get("_bf16_weight")
    if cached is None or cached[0]() is not weight or cached[1] != key:
        matrix = weight.detach().T if _is_conv1d(module) else weight.detach()  # Conv1D stores (in, out)
        cached = (weakref.ref(weight), key, matrix.to(torch.bfloat16).contiguous())
        module.__dict__["_bf16_weight"] = cached
    return cached[2]


def _is_conv1d(module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _bf16_forward(module):
    def forward(x):
        y = F.linear(x.to(torch.bfloat16), _bf16_weight(module)).to(x.dtype)
        return y if module.bias is None else y + module.bias

    return forward


def _products(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) or _is_conv1d(m)]


@contextmanager
def matmul_precision(model):
    """Inside the block the model's matrix products follow the process-wide precision (no-op for fp32 and for
    models whose weights are not float32; re-entrant)."""
    if get_precision() == "fp32" or not isinstance(model, torch.nn.Module) or model.__dict__.get("_bf16_active"):
        yield
        return
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.dtype != torch.float32:
        yield
        return
    modules = _products(model)
    previous = [m.__dict__.get("forward") for m in modules]
    model.__dict__["_bf16_active"] = True
    for module in modules:
        module.forward = _bf16_forward(module)
    try:
        yield
    finally:
        for module, forward in zip(modules, previous):
            del module.forward
            if forward is not None:
                module.forward = forward
        model.__dict__["_bf16_active"] = False


def with_matmul_precision(function):
    """Decorator: ``function(model, ...)`` runs inside ``matmul_precision(model)``."""

    @functools.wraps(function)
    def wrapped(model, *args, **kwargs):
        with matmul_precision(model):
            return function(model, *args, **kwargs)

    return wrapped
