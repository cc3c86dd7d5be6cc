"""Target values z = h + delta at the last edited layer, optimised for all requests of a batch at once.

Per request r (algorithms.md §2.5): delta_r is added to the output of block l* at the last subject
token of each of its sequences (rewriting prompts, bare first, then the KL prompt "{} is a"), and
minimises

    L_r = mean_i NLL_i(target)  +  kl_factor * KL(q_it || q_0)  +  wd * ||delta_r|| / ||h_r||^2

The requests never share a sequence, each delta_r only receives the gradient of its own L_r, Adam is
element-wise and clamping / stopping are per row, so the batched result equals independent runs.
L is a sum of per-sequence terms (plus wd), so sequences are processed in length-sorted micro-batches
(little padding) whose gradients add up. A finished request drops out. The blocks up to l* do not
depend on delta: their output is computed once (first iteration) and replayed afterwards, and the LM
head is applied only at the scored positions. Stop rules, checked in this
order after each forward: MPES (target top-1 at every target token of every context-prefixed prompt
on m = n+1 iterations, §5), loss < loss_stop, iteration budget.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from encore.architecture import architecture_of
from encore.data import EditRecord
from encore.hooks import edit_output
from encore.tokens import answer_token_ids, encode, fill_subject, pad_id, pad_right, subject_last_index

KL_PROMPT = "{} is a"
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class TargetSettings:
    layer: int  # l*: block whose output receives delta
    steps: int = 20  # v_num_grad_steps: forward passes at most (steps - 1 optimizer steps)
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    loss_stop: float = 0.05
    mpes: int | None = None  # "+n" cut-off; None = MPES off
    mpes_rule: str = "all"  # "all": all 5*T positions correct; "v1": num_correct == #context prompts (official v1 code)
    tokens_per_microbatch: int = 512  # padded tokens per forward: speed/memory only (measured fastest on 2 CPU cores)


@dataclass
class TargetResult:
    z: torch.Tensor  # (n, d_model) target values h_init + delta
    delta: torch.Tensor  # (n, d_model)
    h_init: torch.Tensor  # (n, d_model)
    iterations: list[int] = field(default_factory=list)  # forward passes taken
    stop_reason: list[str] = field(default_factory=list)  # "mpes" | "loss" | "budget"
    target_probability: list[float] = field(default_factory=list)  # mean_i exp(-NLL_i) at the stop
    loss: list[float] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)  # per forward: request, iteration, loss, num_correct


@dataclass
class _Sequence:
    request: int
    ids: list[int]
    lookup: int  # last subject token
    prompt_length: int | None  # rewriting prompt: length before the appended target tokens; None = KL prompt
    prompt_index: int


def _sequences(tokenizer, record: EditRecord, request: int, templates: list[str]) -> tuple[list[_Sequence], list[int]]:
    target_ids = answer_token_ids(tokenizer, record.target_new)
    sequences = []
    for index, context in enumerate(templates):
        template = context.replace("{}", record.prompt, 1)
        prompt_ids = encode(tokenizer, fill_subject(template, record.subject))
        lookup = subject_last_index(tokenizer, template, record.subject)
        sequences.append(_Sequence(request, prompt_ids + target_ids[:-1], lookup, len(prompt_ids), index))
    kl_ids = encode(tokenizer, fill_subject(KL_PROMPT, record.subject))
    sequences.append(_Sequence(request, kl_ids, subject_last_index(tokenizer, KL_PROMPT, record.subject), None, -1))
    return sequences, target_ids


def _log_softmax_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """log softmax of the LM head (with Gemma-style soft-capping if configured)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)


class _Replay(torch.nn.Module):
    """Stands in for a block below l*: passes its input through, or returns the cached block-l* output."""

    def __init__(self, original: torch.nn.Module):
        super().__init__()
        self.hidden: torch.Tensor | None = None
        if hasattr(original, "attention_type"):  # read by some model loops (Gemma-3 sliding windows)
            self.attention_type = original.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.hidden is None else self.hidden


