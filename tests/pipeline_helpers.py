"""Helpers for the pipeline tests (kept out of conftest to stay importable by name)."""

from pathlib import Path

from conftest import _train_tokenizer, make_tiny_llama


def save_tiny_model(directory: Path) -> Path:
    tokenizer = _train_tokenizer(directory, add_bos=False)
    make_tiny_llama(len(tokenizer)).save_pretrained(directory)
    return directory
