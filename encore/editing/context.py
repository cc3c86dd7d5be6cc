"""Context templates: short prefixes sampled once from the unedited model (algorithms.md §2.2).

T = [["{}"], [g_1 .. g_5]]: the bare template plus one sampled prefix per seed word, each
``length`` tokens long (seed word and any BOS included), top-k = 5 sampling at temperature 1, with a
seeded generator so a run is reproducible (the reference code is unseeded; §13 #8).
"""

from __future__ import annotations

import torch

from encore.models.tokens import encode

DEFAULT_SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


@torch.no_grad()
def sample_continuation(model, tokenizer, start: str, length: int, top_k: int, generator: torch.Generator) -> str:
    ids = encode(tokenizer, start)
    while len(ids) < length:
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, -1]
        values, indices = torch.topk(logits.float(), top_k)
        probabilities = torch.softmax(values, dim=-1).cpu()
        choice = torch.multinomial(probabilities, 1, generator=generator).item()
        ids.append(int(indices[choice]))
    return tokenizer.decode(ids, skip_special_tokens=True)


def generate_context_templates(
    model, tokenizer, seed: int, seed_words=DEFAULT_SEED_WORDS, length: int = 10, top_k: int = 5
) -> list[list[str]]:
    """Return [["{}"], [prefix_1 + ". {}", ...]] (braces in sampled text become spaces)."""
    generator = torch.Generator().manual_seed(seed)
    sampled = []
    for word in seed_words:
        text = sample_continuation(model, tokenizer, word, length, top_k, generator)
        sampled.append(text.replace("{", " ").replace("}", " ") + ". {}")
    return [["{}"], sampled]
