"""Forward hooks: read a module's input/output, edit a block's output, stop a forward early."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from encore.architecture import block_output_tensor, replace_block_output


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the needed activations are recorded."""


@contextmanager
def record_inputs(modules: dict[int, torch.nn.Module]):
    """Yield a dict layer -> first positional input of that module from the latest forward."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for key, module in modules.items():
        def hook(_module, args, key=key):
            seen[key] = args[0]
        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def edit_output(module: torch.nn.Module, edit: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the module's (hidden-state) output by edit(output)."""
    def hook(_module, _args, output):
        return replace_block_output(output, edit(block_output_tensor(output)))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def stop_after(module: torch.nn.Module):
    """Abort the forward pass right after ``module`` ran (catch StopForward around the call)."""
    def hook(_module, _args, _output):
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_until(model: torch.nn.Module, last_module: torch.nn.Module, **inputs) -> None:
    """Forward pass that stops after ``last_module`` (hooks registered by the caller record what they need)."""
    with stop_after(last_module):
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass
