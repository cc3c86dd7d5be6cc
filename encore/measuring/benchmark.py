"""Benchmark of one batch of edits, three ways, side by side in one run; prints numbers, asserts nothing.

    python -m encore.measuring.benchmark --model smollm2-135m --method memit --variant plain --edits 100

* per-request: targets optimised one request at a time over whole sequences; keys by full forwards;
* batched: all requests' targets together over whole sequences; keys by full forwards;
* batched + prefix reuse: targets from the last subject token on after the first iteration, keys from
  cached inputs of the lowest edited block (encore.editing.target_forward, encore.editing.keys.BatchKeys).

Solves are the same in all three. The same-result check prints the largest relative difference of the
targets z (per request) and of the weight update Delta between the paths.

    python -m encore.measuring.benchmark --compare-precision --edits 100 [--variant mpes_nc]

runs the default path (batched + prefix reuse) in fp32 and in bf16-mixed (encore.models.precision) on the same
batch instead: seconds per edit of each phase side by side with their ratio, the same-result check (z, Delta,
equal stop iterations, p(target) at the stop), a profile of each (a few target-optimisation iterations: where the
time goes) and its distance from the floor of this machine (the profile's matrix-product FLOPs at the measured
peak GEMM rate of that precision; encore.measuring.precision_benchmark).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from encore.data.requests import load_requests
from encore.editing.context import generate_context_templates
from encore.editing.editors import make_editor
from encore.editing.hparams import Hyperparameters, hparams_file
from encore.editing.keys import BatchKeys
from encore.editing.sequential import EditorState, edit_batch
from encore.editing.statistics import load_covariances, statistics_manifest
from encore.editing.targets import optimise_targets
from encore.models.architecture import read_weight, write_weight
from encore.models.device import resolve_execution
from encore.models.loading import load_model


def _timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def _full_forward_keys(model, tokenizer, records, templates, layers) -> float:
    """Seconds for the keys phase without lower-block reuse (every read runs from block 0)."""
    started = time.perf_counter()
    batch_keys = BatchKeys(model, tokenizer, records, templates, first_layer=0)
    for layer in layers:
        batch_keys.keys(layer)
        batch_keys.subject_hidden(layers[-1])
    return time.perf_counter() - started


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="memit")
    parser.add_argument("--variant", default="plain")
    parser.add_argument("--edits", type=int, default=100, help="size of the batch")
    parser.add_argument("--skip-per-request", action="store_true", help="skip the (slowest) per-request path")
    parser.add_argument("--data-dir", default=None, help="local data directory (default: $ENCORE_DATA_DIR or download)")
    parser.add_argument("--resources", default="resources")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--compare-precision", action="store_true", help="fp32 vs bf16-mixed on the default path")
    parser.add_argument("--profile-steps", type=int, default=3, help="target iterations profiled per precision")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = prepare(args)
    if args.compare_precision:
        from encore.measuring.precision_benchmark import compare_precisions

        compare_precisions(setting, args.profile_steps)
    else:
        compare_paths(setting, args.skip_per_request)


@dataclasses.dataclass
class Setting:
    """One batch and everything its edit needs, shared by the compared paths."""

    model: object
    tokenizer: object
    hparams: Hyperparameters
    records: list
    templates: list
    covariances: dict
    projectors: dict | None
    device: str
    threads: int


def prepare(args) -> Setting:
    """Model, the batch (the first ``--edits`` requests of CounterFact order 0), context templates, C0 (the pipeline's
    cached statistics: encore.editing.statistics.statistics_manifest, load_covariances)."""
    resources = Path(args.resources)

    hparams = Hyperparameters.from_yaml(hparams_file("hparams", args.method, args.model, "counterfact"), args.variant)
    execution = resolve_execution(args.device)
    loaded = load_model(args.model, cache_dir=resources / "models", device=execution.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    records, _ = load_requests("counterfact", args.data_dir, resources / "data", "0", args.edits)
    templates = generate_context_templates(
        model, tokenizer, 0, hparams.context_seed_words, hparams.context_template_length
    )
    print(
        f"model {args.model}, {args.method}/{args.variant}, {len(records)} CounterFact edits (order 0), "
        f"{args.threads} threads",
        flush=True,
    )
    layers = sorted(hparams.layers)

    statistics = statistics_manifest(loaded, layers, hparams, args.data_dir, resources, execution)  # C0, cached
    threshold = hparams.nullspace_threshold if make_editor(hparams).needs_projector else None
    covariances, projectors = load_covariances(statistics, layers, threshold)

    return Setting(
        model, tokenizer, hparams, records, templates, covariances, projectors, execution.device, args.threads
    )


def compare_paths(setting: Setting, skip_per_request: bool) -> dict:
    """Per-request vs batched vs batched + prefix reuse (see the module docstring): time each path's phases on the
    same batch, print them side by side with the same-result check, and return both (``time_paths``,
    ``same_result``)."""
    paths, deltas = time_paths(setting, skip_per_request)
    check = same_result(paths, deltas)
    print_comparison(paths, check, len(setting.records))
    return {"paths": paths, "same_result": check}


def time_paths(setting: Setting, skip_per_request: bool) -> tuple[dict, dict]:
    """Per path: seconds of targets, keys and solves for the whole batch, z and the stop iterations; and the weight
    update Delta (all edited layers, flattened) of the two batched paths. The model's weights are restored."""
    model, tokenizer, hparams, records, templates = (
        setting.model, setting.tokenizer, setting.hparams, setting.records, setting.templates
    )  # fmt: skip
    settings, layers = hparams.target_settings(), sorted(hparams.layers)
    whole_sequences = dataclasses.replace(settings, prefix_reuse=False)
    paths = {}
    if not skip_per_request:
        singles, seconds = _timed(
            lambda: [optimise_targets(model, tokenizer, [r], whole_sequences, templates) for r in records]
        )
        paths["per-request"] = {"targets": seconds, "z": torch.cat([s.z for s in singles]),
                                "iterations": [i for s in singles for i in s.iterations]}  # fmt: skip
        print(f"  per-request targets done: {seconds / len(records):.3f} s/edit", flush=True)
    for name, chosen in (("batched", whole_sequences), ("batched + prefix reuse", settings)):
        result, seconds = _timed(lambda chosen=chosen: optimise_targets(model, tokenizer, records, chosen, templates))
        paths[name] = {"targets": seconds, "z": result.z, "iterations": result.iterations, "result": result}
        print(f"  {name} targets done: {seconds / len(records):.3f} s/edit", flush=True)
    full_keys = _full_forward_keys(model, tokenizer, records, templates, layers)

    original = {layer: read_weight(model, layer).clone() for layer in layers}
    deltas = {}
    for name in ("batched", "batched + prefix reuse"):
        state = EditorState.initial(templates, layers, original[layers[0]].shape[1], device=setting.device)
        edit = edit_batch(model, tokenizer, records, hparams, make_editor(hparams), state, setting.covariances,
                          setting.projectors, targets=paths[name].pop("result"))  # fmt: skip
        deltas[name] = torch.cat([(read_weight(model, layer) - original[layer]).flatten() for layer in layers])
        paths[name]["solves"] = edit["timings"]["solve_s"]
        paths[name]["keys"] = full_keys if name == "batched" else edit["timings"]["keys_s"]
        for layer in layers:
            write_weight(model, layer, original[layer])
    if "per-request" in paths:  # its keys are full forwards and its solves the batched ones: only targets differ
        paths["per-request"].update(keys=full_keys, solves=paths["batched"]["solves"])
    return paths, deltas


