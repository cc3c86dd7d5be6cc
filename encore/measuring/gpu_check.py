"""The GPU check: one batch of edits at a paper model's full shape, and the CPU and device paths compared.

A randomly initialised model of the shape (no download: built from a config; timing does not depend on the
weights' values) edits one batch of CounterFact requests with MEMIT and ENCORE; each phase is timed (targets,
keys, solves), with peak GPU memory and a short evaluation (CounterFact scoring of the edited facts), in fp32 and,
where the device has bfloat16 (``--precisions auto``: a CUDA GPU with native bf16), again in bf16-mixed
(encore.models.precision) with its targets, stops and Delta compared to fp32's (key ``bf16-mixed``). First, a
tiny float64 Llama edits the same batch on the CPU and on the device: targets z, stops, keys and Delta must agree
to float tolerance (as tests/models/test_device.py asserts where a GPU is present).

The device machine has torch and transformers but no internet and not this project's other dependencies, so
``prepare`` writes everything the check reads into one small folder (tokenizer, records, corpus documents, and the
wheels of jsonschema and its dependencies for the device's Python):

    python -m encore.measuring.gpu_check prepare --assets gpu-check-assets --data-dir ../shared/data
    python -m encore.measuring.gpu_check run --assets gpu-check-assets --shape llama3-8b --device cuda --out results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from encore.data import datasets, files
from encore.data.datasets import EditRecord
from encore.editing.context import generate_context_templates
from encore.editing.covariance import sample_documents, second_moments
from encore.editing.editors import make_editor
from encore.editing.hparams import Hyperparameters, hparams_file
from encore.editing.sequential import EditorState, edit_batch
from encore.models.architecture import read_weight, write_weight
from encore.models.device import resolve_execution, state_device
from encore.models.precision import PRECISIONS, bf16_missing, check_precision, precision_scope

# Shapes of the paper's models (their Hugging Face configs) and a tiny one for the CPU; hparams: the file whose
# layers, steps and lambdas the batch uses.
SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, hparams="Meta-Llama-3-8B"),
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, hparams="Llama-2-7b-hf"),
    "tiny": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=10, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=None, rope_theta=10000.0, max_position_embeddings=512,
                 rms_norm_eps=1e-5, hparams="Meta-Llama-3-8B"),
}  # fmt: skip
WHEELS = ["jsonschema", "jsonschema-specifications", "referencing", "rpds-py"]  # not in the device image


def build_llama(shape: dict, vocab_size: int, device: str, dtype: torch.dtype, blocks: int | None = None,
                initializer_range: float = 0.02, seed: int = 0):  # fmt: skip
    """A randomly initialised LlamaForCausalLM of ``shape`` (``blocks`` overrides the depth), built on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {key: value for key, value in shape.items() if key != "hparams"}
    settings["vocab_size"] = max(settings["vocab_size"] or 0, vocab_size)
    if blocks is not None:
        settings["num_hidden_layers"] = blocks
    config = LlamaConfig(**settings, tie_word_embeddings=False, initializer_range=initializer_range)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval().requires_grad_(False)


def _edit_once(model, tokenizer, records, templates, hparams, covariances, state_on: str) -> dict:
    """Edit one batch, then restore the weights; the batch's ledger plus its raw keys and Delta per layer."""
    layers = sorted(hparams.layers)
    before = {layer: read_weight(model, layer).detach().clone() for layer in layers}
    state = EditorState.initial(templates, layers, before[layers[0]].shape[1], device=state_on)
    out = edit_batch(model, tokenizer, records, hparams, make_editor(hparams), state, covariances)
    deltas = {layer: (read_weight(model, layer) - before[layer]).cpu() for layer in layers}
    for layer in layers:
        write_weight(model, layer, before[layer])
    keys = {layer: state.segment_keys[layer][0] for layer in layers}  # what edit_batch recorded for the snapshot
    return {**out, "deltas": deltas, "keys": keys}


def compare_devices(tokenizer, records, documents, device: str) -> dict:
    """The same batch edited on the CPU and on ``device`` with a tiny float64 Llama: relative differences."""
    hparams = Hyperparameters(editor="memit", layers=[1, 2], v_num_grad_steps=10, v_lr=1.0, mom2_update_weight=10.0,
                              mom2_n_samples=len(documents), clamp_norm_factor=4.0, mpes=1, norm_lambda=5.0)  # fmt: skip
    templates = [["{}"], ["The first. {}", "A second one. {}"]]
    results = []
    for where in ("cpu", device):  # on a CPU-only machine: the CPU twice (the path must be deterministic)
        model = build_llama(SHAPES["tiny"], len(tokenizer), where, torch.float64, blocks=4, initializer_range=0.2)
        covariances, _ = second_moments(model, tokenizer, documents, hparams.layers, max_length=64)
        results.append(_edit_once(model, tokenizer, records, templates, hparams, covariances, where))
    cpu, other = results

    def relative(a, b):
        return float((a.cpu() - b.cpu()).norm() / b.cpu().norm().clamp_min(1e-300))

    return {
        "z": relative(other["targets"].z, cpu["targets"].z),
        "keys": max(relative(other["keys"][layer], cpu["keys"][layer]) for layer in hparams.layers),
        "delta": max(relative(other["deltas"][layer], cpu["deltas"][layer]) for layer in hparams.layers),
        "same_stops": other["targets"].iterations == cpu["targets"].iterations
        and other["targets"].stop_reason == cpu["targets"].stop_reason,
    }


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.startswith("cuda") else None


