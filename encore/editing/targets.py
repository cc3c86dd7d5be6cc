"""Target values z = h + delta at the last edited layer, optimised for all requests of a batch at once.

Per request r (algorithms.md §2.5): delta_r is added to the output of block l* at the last subject
token of each of its sequences (rewriting prompts, bare first, then the KL prompt "{} is a"), and
minimises

    L_r = mean_i NLL_i(target)  +  kl_factor * KL(q_it || q_0)  +  wd * ||delta_r|| / ||h_r||^2

The requests never share a sequence, each delta_r only receives the gradient of its own L_r, Adam is
element-wise and clamping / stopping are per row, so the batched result equals independent runs.
L is a sum of per-sequence terms (plus wd), so sequences are processed in length-sorted micro-batches
(little padding) whose gradients add up. A finished request drops out. The blocks up to l* do not
depend on delta: their output is computed once (first iteration) and replayed afterwards; with
``prefix_reuse`` the blocks above l* also run only from the last subject token on, attending to the
recorded keys/values of the positions before it (encore.editing.target_forward). The LM head is applied only
at the scored positions. Stop rules, checked in this order after each forward: MPES (target top-1 at every target token of every context-prefixed prompt
on m = n+1 iterations, §5), loss < loss_stop, iteration budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from encore.data.datasets import EditRecord
from encore.editing.target_forward import FullSequences, PrefixReuse, TargetSequence
from encore.models.precision import with_matmul_precision
from encore.models.tokens import answer_token_ids, encode, fill_subject, pad_id, subject_last_index

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
    tokens_per_microbatch: int | None = None  # padded tokens per forward (speed/memory only); None: by device
    prefix_reuse: bool = True  # run only the suffix from the last subject token after the first iteration (exact)


def default_tokens_per_microbatch(device) -> int:
    """512 on the CPU (measured fastest on 2 cores); 2048 on a GPU (~20 GB of saved activations for the backward
    through Llama-3-8B's 23 blocks above l* in float32: fits an 80 GB GPU next to the weights and editor state)."""
    return 512 if torch.device(device).type == "cpu" else 2048


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


def _sequences(tokenizer, record: EditRecord, request: int, templates: list[str]) -> list[TargetSequence]:
    """The request's rewriting prompts (bare first, + all target tokens but the last) and its KL prompt."""
    target_ids = answer_token_ids(tokenizer, record.target_new)
    sequences = []
    for index, context in enumerate(templates):
        template = context.replace("{}", record.prompt, 1)
        prompt_ids = encode(tokenizer, fill_subject(template, record.subject))
        lookup = subject_last_index(tokenizer, template, record.subject)
        scored = [len(prompt_ids) - 1 + j for j in range(len(target_ids))]
        sequences.append(TargetSequence(request, prompt_ids + target_ids[:-1], lookup, index, scored, list(target_ids)))
    kl_ids = encode(tokenizer, fill_subject(KL_PROMPT, record.subject))
    kl_lookup = subject_last_index(tokenizer, KL_PROMPT, record.subject)
    sequences.append(TargetSequence(request, kl_ids, kl_lookup, -1, [kl_lookup], [-1]))
    return sequences


def _log_softmax_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """log softmax of the LM head (with Gemma-style soft-capping if configured)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)


@with_matmul_precision  # precision: bf16-mixed: bfloat16 matrix products, delta/loss/stops float32
def optimise_targets(
    model, tokenizer, records: list[EditRecord], settings: TargetSettings, context_templates: list[list[str]]
) -> TargetResult:
    """Target values z_r = h_r + delta_r at the output of block l* = ``settings.layer`` for every request r of the
    batch, optimised together (algorithms.md §2.5). delta_r minimises

        L_r = mean_i NLL_i(target)  +  kl_factor * KL(q || q_0)  +  wd * ||delta_r|| / ||h_r||^2

    over the request's rewriting prompts i (one per template of ``context_templates``, bare first: the target's
    tokens teacher-forced) and its KL prompt "{} is a" (q, q_0: next-token distribution at the subject, now and at
    iteration 0), with h_r the block-l* output at the last subject token of the bare prompt, wd =
    ``settings.weight_decay``. Iteration it = 0 .. steps-1: one forward of every active request, L_r and the MPES
    statistic; stop r by MPES (``mpes_stop``, algorithms.md §5), else if L_r < loss_stop, else if it = steps-1;
    otherwise one Adam step (lr, betas (0.9, 0.999), eps 1e-8, no decay) and the clamp ||delta_r|| <= c ||h_r||
    (c = clamp_norm_factor). A stopped request drops out; the others are unaffected (per-row gradients, Adam and
    stops). Returns z, delta, h and per request the forwards taken, stop reason, mean exp(-NLL_i) and loss at the
    stop, and a per-forward trace."""
    templates = [template for group in context_templates for template in group]
    n, n_templates, n_context = len(records), len(templates), len(templates) - 1
    sequences = [s for r, record in enumerate(records) for s in _sequences(tokenizer, record, r, templates)]
    target_lengths = [len(s.labels) for s in sequences if s.prompt_index == 0]
    device, dtype = model.device, next(model.parameters()).dtype
    budget = settings.tokens_per_microbatch or default_tokens_per_microbatch(device)
    strategy = (PrefixReuse if settings.prefix_reuse else FullSequences)(
        model, settings.layer, pad_id(tokenizer), budget
    )
    delta = torch.zeros(n, model.config.hidden_size, dtype=dtype, device=device)
    h_init, adam_m, adam_v = torch.zeros_like(delta), torch.zeros_like(delta), torch.zeros_like(delta)
    kl_reference: torch.Tensor | None = None  # (n, vocab): log q_0 of each request's KL prompt
    mpes_count = [0] * n
    result = TargetResult(
        z=delta,
        delta=delta,
        h_init=h_init,
        iterations=[0] * n,
        stop_reason=[""] * n,
        target_probability=[0.0] * n,
        loss=[0.0] * n,
    )
    active = list(range(n))

    for iteration in range(settings.steps):
        active_delta = delta[active].clone().requires_grad_(True)
        nll, correct, kl_value, kl_reference = _forward_backward(
            model, strategy, sequences, active, active_delta, h_init, kl_reference, iteration, settings, n_templates
        )
        gradient = active_delta.grad.clone()
        with torch.enable_grad():
            decay = active_delta.norm(dim=1) / h_init[active].norm(dim=1) ** 2
            (decay_gradient,) = torch.autograd.grad(settings.weight_decay * decay.sum(), active_delta)
        gradient += decay_gradient

        continuing = []
        for slot, r in enumerate(active):
            loss = float(nll[r].mean()) + float(kl_value[r]) + settings.weight_decay * float(decay[slot].detach())
            positions = n_context * target_lengths[r]
            result.iterations[r], result.loss[r] = iteration + 1, loss
            result.target_probability[r] = float(torch.exp(-nll[r]).mean())
            result.trace.append(
                {
                    "request": r,
                    "iteration": iteration,
                    "loss": loss,
                    "num_correct": int(correct[r]),
                    "positions": positions,
                }
            )
            mpes_count[r], stop = stop_reason(mpes_count[r], int(correct[r]), positions, n_context, loss, iteration,
                                              settings)  # fmt: skip
            if stop:
                result.stop_reason[r] = stop
            else:
                continuing.append(slot)
        if not continuing:
            break
        index = torch.tensor([active[slot] for slot in continuing], device=device)
        _adam_step_and_clamp(delta, adam_m, adam_v, h_init, index, gradient[continuing], iteration + 1, settings)
        active = [active[slot] for slot in continuing]

    result.z = h_init + delta
    return result


def _forward_backward(model, strategy, sequences, active, active_delta, h_init, kl_reference, iteration, settings,
                      n_templates):  # fmt: skip
    """One forward and backward of every active request's sequences, microbatch by microbatch: the per-prompt NLL
    (n x templates), the top-1 hit count over the context-prefixed prompts and the KL term per request, and the KL
    reference log q_0 (stored at iteration 0). Gradients accumulate in ``active_delta.grad``; at iteration 0
    ``h_init`` receives h_r (the block output at the bare prompt's last subject token)."""
    n, device = len(h_init), h_init.device
    slot_of = {r: slot for slot, r in enumerate(active)}
    nll = torch.zeros(n, n_templates, dtype=torch.float64)  # per request and rewriting prompt
    correct = torch.zeros(n, dtype=torch.long)  # top-1 target tokens over the context-prefixed prompts
    kl_value = torch.zeros(n, dtype=torch.float64)
    for micro in strategy.microbatches([s for s in sequences if s.request in slot_of], iteration == 0):
        owner = torch.tensor([slot_of[s.request] for s in micro], device=device)
        with torch.enable_grad():
            # index_select, not active_delta[owner]: the backward of advanced indexing (index_put with
            # accumulate) adds repeated rows with atomics on >1 CPU thread (order varies run to run);
            # index_select's backward (index_add_) adds them serially in index order at any thread count
            hidden, h_lookup = strategy.forward(micro, iteration == 0, active_delta.index_select(0, owner))
            log_probs = _log_softmax_head(model, hidden)
            terms, stats = _loss_terms(
                micro, log_probs, kl_reference if iteration else None, settings.kl_factor, n_templates, device
            )
            terms.backward()
        if h_lookup is not None:
            for row, s in enumerate(micro):
                if s.prompt_index == 0:
                    h_init[s.request] = h_lookup[row]
        if iteration == 0:
            kl_reference = _store_kl_reference(kl_reference, stats["kl_log_probs"], stats["kl_requests"], n)
        requests, prompts = stats["rewrite_requests"], stats["rewrite_prompts"]
        nll[requests, prompts] = stats["rewrite_nll"]
        correct.index_add_(0, requests, stats["rewrite_correct"])
        kl_value[stats["kl_requests"]] = stats["kl"]
    return nll, correct, kl_value, kl_reference


def stop_reason(count: int, correct: int, positions: int, n_context: int, loss: float, iteration: int,
                settings: TargetSettings) -> tuple[int, str | None]:  # fmt: skip
    """Whether request r stops before this iteration's Adam step, in this order (algorithms.md §2.5, §5): "mpes"
    (``mpes_stop``, when MPES is on), "loss" (L_r < loss_stop), "budget" (the last of ``steps`` iterations); None:
    it continues. Returns the request's new MPES count and the reason."""
    if settings.mpes is not None:
        count, reached = mpes_stop(count, correct, positions, n_context, settings)
        if reached:
            return count, "mpes"
    if loss < settings.loss_stop:
        return count, "loss"
    if iteration == settings.steps - 1:
        return count, "budget"
    return count, None


@torch.no_grad()
def _adam_step_and_clamp(delta, adam_m, adam_v, h_init, index, g, step: int, settings: TargetSettings) -> None:
    """torch.optim.Adam's update (betas ``ADAM_BETAS``, eps ``ADAM_EPS``, no weight decay) of the rows ``index`` of
    delta with gradient g at step ``step``, then the clamp ||delta_r|| <= clamp_norm_factor * ||h_r||, in place:

        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  delta -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)"""
    (beta1, beta2) = ADAM_BETAS
    adam_m[index] = beta1 * adam_m[index] + (1 - beta1) * g
    adam_v[index] = beta2 * adam_v[index] + (1 - beta2) * g * g
    denominator = adam_v[index].sqrt() / math.sqrt(1 - beta2**step) + ADAM_EPS
    updated = delta[index] - (settings.lr / (1 - beta1**step)) * adam_m[index] / denominator
    max_norm = settings.clamp_norm_factor * h_init[index].norm(dim=1, keepdim=True)
    norms = updated.norm(dim=1, keepdim=True)
    delta[index] = torch.where(norms > max_norm, updated * max_norm / norms, updated)


def mpes_stop(count: int, correct: int, positions: int, n_context: int, settings: TargetSettings) -> tuple[int, bool]:
    """MPES, most-probable early stopping (algorithms.md §5): (the request's new count c_r, whether it stops now).

    ``correct`` = #{(i, j): context-prefixed prompt i, target token j, argmax_v log P(v | prompt i, y_<j) = y_j} at
    this forward. The criterion holds when correct = 5 * T (rule ``all``: every target token of every context prompt
    is top-1; ``positions`` = #context prompts * T) or, with rule ``v1``, correct = #context prompts (``n_context``).
    c_r grows by one at every forward where it holds (not necessarily consecutive, never reset); the request stops,
    before that iteration's Adam step, when c_r = m + 1 (m = the cut-off "+m", ``settings.mpes``)."""
    needed = positions if settings.mpes_rule == "all" else n_context
    count += correct == needed
    return count, count == settings.mpes + 1


def _loss_terms(micro, log_probs, kl_reference, kl_factor: float, n_templates: int, device):
    """Sum over the micro-batch of NLL_i / #templates (rewriting prompts) and KL terms, plus per-sequence stats.

    NLL_i = mean over target tokens of -log p(y_j); KL = kl_factor * sum_v q(v) (log q(v) - log q_0(v)) at the
    subject of "{} is a" (q_0 from the first iteration; the reference's kl_div(log q_0, log q, log_target))."""
    counts = [len(s.scored) for s in micro]
    sequence_of = torch.repeat_interleave(torch.arange(len(micro), device=device), torch.tensor(counts, device=device))
    labels = torch.tensor([label for s in micro for label in s.labels], device=device)
    is_kl = torch.tensor([s.prompt_index < 0 for s in micro], device=device)
    rewrite_rows = (labels >= 0).nonzero()[:, 0]
    token_log_probs = log_probs[rewrite_rows, labels[rewrite_rows]]
    sums = torch.zeros(len(micro), dtype=log_probs.dtype, device=device).index_add(
        0, sequence_of[rewrite_rows], token_log_probs
    )
    prompt_nll = -sums / torch.tensor(counts, dtype=log_probs.dtype, device=device)
    hits = (log_probs[rewrite_rows].argmax(dim=-1) == labels[rewrite_rows]).long()
    hit_counts = torch.zeros(len(micro), dtype=torch.long, device=device).index_add(0, sequence_of[rewrite_rows], hits)

    kl_rows = (labels < 0).nonzero()[:, 0]
    kl_requests = torch.tensor([s.request for s in micro if s.prompt_index < 0], dtype=torch.long)
    current = log_probs[kl_rows]
    reference = current.detach() if kl_reference is None else kl_reference[kl_requests.to(device)]
    kl = kl_factor * (current.exp() * (current - reference)).sum(dim=1)
    terms = prompt_nll[~is_kl].sum() / n_templates + kl.sum()

    rewrite = [row for row, s in enumerate(micro) if s.prompt_index >= 0]
    context = torch.tensor([s.prompt_index > 0 for s in micro], device=device)
    stats = {
        "rewrite_requests": torch.tensor([micro[row].request for row in rewrite], dtype=torch.long),
        "rewrite_prompts": torch.tensor([micro[row].prompt_index for row in rewrite], dtype=torch.long),
        "rewrite_nll": prompt_nll.detach()[rewrite].double().cpu(),
        "rewrite_correct": (hit_counts * context)[rewrite].cpu(),
        "kl_requests": kl_requests,
        "kl": kl.detach().double().cpu(),
        "kl_log_probs": current.detach(),
    }
    return terms, stats


def _store_kl_reference(reference, log_probs, requests, n):
    if reference is None:
        reference = log_probs.new_zeros(n, log_probs.shape[-1])
    reference[requests.to(reference.device)] = log_probs
    return reference
