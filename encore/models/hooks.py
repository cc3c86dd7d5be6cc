"""Forward hooks: read a module's input/output, edit a block's output, stop a forward early, replay lower blocks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import contextmanager

import torch

from encore.models.architecture import architecture_of, block_output_tensor, replace_block_output


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the needed activations are recorded."""


def record_inputs(modules: dict[int, torch.nn.Module]):
    """Context manager yielding a dict key -> first positional input of that module (or its ``hidden_states``
    keyword, as some model loops pass a block's input) from the latest forward."""

    def register(module, store):
        def hook(_module, args, kwargs):
            store(args[0] if args else kwargs["hidden_states"])  # returns None: the input is not changed

        return module.register_forward_pre_hook(hook, with_kwargs=True)

    return _recording(modules, register)


def record_outputs(modules: dict[int, torch.nn.Module]):
    """Context manager yielding a dict key -> (hidden-state) output of that module (a block's first output) from
    the latest forward."""

    def register(module, store):
        def hook(_module, _args, output):
            store(block_output_tensor(output))  # returns None: the output is not changed

        return module.register_forward_hook(hook)

    return _recording(modules, register)


@contextmanager
def _recording(modules: dict[int, torch.nn.Module], register):
    """Yield ``seen`` while ``register(module, store)`` hooks each module, ``store(value)`` setting ``seen[key]``."""
    seen: dict[int, torch.Tensor] = {}
    handles = [register(module, functools.partial(seen.__setitem__, key)) for key, module in modules.items()]
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
def stop_after(module: torch.nn.Module, before: bool = False):
    """Abort the forward pass right after ``module`` ran, or right before it runs with ``before`` (catch
    StopForward around the call; hooks registered earlier on the module still run first)."""

    def hook(*_):
        raise StopForward

    handle = module.register_forward_pre_hook(hook) if before else module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_until(model: torch.nn.Module, last_module: torch.nn.Module, *, before: bool = False, **inputs) -> None:
    """Forward pass (``model(**inputs, use_cache=False)``) that stops after ``last_module``, or before it with
    ``before``: the blocks above never run. Hooks the caller registered first (``record_inputs``,
    ``record_outputs``) record what they need."""
    with stop_after(last_module, before):
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass


class Replay(torch.nn.Module):
    """Stands in for a lower block: passes its input through, or returns ``hidden`` (a cached block output)."""

    def __init__(self, original: torch.nn.Module):
        super().__init__()
        self.hidden: torch.Tensor | None = None
        if hasattr(original, "attention_type"):  # read by some model loops (Gemma-3 sliding windows)
            self.attention_type = original.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.hidden is None else self.hidden


@contextmanager
def replay_blocks(model: torch.nn.Module, last: int, hidden: torch.Tensor | None = None):
    """Temporarily replace blocks 0..last by replays; block ``last`` returns ``hidden`` (settable on the
    yielded replay). Exact whenever ``hidden`` is what blocks 0..last compute: they are skipped, not changed."""
    blocks = model.get_submodule(architecture_of(model).blocks)
    originals = [blocks[i] for i in range(last + 1)]
    for i, original in enumerate(originals):
        blocks[i] = Replay(original)
    blocks[last].hidden = hidden
    try:
        yield blocks[last]
    finally:
        for i, original in enumerate(originals):
            blocks[i] = original
