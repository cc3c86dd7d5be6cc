"""fp32 vs bf16-mixed on one batch, side by side (``python -m encore.measuring.benchmark --compare-precision``).

Both precisions edit the same batch from the same weights on the default path (batched + prefix reuse): seconds
per edit of each phase (targets, keys, solves) and their ratio; the same-result check (z and Delta relative to
fp32, requests whose stop iteration and reason are equal, p(target) at the stop); then, per precision, a profile
of ``profile_steps`` target-optimisation iterations (every request runs them all: MPES and the loss stop are off)
split into matrix products, attention, casts, log-softmax and the rest (torch.profiler), and its floor on this
machine:

    floor = matrix-product FLOPs of the profiled run / peak GEMM rate of that precision,

the peak being the best rate measured here for the model's products (d x d_ff, d_ff x d, d x vocab) on one
micro-batch of tokens. measured / floor says how far the run is from what the matrix products alone need.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from encore.editing.editors import make_editor
from encore.editing.sequential import EditorState, edit_batch
from encore.editing.targets import default_tokens_per_microbatch, optimise_targets
from encore.models.architecture import read_weight, write_weight
from encore.models.precision import PRECISIONS, check_precision, precision_scope

DTYPE_OF = {"fp32": torch.float32, "bf16-mixed": torch.bfloat16}
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"}
CASTS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _relative_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=-1) / b.norm(dim=-1)


def edit_in(setting, precision: str) -> dict:
    """Targets, keys and solves of the batch under ``precision``; the weights are restored afterwards."""
    model, hparams, layers = setting.model, setting.hparams, sorted(setting.hparams.layers)
    original = {layer: read_weight(model, layer).clone() for layer in layers}
    with precision_scope(precision):
        _sync(setting.device)
        started = time.perf_counter()
        targets = optimise_targets(model, setting.tokenizer, setting.records, hparams.target_settings(),
                                   setting.templates)  # fmt: skip
        _sync(setting.device)
        seconds = time.perf_counter() - started
        state = EditorState.initial(setting.templates, layers, original[layers[0]].shape[1], device=setting.device)
        timings = edit_batch(model, setting.tokenizer, setting.records, hparams, make_editor(hparams), state,
                             setting.covariances, setting.projectors, targets=targets)["timings"]  # fmt: skip
    delta = torch.cat([(read_weight(model, layer) - original[layer]).flatten().double().cpu() for layer in layers])
    for layer in layers:
        write_weight(model, layer, original[layer])
    return {"targets": seconds, "keys": timings["keys_s"], "solves": timings["solve_s"], "result": targets,
            "delta": delta}  # fmt: skip


def same_result(runs: dict) -> dict:
    """bf16-mixed against fp32: z per request (max, median), Delta (all edited layers), equal stops, p(target)."""
    reference, mixed = runs["fp32"]["result"], runs["bf16-mixed"]["result"]
    z = _relative_rows(mixed.z.double().cpu(), reference.z.double().cpu())
    pairs = list(zip(reference.iterations, mixed.iterations))
    stops = list(zip(reference.stop_reason, mixed.stop_reason))
    delta = runs["fp32"]["delta"]
    return {
        "z_max": float(z.max()),
        "z_median": float(z.median()),
        "delta": float((runs["bf16-mixed"]["delta"] - delta).norm() / delta.norm()),
        "equal_iterations": sum(a == b for a, b in pairs),
        "equal_stops": sum(a == b for a, b in stops),
        "n": len(pairs),
        "p_target": (statistics.mean(reference.target_probability), statistics.mean(mixed.target_probability)),
    }


def _category(name: str) -> str:
    if name in MATMULS:
        return "matrix products"
    if "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
        return "attention"
    if name in CASTS:
        return "casts and copies"
    if "log_softmax" in name:
        return "log-softmax"
    return "other ops (element-wise, indexing, ...)"


def profile_targets(setting, precision: str, steps: int) -> dict:
    """Seconds per category of ``steps`` target-optimisation iterations (no early stop), and the matrix-product FLOPs
    of the same run counted separately (torch.utils.flop_counter: the profiler's own FLOP count records every
    op's shapes: +3 GB for 20 requests x 3 iterations on SmolLM2)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    cuda = setting.device.startswith("cuda")
    settings = dataclasses.replace(setting.hparams.target_settings(), steps=steps, mpes=None, loss_stop=-1.0)

    def run():
        optimise_targets(setting.model, setting.tokenizer, setting.records, settings, setting.templates)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with precision_scope(precision), profile(activities=activities) as profiler:
        _sync(setting.device)
        started = time.perf_counter()
        run()
        _sync(setting.device)
        wall = time.perf_counter() - started
    seconds = defaultdict(float)
    for event in profiler.key_averages():
        own = event.self_device_time_total if cuda else event.self_cpu_time_total
        seconds[_category(event.key)] += own / 1e6
    counter = FlopCounterMode(display=False)
    with precision_scope(precision), counter:
        run()
    counts = counter.get_flop_counts().get("Global", {})
    flops = sum(value for op, value in counts.items() if str(op).replace(".", "::", 1) in MATMULS)
    return {"wall_s": wall, "seconds": dict(seconds), "matmul_flops": flops}


def gemm_rates(model, device: str, precision: str, tokens: int, seconds: float = 0.3) -> dict[str, float]:
    """GFLOP/s of y = x W^T for the model's products on ``tokens`` rows, in the precision's matmul dtype."""
    config, dtype = model.config, DTYPE_OF[precision]
    d, d_ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    rates = {}
    for name, (inner, outer) in {"d x d_ff": (d, d_ff), "d_ff x d": (d_ff, d), "d x vocab": (d, vocab)}.items():
        x = torch.randn(tokens, inner, device=device, dtype=dtype)
        w = torch.randn(outer, inner, device=device, dtype=dtype)
        F.linear(x, w)
        _sync(device)
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            F.linear(x, w)
            count += 1
        _sync(device)
        rates[name] = 2 * tokens * inner * outer * count / (time.perf_counter() - started) / 1e9
    return rates


def compare_precisions(setting, profile_steps: int) -> dict:
    """Print (and return) the side-by-side table, the same-result check, the profiles and the floors."""
    check_precision("bf16-mixed", setting.device, "float32")  # the one-line error where the hardware lacks bf16
    n = len(setting.records)
    runs = {}
    for precision in PRECISIONS:
        runs[precision] = edit_in(setting, precision)
        print(f"  {precision}: targets {runs[precision]['targets'] / n:.3f} s/edit", flush=True)
    print(f"\n{'phase':<12}" + "".join(f"{p:>12}" for p in PRECISIONS) + f"{'ratio':>9}   (seconds per edit)")
    for phase in ("targets", "keys", "solves", "total"):
        values = [sum(runs[p][k] for k in ("targets", "keys", "solves")) if phase == "total" else runs[p][phase]
                  for p in PRECISIONS]  # fmt: skip
        print(f"{phase:<12}" + "".join(f"{v / n:12.3f}" for v in values) + f"{values[0] / values[1]:>8.2f}x")
    iterations = [statistics.mean(runs[p]["result"].iterations) for p in PRECISIONS]
    print(f"{'iterations':<12}" + "".join(f"{v:12.2f}" for v in iterations))
    check = same_result(runs)
    print(
        f"\nsame result (bf16-mixed vs fp32): z relative difference max {check['z_max']:.2e}, median "
        f"{check['z_median']:.2e}; Delta {check['delta']:.2e}; equal stop iterations {check['equal_iterations']} of "
        f"{check['n']}, equal stop reasons {check['equal_stops']} of {check['n']}; mean p(target) at the stop "
        f"{check['p_target'][0]:.4f} vs {check['p_target'][1]:.4f}"
    )
    tokens = setting.hparams.target_settings().tokens_per_microbatch or default_tokens_per_microbatch(setting.device)
    profiles = {}
    print(f"\nprofile: {profile_steps} target iterations of all {n} requests (seconds; share of the profiled wall)")
    for precision in PRECISIONS:
        profile = profiles[precision] = profile_targets(setting, precision, profile_steps)
        rates = profile["rates"] = gemm_rates(setting.model, setting.device, precision, tokens)
        peak = max(rates.values())
        profile["floor_s"] = profile["matmul_flops"] / (peak * 1e9)
        wall, matmul = profile["wall_s"], profile["seconds"].get("matrix products", 0.0)
        parts = ", ".join(f"{name} {s:.2f} ({100 * s / wall:.0f}%)" for name, s in sorted(
            profile["seconds"].items(), key=lambda item: -item[1]))  # fmt: skip
        outside = wall - sum(profile["seconds"].values())
        print(f"  {precision}: wall {wall:.2f} s: {parts}; outside torch ops {outside:.2f}")
        print(
            f"    matrix products {profile['matmul_flops'] / 1e12:.2f} TFLOP at "
            f"{profile['matmul_flops'] / max(matmul, 1e-9) / 1e9:.0f} GFLOP/s; peak here "
            + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items())
            + f" GFLOP/s ({tokens} tokens); floor {profile['floor_s']:.2f} s, measured / floor "
            f"{wall / profile['floor_s']:.2f}x"
        )
    return {"runs": runs, "same_result": check, "profiles": profiles}