def same_result(paths: dict, deltas: dict) -> dict:
    """The pipeline's path (batched + prefix reuse) against each other: the largest relative difference of z over
    the requests, whether every request stopped at the same iteration, and ||Delta_reuse - Delta|| / ||Delta||."""
    fast = paths["batched + prefix reuse"]
    others = [name for name in paths if name != "batched + prefix reuse"]
    difference = float((deltas["batched + prefix reuse"] - deltas["batched"]).norm() / deltas["batched"].norm())
    return {"z": {name: _relative(fast["z"], paths[name]["z"]) for name in others},
            "same_iterations": {name: fast["iterations"] == paths[name]["iterations"] for name in others},
            "delta_vs_batched": difference}  # fmt: skip


def print_comparison(paths: dict, check: dict, n: int) -> None:
    """Seconds per edit of each phase and path, the speed-ups, and the same-result check."""
    print(
        f"\n{'path':<24} {'targets':>9} {'keys':>8} {'solves':>8} {'total':>9} {'iterations':>10} {'vs per-request':>15} "
        f"{'vs batched':>11}   (seconds per edit)"
    )
    totals = {name: (row["targets"] + row["keys"] + row["solves"]) / n for name, row in paths.items()}
    for name, row in paths.items():
        versus_request = f"x{totals['per-request'] / totals[name]:.2f}" if "per-request" in totals else "-"
        versus_batched = f"x{totals['batched'] / totals[name]:.2f}"
        print(
            f"{name:<24} {row['targets'] / n:9.3f} {row['keys'] / n:8.3f} {row['solves'] / n:8.4f} {totals[name]:9.3f} "
            f"{statistics.mean(row['iterations']):10.2f} {versus_request:>15} {versus_batched:>11}"
        )
    print("\nsame result:")
    for name, z in check["z"].items():
        print(f"  max relative difference of z, prefix reuse vs {name}: {z:.2e}; "
              f"same iterations: {check['same_iterations'][name]}")  # fmt: skip
    print(
        f"  relative difference of Delta (all edited layers), prefix reuse vs batched: {check['delta_vs_batched']:.2e}"
    )
    print(
        "  (float32: rounding differences can move an MPES or loss stop by one iteration; the float64 tests "
        "bound the paths to 1e-5)"
    )


if __name__ == "__main__":
    from encore.cli import run

    run(main)