def time_paper_shape(args, tokenizer, records, documents, execution) -> dict:
    """Build the shape on the device, compute C0, edit one batch per variant, evaluate; seconds and peak memory."""
    from encore.evaluation.counterfact import counterfact_record_scores

    shape = SHAPES[args.shape]
    cuda = execution.is_cuda
    started = time.perf_counter()
    model = build_llama(shape, len(tokenizer), execution.device, execution.torch_dtype, blocks=args.blocks)
    report = {"build_s": time.perf_counter() - started, "parameters": sum(p.numel() for p in model.parameters())}
    hparams_path = hparams_file(args.hparams_dir, "memit", shape["hparams"])

    def hparams_of(variant: str) -> Hyperparameters:
        hparams = Hyperparameters.from_yaml(hparams_path, variant)
        return hparams if args.steps is None else dataclasses.replace(hparams, v_num_grad_steps=args.steps)

    plain = hparams_of("plain")
    layers = sorted(plain.layers)
    d_ff = shape["intermediate_size"]

    started = time.perf_counter()
    covariances, tokens = second_moments(model, tokenizer, documents, layers, max_length=args.max_length)
    report["statistics"] = {"s": time.perf_counter() - started, "documents": len(documents), "tokens": tokens}
    templates = generate_context_templates(model, tokenizer, 0, plain.context_seed_words, plain.context_template_length)
    state_on = state_device(execution, d_ff, len(layers), with_projector=False)
    report["solves_on"] = state_on

    fp32_outputs = {}
    for precision in precisions(args.precisions, execution.device, execution.dtype):
        part = report if precision == "fp32" else report.setdefault(precision, {})
        for variant in ("plain", "mpes_nc"):
            hparams = hparams_of(variant)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(execution.device)
            started = time.perf_counter()
            with precision_scope(precision):
                out = _edit_once(model, tokenizer, records, templates, hparams, covariances, state_on)
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - started
            iterations = out["targets"].iterations
            part[variant] = {
                **{phase: round(seconds, 3) for phase, seconds in out["timings"].items()},
                "total_s": round(wall, 3),
                "s_per_edit": round(wall / len(records), 4),
                "mean_iterations": sum(iterations) / len(iterations),
                "peak_gpu_gib": _peak_gib(execution.device),
            }
            if precision == "fp32":
                fp32_outputs[variant] = out
            elif variant in fp32_outputs:
                part[variant]["vs_fp32"] = agreement(out, fp32_outputs[variant], layers)
            print(f"  {precision} {variant}: {json.dumps(part[variant])}", flush=True)

        evaluated = records[: args.evaluate]
        started = time.perf_counter()
        with precision_scope(precision):
            counterfact_record_scores(model, tokenizer, evaluated)
        part["evaluation"] = {"s": time.perf_counter() - started, "records": len(evaluated),
                              "peak_gpu_gib": _peak_gib(execution.device)}  # fmt: skip
    return report


def precisions(choice: str, device: str, dtype: str = "float32") -> list[str]:
    """``auto``: fp32, plus bf16-mixed for a float32 model on a CUDA GPU with native bfloat16; else the
    comma-separated list (checked)."""
    if choice == "auto":
        extra = dtype == "float32" and device.startswith("cuda") and bf16_missing(device) is None
        return ["fp32", "bf16-mixed"] if extra else ["fp32"]
    chosen = [name.strip() for name in choice.split(",") if name.strip()]
    for name in chosen:
        if name not in PRECISIONS:
            raise ValueError(f"--precisions: {name!r} is not one of auto, {', '.join(PRECISIONS)}")
        check_precision(name, device, dtype)
    return sorted(chosen, key=PRECISIONS.index)  # fp32 first: bf16-mixed is compared to it


