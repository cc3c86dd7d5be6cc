"""Norm and activation analyses of a model state (paper Figs. 1, 4, 5, 7-13, 15-20; algorithms.md §9).

* Down-projection norms: ``‖W_l‖_F`` of the MLP down-projection of every layer l (edited layers grow,
  the others stay as they were).
* Activation norm share: for block l with input h (residual stream), attention contribution a and MLP
  contribution m, the block output is h_out = h + a + m. At every (non-padding) token,

      share_x = ‖x‖₂ / (‖h‖₂ + ‖a‖₂ + ‖m‖₂)   for x in {h, a, m},

  averaged over the tokens of each prompt and then over prompts. a and m are read as differences of
  the residual stream (a = r - h with r the input of the norm in front of the MLP, m = h_out - r), so
  architectures that normalise a sub-layer's output before adding it (Gemma) are measured by what
  actually enters the stream. The paper gives no code for this figure; this is the operational
  definition proposed in algorithms.md §9.
"""

from __future__ import annotations

import torch

from encore.evaluation import protocols
from encore.models.architecture import architecture_of, block_output_tensor, num_layers, read_weight
from encore.models.tokens import encode, pad_id, pad_right

COMPONENTS = ("residual", "attention", "mlp")


def down_proj_norms(model) -> dict[int, float]:
    """Layer -> Frobenius norm of its MLP down-projection (float64 accumulation)."""
    return {layer: float(read_weight(model, layer).double().norm()) for layer in range(num_layers(model))}


def _mlp_input_norm(block: torch.nn.Module) -> torch.nn.Module:
    """The norm applied to the residual stream right before the MLP (its input is h + a)."""
    for name in ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2"):
        if hasattr(block, name):
            return getattr(block, name)
    raise ValueError(f"{type(block).__name__}: no known pre-MLP norm (add its name to encore.evaluation.analysis)")


@torch.no_grad()
def activation_norm_shares(model, tokenizer, prompts: list[str], batch_size: int = 16) -> dict[tuple[int, str], float]:
    """(layer, component) -> mean share of ‖component‖ in ‖h‖ + ‖a‖ + ‖m‖ (see module doc)."""
    if not prompts:
        raise ValueError("activation_norm_shares needs at least one prompt")
    blocks = model.get_submodule(architecture_of(model).blocks)
    device = next(model.parameters()).device
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for layer, block in enumerate(blocks):
        handles.append(
            block.register_forward_pre_hook(
                lambda _m, args, kwargs, layer=layer: seen.__setitem__(
                    (layer, "in"), kwargs.get("hidden_states", args[0] if args else None)
                ),
                with_kwargs=True,
            )
        )
        handles.append(
            _mlp_input_norm(block).register_forward_pre_hook(
                lambda _m, args, layer=layer: seen.__setitem__((layer, "mid"), args[0])
            )
        )
        handles.append(
            block.register_forward_hook(
                lambda _m, _args, output, layer=layer: seen.__setitem__((layer, "out"), block_output_tensor(output))
            )
        )
    totals = torch.zeros((len(blocks), len(COMPONENTS)), dtype=torch.float64)
    try:
        encoded = [encode(tokenizer, prompt) for prompt in prompts]
        for start in range(0, len(encoded), batch_size):
            batch = pad_right(encoded[start : start + batch_size], pad_id(tokenizer), device)
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            mask = batch.attention_mask.double()
            for layer in range(len(blocks)):
                h, mid, out = (seen[(layer, key)].double() for key in ("in", "mid", "out"))
                norms = torch.stack([h.norm(dim=-1), (mid - h).norm(dim=-1), (out - mid).norm(dim=-1)], dim=-1)
                shares = norms / norms.sum(dim=-1, keepdim=True).clamp_min(1e-30)
                per_prompt = (shares * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
                totals[layer] += per_prompt.sum(dim=0).cpu()
    finally:
        for handle in handles:
            handle.remove()
    totals /= len(prompts)
    return {
        (layer, component): float(totals[layer, c])
        for layer in range(len(blocks))
        for c, component in enumerate(COMPONENTS)
    }


def analysis_rows(model, tokenizer, prompts: list[str], prompt_set: str) -> list[dict]:
    """Tidy rows: ``down_proj_norm.L<ll>`` for every layer and ``activation_share.L<ll>.<component>``."""
    rows = [
        {"metric": f"down_proj_norm.L{layer:02d}", "value": value, "protocol": protocols.NORMS}
        for layer, value in down_proj_norms(model).items()
    ]
    protocol = protocols.activation_shares(prompt_set)
    rows += [
        {"metric": f"activation_share.L{layer:02d}.{component}", "value": value, "protocol": protocol}
        for (layer, component), value in activation_norm_shares(model, tokenizer, prompts).items()
    ]
    return rows