@contextmanager
def _replay_lower_blocks(model, layer: int):
    """Temporarily replace blocks 0..layer by replays; yields the replay of block ``layer``."""
    blocks = model.get_submodule(architecture_of(model).blocks)
    originals = [blocks[i] for i in range(layer + 1)]
    for i, original in enumerate(originals):
        blocks[i] = _Replay(original)
    try:
        yield blocks[layer]
    finally:
        for i, original in enumerate(originals):
            blocks[i] = original


def _pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    padded = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    for i, row in enumerate(rows):
        padded[i, : row.shape[0]] = row
    return padded


def _microbatches(sequences: list[_Sequence], budget: int) -> list[list[_Sequence]]:
    ordered = sorted(sequences, key=lambda s: len(s.ids))
    batches, current = [], []
    for sequence in ordered:
        if current and len(sequence.ids) * (len(current) + 1) > budget:
            batches.append(current)
            current = []
        current.append(sequence)
    return batches + ([current] if current else [])


@contextmanager
def _delta_entry(model, block, layer: int, cached: torch.Tensor | None):
    """The module whose output receives delta: block l* itself, or a replay of its cached output."""
    if cached is None:
        yield block
        return
    with _replay_lower_blocks(model, layer) as replay:
        replay.hidden = cached
        yield replay