def agreement(out: dict, reference: dict, layers: list[int]) -> dict:
    """bf16-mixed against fp32 on the same batch: z per request (max, median), Delta of all layers, equal stops."""
    z = (out["targets"].z - reference["targets"].z).double().norm(dim=1) / reference["targets"].z.double().norm(dim=1)
    delta = torch.cat([(out["deltas"][layer] - reference["deltas"][layer]).flatten().double() for layer in layers])
    base = torch.cat([reference["deltas"][layer].flatten().double() for layer in layers])
    pairs = list(zip(out["targets"].iterations, reference["targets"].iterations))
    return {"z_max": float(z.max()), "z_median": float(z.median()), "delta": float(delta.norm() / base.norm()),
            "equal_iterations": sum(a == b for a, b in pairs), "requests": len(pairs)}  # fmt: skip


def load_assets(assets: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets / "tokenizer")
    records = [EditRecord(**item) for item in json.loads((assets / "records.json").read_text())]
    documents = json.loads((assets / "documents.json").read_text())
    return tokenizer, records, documents


def prepare(args) -> None:
    """Write the tokenizer, the first records of the authors' order, corpus documents and wheels to ``--assets``."""
    from transformers import AutoTokenizer

    from encore.data.requests import load_requests
    from encore.environment import locked_versions
    from encore.models.loading import prepare_packaged_model

    assets = Path(args.assets)
    assets.mkdir(parents=True, exist_ok=True)
    resources = Path(args.resources)
    tokenizer = AutoTokenizer.from_pretrained(prepare_packaged_model(args.tokenizer_model, resources / "models"))
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(assets / "tokenizer")
    records, _ = load_requests("counterfact", args.data_dir, resources / "data", "0", args.edits)
    (assets / "records.json").write_text(json.dumps([dataclasses.asdict(r) for r in records]))
    corpus = files.resolve_data_file("wikipedia", args.data_dir, resources / "data")
    documents = sample_documents(list(datasets.iter_corpus_texts(corpus.path)), args.documents)
    (assets / "documents.json").write_text(json.dumps(documents))
    if args.wheels:
        locked = locked_versions()
        pins = [f"{name}=={locked[name]}" if name in locked else name for name in WHEELS]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", args.python_version, "--platform", "manylinux2014_x86_64",
                        "--dest", str(assets / "wheels"), *pins], check=True)  # fmt: skip
    size = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    print(f"{assets}: {len(records)} records, {len(documents)} documents, {size / 2**20:.1f} MiB")


def run(args) -> dict:
    execution = resolve_execution(args.device, args.dtype, args.tf32)
    torch.set_flush_denormal(True)  # as encore.models.loading.load_model: denormal activations slow CPU matmuls ~30x
    tokenizer, records, documents = load_assets(Path(args.assets))
    records = records[: args.edits]
    print(f"GPU check on {json.dumps(execution.describe())}", flush=True)
    report = {"execution": execution.describe(), "shape": args.shape, "blocks": args.blocks, "edits": len(records)}
    started = time.perf_counter()
    report["equality"] = compare_devices(tokenizer, records[:4], documents[:30], execution.device)
    report["equality"]["s"] = time.perf_counter() - started
    print(f"  CPU vs {execution.device}, tiny float64 Llama: {json.dumps(report['equality'])}", flush=True)
    report.update(time_paper_shape(args, tokenizer, records, documents[: args.documents], execution))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("prepare", help="write the assets folder that travels to the GPU machine")
    make.add_argument("--assets", default="gpu-check-assets")
    make.add_argument("--data-dir", default=None)
    make.add_argument("--resources", default="resources")
    make.add_argument("--tokenizer-model", default="smollm2-135m")
    make.add_argument("--edits", type=int, default=100)
    make.add_argument("--documents", type=int, default=100)
    make.add_argument("--wheels", action=argparse.BooleanOptionalAction, default=True)
    make.add_argument("--python-version", default="3.12", help="the device image's Python")
    check = commands.add_parser("run", help="run the check")
    check.add_argument("--assets", default="gpu-check-assets")
    check.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    check.add_argument("--blocks", type=int, default=None, help="fewer blocks than the shape (CPU tests)")
    check.add_argument("--device", default="auto")
    check.add_argument("--dtype", default="float32")
    check.add_argument("--tf32", action="store_true")
    check.add_argument("--precisions", default="auto", help="auto (fp32, + bf16-mixed on a CUDA GPU with bf16) or "
                       "a list: fp32,bf16-mixed")  # fmt: skip
    check.add_argument("--edits", type=int, default=100)
    check.add_argument("--steps", type=int, default=None, help="target optimisation steps (default: the hparams')")
    check.add_argument("--documents", type=int, default=100, help="corpus documents for C0")
    check.add_argument("--max-length", type=int, default=256)
    check.add_argument("--evaluate", type=int, default=100, help="edited facts scored after editing")
    check.add_argument("--hparams-dir", default="hparams")
    check.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    from encore.cli import run

    run(main)
