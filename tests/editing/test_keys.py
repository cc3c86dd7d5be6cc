"""Keys and subject positions against direct computations."""

import torch
from conftest import FACTS, TEMPLATES

from encore.editing.keys import compute_keys, compute_subject_hidden
from encore.models.architecture import down_proj_module
from encore.models.tokens import answer_token_ids, encode, fill_subject, subject_last_index

RECORDS = FACTS[:2]


def test_subject_last_index_points_at_the_end_of_the_subject(tokenizer, bos_tokenizer):
    for tok in (tokenizer, bos_tokenizer):
        for template in ["{} plays the", "Yesterday. The mother tongue of {} is"]:
            ids = encode(tok, fill_subject(template, "Toko Yasuda"))
            index = subject_last_index(tok, template, "Toko Yasuda")
            assert tok.decode(ids[: index + 1], skip_special_tokens=True).endswith("Toko Yasuda")
            assert not tok.decode(ids[:index], skip_special_tokens=True).endswith("Toko Yasuda")


def test_answer_tokens_are_what_follows_the_prompt(tokenizer, bos_tokenizer):
    for tok in (tokenizer, bos_tokenizer):
        prompt = "The mother tongue of Danielle Darrieux is"
        ids = answer_token_ids(tok, "English")
        assert encode(tok, prompt + " English") == encode(tok, prompt) + ids
        assert tok.bos_token_id not in ids


def test_keys_are_two_level_means_of_down_proj_inputs(tiny_model, tokenizer):
    layer = 1
    keys = compute_keys(tiny_model, tokenizer, RECORDS, layer, TEMPLATES)
    captured = {}
    handle = down_proj_module(tiny_model, layer).register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    try:
        for row, record in enumerate(RECORDS):
            group_means = []
            for group in TEMPLATES:
                vectors = []
                for context in group:
                    template = context.replace("{}", record.prompt)
                    ids = encode(tokenizer, fill_subject(template, record.subject))
                    with torch.no_grad():
                        tiny_model(input_ids=torch.tensor([ids]))
                    vectors.append(captured["x"][0, subject_last_index(tokenizer, template, record.subject)])
                group_means.append(torch.stack(vectors).mean(0))
            expected = torch.stack(group_means).mean(0)
            assert torch.allclose(keys[row], expected, atol=1e-5)
    finally:
        handle.remove()


def test_subject_hidden_is_block_output_of_the_bare_prompt(tiny_llama, tokenizer):
    tiny_llama = tiny_llama.double()  # float64: padding in the batched call changes float32 rounding by ~1e-5
    hidden = compute_subject_hidden(tiny_llama, tokenizer, RECORDS, layer=2)
    for row, record in enumerate(RECORDS):
        ids = encode(tokenizer, record.rewrite_prompt)
        with torch.no_grad():
            states = tiny_llama(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        # hidden_states[l + 1] is the output of block l
        assert torch.allclose(
            hidden[row], states[3][0, subject_last_index(tokenizer, record.prompt, record.subject)], atol=1e-9
        )


def test_batch_keys_replaying_lower_blocks_equal_full_forwards_after_an_update(tiny_model, tokenizer):
    """Blocks below the first edited layer are replayed from a cache; after a weight change at or above that
    layer, keys and subject hidden states still equal full forward passes."""
    from encore.editing.keys import BatchKeys
    from encore.models.architecture import read_weight, write_weight

    model = tiny_model.double()
    batch_keys = BatchKeys(model, tokenizer, RECORDS, TEMPLATES, first_layer=1, chunk_size=3)
    write_weight(model, 1, read_weight(model, 1) * 1.5)  # an edit of the first edited layer
    for layer in (1, 2, 3):
        torch.testing.assert_close(
            batch_keys.keys(layer), compute_keys(model, tokenizer, RECORDS, layer, TEMPLATES), rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            batch_keys.subject_hidden(layer),
            compute_subject_hidden(model, tokenizer, RECORDS, layer),
            rtol=1e-12,
            atol=1e-12,
        )