def optimise_targets(
    model, tokenizer, records: list[EditRecord], settings: TargetSettings, context_templates: list[list[str]]
) -> TargetResult:
    templates = [template for group in context_templates for template in group]
    n, n_context = len(records), len(templates) - 1
    built = [_sequences(tokenizer, record, r, templates) for r, record in enumerate(records)]
    all_sequences = [sequence for sequences, _ in built for sequence in sequences]
    target_ids = [ids for _, ids in built]
    block = model.get_submodule(architecture_of(model).block(settings.layer))
    device, dtype = model.device, next(model.parameters()).dtype
    delta = torch.zeros(n, model.config.hidden_size, dtype=dtype, device=device)
    h_init, adam_m, adam_v = torch.zeros_like(delta), torch.zeros_like(delta), torch.zeros_like(delta)
    kl_reference: dict[int, torch.Tensor] = {}
    mpes_count = [0] * n
    result = TargetResult(z=delta, delta=delta, h_init=h_init, iterations=[0] * n, stop_reason=[""] * n,
                          target_probability=[0.0] * n, loss=[0.0] * n)
    active = list(range(n))
    lower_output: dict[int, torch.Tensor] = {}  # id(sequence) -> block-l* output without delta

    for iteration in range(settings.steps):
        slot_of = {r: slot for slot, r in enumerate(active)}
        active_delta = delta[active].clone().requires_grad_(True)
        nll = {r: torch.zeros(len(templates), dtype=torch.float64) for r in active}  # per rewriting prompt
        correct = {r: 0 for r in active}  # top-1 target tokens over the context-prefixed prompts
        kl_value = {}
        sequences = [s for s in all_sequences if s.request in slot_of]
        for micro in _microbatches(sequences, settings.tokens_per_microbatch):
            batch = pad_right([s.ids for s in micro], pad_id(tokenizer), device)
            rows = torch.arange(len(micro), device=device)
            lookup = torch.tensor([s.lookup for s in micro], device=device)
            owner = torch.tensor([slot_of[s.request] for s in micro], device=device)

            def add_delta(hidden):
                if iteration == 0:
                    for row, s in enumerate(micro):
                        lower_output[id(s)] = hidden[row, : len(s.ids)].detach()
                        if s.prompt_index == 0:
                            h_init[s.request] = hidden[row, s.lookup].detach()
                hidden = hidden.clone()
                hidden[rows, lookup] = hidden[rows, lookup] + active_delta[owner]
                return hidden

            cached = _pad_rows([lower_output[id(s)] for s in micro], batch.input_ids.shape[1]) if iteration else None
            with torch.enable_grad(), _delta_entry(model, block, settings.layer, cached) as target:
                with edit_output(target, add_delta):
                    hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                              use_cache=False).last_hidden_state
                # scored positions: target tokens of rewriting prompts, the subject position of the KL prompt
                score_rows, score_cols, labels, spans = [], [], [], []
                for row, s in enumerate(micro):
                    start = len(score_rows)
                    if s.prompt_length is None:
                        score_rows.append(row), score_cols.append(s.lookup), labels.append(-1)
                    else:
                        for j, token in enumerate(target_ids[s.request]):
                            score_rows.append(row), score_cols.append(s.prompt_length - 1 + j), labels.append(token)
                    spans.append((start, len(score_rows)))
                log_probs = _log_softmax_head(model, hidden[score_rows, score_cols])
                terms = []
                for s, (start, stop) in zip(micro, spans):
                    if s.prompt_length is None:
                        current = log_probs[start]
                        if iteration == 0:
                            kl_reference[s.request] = current.detach()
                        kl = settings.kl_factor * torch.sum(current.exp() * (current - kl_reference[s.request]))
                        kl_value[s.request] = float(kl.detach())
                        terms.append(kl)
                    else:
                        label = torch.tensor(labels[start:stop], device=device)
                        token_log_probs = log_probs[start:stop].gather(1, label[:, None])[:, 0]
                        prompt_nll = -token_log_probs.mean()
                        nll[s.request][s.prompt_index] = float(prompt_nll.detach())
                        if s.prompt_index > 0:
                            correct[s.request] += int((log_probs[start:stop].argmax(dim=-1) == label).sum())
                        terms.append(prompt_nll / len(templates))
                torch.stack(terms).sum().backward()

        gradient = active_delta.grad.clone()
        with torch.enable_grad():
            decay = active_delta.norm(dim=1) / h_init[active].norm(dim=1) ** 2
            (decay_gradient,) = torch.autograd.grad(settings.weight_decay * decay.sum(), active_delta)
        gradient += decay_gradient

        continuing = []
        for slot, r in enumerate(active):
            loss = float(nll[r].mean()) + kl_value[r] + settings.weight_decay * float(decay[slot].detach())
            positions = n_context * len(target_ids[r])
            result.iterations[r], result.loss[r] = iteration + 1, loss
            result.target_probability[r] = float(torch.exp(-nll[r]).mean())
            result.trace.append({"request": r, "iteration": iteration, "loss": loss,
                                 "num_correct": correct[r], "positions": positions})
            stop = None
            if settings.mpes is not None:
                needed = positions if settings.mpes_rule == "all" else n_context
                mpes_count[r] += correct[r] == needed
                if mpes_count[r] == settings.mpes + 1:
                    stop = "mpes"
            if stop is None and loss < settings.loss_stop:
                stop = "loss"
            if stop is None and iteration == settings.steps - 1:
                stop = "budget"
            if stop:
                result.stop_reason[r] = stop
            else:
                continuing.append(slot)
        if not continuing:
            break
        # ---- Adam (torch.optim.Adam defaults, no weight decay) on the continuing rows, then clamp
        with torch.no_grad():
            index = torch.tensor([active[slot] for slot in continuing], device=device)
            g = gradient[continuing]
            step = iteration + 1
            (beta1, beta2) = ADAM_BETAS
            adam_m[index] = beta1 * adam_m[index] + (1 - beta1) * g
            adam_v[index] = beta2 * adam_v[index] + (1 - beta2) * g * g
            denominator = adam_v[index].sqrt() / math.sqrt(1 - beta2**step) + ADAM_EPS
            updated = delta[index] - (settings.lr / (1 - beta1**step)) * adam_m[index] / denominator
            max_norm = settings.clamp_norm_factor * h_init[index].norm(dim=1, keepdim=True)
            norms = updated.norm(dim=1, keepdim=True)
            delta[index] = torch.where(norms > max_norm, updated * max_norm / norms, updated)
        active = [active[slot] for slot in continuing]

    result.z = h_init + delta
    return result
