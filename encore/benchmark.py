"""Benchmark of one batch of edits: per-request vs batched target optimisation, and time per phase.

    python -m encore.benchmark --model smollm2-135m --edits 100

Both optimisations must give the same targets (the max relative difference is printed); then the
batch is inserted with the batched targets to time keys and solves. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from encore import data as datasets
from encore.architecture import read_weight
from encore.context import generate_context_templates
from encore.covariance import load_or_compute_statistics, load_statistic, statistics_key
from encore.editors import make_editor
from encore.experiment import load_requests
from encore.hparams import Hyperparameters
from encore.models import load_model
from encore.sequential import EditorState, edit_batch
from encore.targets import optimise_targets


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="memit")
    parser.add_argument("--variant", default="plain")
    parser.add_argument("--edits", type=int, default=100, help="size of the batch")
    parser.add_argument("--data-dir", default=None, help="local data directory (default: $ENCORE_DATA_DIR or download)")
    parser.add_argument("--resources", default="resources")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    resources = Path(args.resources)

    hparams = Hyperparameters.from_yaml(Path("hparams") / args.method.upper() / f"{Path(args.model).name}.yaml", args.variant)
    loaded = load_model(args.model, cache_dir=resources / "models")
    model, tokenizer = loaded.model, loaded.tokenizer
    records, _ = load_requests("counterfact", args.data_dir, resources / "data", "0", args.edits)
    templates = generate_context_templates(model, tokenizer, 0, hparams.context_seed_words, hparams.context_template_length)
    settings = hparams.target_settings()

    started = time.perf_counter()
    batched = optimise_targets(model, tokenizer, records, settings, templates)
    batched_seconds = time.perf_counter() - started
    started = time.perf_counter()
    singles = [optimise_targets(model, tokenizer, [record], settings, templates) for record in records]
    single_seconds = time.perf_counter() - started
    single_z = torch.cat([single.z for single in singles])
    difference = float(((batched.z - single_z).norm(dim=1) / single_z.norm(dim=1)).max())

    corpus = datasets.resolve_data_file("wikipedia", args.data_dir, resources / "data")
    layers = sorted(hparams.layers)
    paths = load_or_compute_statistics(model, tokenizer, loaded.identity, layers,
                                       lambda: list(datasets.iter_corpus_texts(corpus.path)), corpus.sha256,
                                       hparams.mom2_n_samples, hparams.mom2_max_length, resources / "statistics")
    covariances = {layer: load_statistic(paths[layer], statistics_key(
        loaded.identity, layer, corpus.sha256, hparams.mom2_n_samples, hparams.mom2_max_length, hparams.mom2_dtype))
        for layer in layers}
    editor = make_editor(hparams)
    state = EditorState.initial(templates, layers, read_weight(model, layers[0]).shape[1])
    phases = edit_batch(model, tokenizer, records, hparams, editor, state, covariances, targets=batched)["timings"]

    n = len(records)
    print(f"model {args.model}, {args.method}/{args.variant}, batch of {n} CounterFact edits, {args.threads} threads")
    print(f"target optimisation, per request : {single_seconds / n:8.3f} s/edit  ({single_seconds:7.1f} s)")
    print(f"target optimisation, batched     : {batched_seconds / n:8.3f} s/edit  ({batched_seconds:7.1f} s)"
          f"  speed-up x{single_seconds / batched_seconds:.2f}")
    print(f"max relative difference of z     : {difference:.2e}")
    print(f"iterations per edit              : mean {statistics.mean(batched.iterations):.2f}, "
          f"stops {dict((r, batched.stop_reason.count(r)) for r in set(batched.stop_reason))}")
    print(f"phases (batched targets)         : targets {batched_seconds:.1f} s, keys {phases['keys_s']:.1f} s, "
          f"solves {phases['solve_s']:.2f} s  -> {(batched_seconds + phases['keys_s'] + phases['solve_s']) / n:.3f} s/edit")


if __name__ == "__main__":
    main()
