"""Target values z = h + delta at the last edited layer, optimised for all requests of a batch at once.

Per request r (algorithms.md §2.5): delta_r is added to the output of block l* at the last subject
token of each of its sequences (6 rewriting prompts + 1 KL prompt "{} is a"), and minimises

    L_r = mean_i NLL(target | prompt_i)  +  kl_factor * KL(q_it || q_0)  +  wd * ||delta_r|| / ||h_r||^2

The requests never share a sequence, each delta_r only receives the gradient of its own L_r, Adam is
element-wise and clamping / stopping are per row: the batched result equals independent runs.
A finished request drops out of the batch. Stop rules, checked in this order after each forward:
MPES (target top-1 at every target token of every context-prefixed prompt on m = n+1 iterations,
§5), loss < loss_stop, iteration budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from encore.architecture import architecture_of
from encore.data import EditRecord
from encore.hooks import edit_output
from encore.tokens import answer_token_ids, encode, fill_subject, pad_id, pad_right, subject_last_index

KL_PROMPT = "{} is a"


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
class _Request:
    sequences: list[list[int]]  # rewriting prompts (bare first) then the KL prompt
    lookup: list[int]  # last subject token per sequence
    target_ids: list[int]
    prompt_lengths: list[int]  # rewriting prompts: length without the appended target tokens


def _build_request(tokenizer, record: EditRecord, templates: list[str]) -> _Request:
    target_ids = answer_token_ids(tokenizer, record.target_new)
    sequences, lookup, prompt_lengths = [], [], []
    for context in templates:
        template = context.replace("{}", record.prompt, 1)
        prompt_ids = encode(tokenizer, fill_subject(template, record.subject))
        sequences.append(prompt_ids + target_ids[:-1])
        lookup.append(subject_last_index(tokenizer, template, record.subject))
        prompt_lengths.append(len(prompt_ids))
    sequences.append(encode(tokenizer, fill_subject(KL_PROMPT, record.subject)))
    lookup.append(subject_last_index(tokenizer, KL_PROMPT, record.subject))
    return _Request(sequences, lookup, target_ids, prompt_lengths)


def _log_probs_at(model, hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """log softmax of the LM head applied only at the scored positions."""
    logits = model.get_output_embeddings()(hidden[rows, cols])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)


def optimise_targets(
    model, tokenizer, records: list[EditRecord], settings: TargetSettings, context_templates: list[list[str]]
) -> TargetResult:
    templates = [template for group in context_templates for template in group]
    n_context = len(templates) - 1
    requests = [_build_request(tokenizer, record, templates) for record in records]
    block = model.get_submodule(architecture_of(model).block(settings.layer))
    dtype = next(model.parameters()).dtype
    d_model = model.config.hidden_size
    n = len(records)
    delta = torch.zeros(n, d_model, dtype=dtype, device=model.device)
    h_init = torch.zeros_like(delta)
    adam_m, adam_v = torch.zeros_like(delta), torch.zeros_like(delta)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    kl_reference: dict[int, torch.Tensor] = {}
    mpes_count = [0] * n
    result = TargetResult(z=delta, delta=delta, h_init=h_init, iterations=[0] * n, stop_reason=[""] * n,
                          target_probability=[0.0] * n, loss=[0.0] * n)
    active = list(range(n))
    base = model.base_model

    for iteration in range(settings.steps):
        # ---- one right-padded batch with every sequence of every active request
        sequences, owner, lookup = [], [], []
        for slot, r in enumerate(active):
            sequences += requests[r].sequences
            owner += [slot] * len(requests[r].sequences)
            lookup += requests[r].lookup
        batch = pad_right(sequences, pad_id(tokenizer), model.device)
        seq_index = torch.arange(len(sequences), device=model.device)
        lookup_t = torch.tensor(lookup, device=model.device)
        owner_t = torch.tensor(owner, device=model.device)
        active_delta = delta[active].clone().requires_grad_(True)

        def add_delta(hidden):
            if iteration == 0:
                bare_rows = [i for i in range(len(sequences)) if i == 0 or owner[i] != owner[i - 1]]
                h_init[active] = hidden[bare_rows, lookup_t[bare_rows]].detach()
            hidden = hidden.clone()
            hidden[seq_index, lookup_t] = hidden[seq_index, lookup_t] + active_delta[owner_t]
            return hidden

        with torch.enable_grad(), edit_output(block, add_delta):
            hidden = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state

            # ---- gather scored positions: target tokens of rewriting prompts and the KL position
            rows, cols, labels, kl_rows, kl_cols = [], [], [], [], []
            start = 0
            for r in active:
                request = requests[r]
                for i, length in enumerate(request.prompt_lengths):
                    for j, token in enumerate(request.target_ids):
                        rows.append(start + i)
                        cols.append(length - 1 + j)
                        labels.append(token)
                kl_rows.append(start + len(request.prompt_lengths))
                kl_cols.append(request.lookup[-1])
                start += len(request.sequences)
            log_probs = _log_probs_at(model, hidden, torch.tensor(rows + kl_rows), torch.tensor(cols + kl_cols))
            target_log_probs = log_probs[: len(rows)].gather(1, torch.tensor(labels, device=model.device)[:, None])[:, 0]
            correct = log_probs[: len(rows)].argmax(dim=-1) == torch.tensor(labels, device=model.device)
            kl_log_probs = log_probs[len(rows) :]

            losses, finished = [], []
            offset = 0
            for slot, r in enumerate(active):
                request, T, P = requests[r], len(requests[r].target_ids), len(requests[r].prompt_lengths)
                token_lp = target_log_probs[offset : offset + P * T].view(P, T)
                token_ok = correct[offset : offset + P * T].view(P, T)
                offset += P * T
                nll_per_prompt = -token_lp.mean(dim=1)
                if iteration == 0:
                    kl_reference[r] = kl_log_probs[slot].detach()
                current = kl_log_probs[slot]
                kl = settings.kl_factor * torch.sum(current.exp() * (current - kl_reference[r]))
                weight_decay = settings.weight_decay * active_delta[slot].norm() / h_init[r].norm() ** 2
                loss = nll_per_prompt.mean() + kl + weight_decay
                losses.append(loss)
                result.iterations[r] = iteration + 1
                result.loss[r] = float(loss.detach())
                result.target_probability[r] = float(torch.exp(-nll_per_prompt.detach()).mean())

                num_correct = int(token_ok[1:].sum())  # context-prefixed prompts only (bare excluded)
                result.trace.append({"request": r, "iteration": iteration, "loss": result.loss[r],
                                     "num_correct": num_correct, "positions": n_context * T})
                stop = None
                if settings.mpes is not None:
                    needed = n_context * T if settings.mpes_rule == "all" else n_context
                    if num_correct == needed:
                        mpes_count[r] += 1
                    if mpes_count[r] == settings.mpes + 1:
                        stop = "mpes"
                if stop is None and loss.item() < settings.loss_stop:
                    stop = "loss"
                if stop is None and iteration == settings.steps - 1:
                    stop = "budget"
                if stop:
                    result.stop_reason[r] = stop
                    finished.append(slot)

            continuing = [slot for slot in range(len(active)) if slot not in finished]
            if continuing:
                total = torch.stack([losses[slot] for slot in continuing]).sum()
                (gradient,) = torch.autograd.grad(total, active_delta)

        if not continuing:
            break
        # ---- Adam (torch.optim.Adam defaults, no weight decay) on the continuing rows, then clamp
        with torch.no_grad():
            rows_t = torch.tensor([active[slot] for slot in continuing], device=model.device)
            g = gradient[continuing]
            step = iteration + 1
            adam_m[rows_t] = beta1 * adam_m[rows_t] + (1 - beta1) * g
            adam_v[rows_t] = beta2 * adam_v[rows_t] + (1 - beta2) * g * g
            denom = adam_v[rows_t].sqrt() / math.sqrt(1 - beta2**step) + eps
            delta[rows_t] = delta[rows_t] - (settings.lr / (1 - beta1**step)) * adam_m[rows_t] / denom
            max_norm = settings.clamp_norm_factor * h_init[rows_t].norm(dim=1, keepdim=True)
            norms = delta[rows_t].norm(dim=1, keepdim=True)
            delta[rows_t] = torch.where(norms > max_norm, delta[rows_t] * max_norm / norms, delta[rows_t])
        active = [active[slot] for slot in continuing]

    result.z = h_init + delta
    return result
