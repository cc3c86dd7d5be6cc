"""The cost model: FLOPs, bytes and seconds per rule from a model's shape, the hyperparameters, token counts
measured on the data and effective rates (``RATES``, ``RATE_SOURCE``); ``Planner`` applies it to every job of a
config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from encore.editing.targets import default_tokens_per_microbatch
from encore.models.device import phase_precisions, state_fits
from encore.plan.shapes import KNOWN_SHAPES, model_shape

# ----------------------------------------------------------------------------- workload and rates

# Token counts per request / fact, measured on CounterFact (order 0, first 100-300 requests, SmolLM2 tokenizer,
# context templates of 10 tokens): target optimisation's 7 sequences, their suffixes from the last subject token,
# scored positions; keys' 6 template prompts + the bare prompt; evaluation's 13 prompts with both answers.
TOKENS = {"whole": 108.0, "suffix": 27.9, "scored": 8.0, "key_prompts": 84.0, "bare": 9.0, "eval_per_fact": 139.0,
          "downstream_item": 120.0, "generation_per_record": 10 * 100.0, "analysis_prompt": 12.0}  # fmt: skip
MPES_ITERATIONS = 9.5  # mean forwards before the MPES criterion first holds (SmolLM2, +0: 9.9, +1: 10.5, +2: 11.5)
BUDGET_FRACTION = 0.97  # without MPES, 85% of requests run to the step budget (measured 19.25-19.6 of 20)

# Effective rates (FLOP/s, bytes/s). cpu: measured on the reference machine (2 cores, AVX-512, 2026-11-29):
# target optimisation's small forward/backward micro-batches ~1.0e11 FLOP/s, no-grad inference in batches of 64
# prompts ~1.4e11 (the scale check's evaluations at Llama-3-8B widths); GPUs: nominal dense peak x efficiency 0.4
# (0.5 for inference), not yet measured.
RATES = {
    "cpu": {"inference": 1.4e11, "float32": 1.0e11, "bfloat16": 2.0e11, "float16": 1.0e11, "tf32": 1.0e11, "float64": 3.0e10,
            "cholesky": 1.8e10, "eigh": 5.0e9, "load": 1.0e9, "gpu_memory": 0},
    "a100": {"inference": 0.5 * 19.5e12, "float32": 0.4 * 19.5e12, "tf32": 0.4 * 156e12, "bfloat16": 0.4 * 312e12, "float16": 0.4 * 312e12,
             "float64": 0.4 * 19.5e12, "cholesky": 0.2 * 19.5e12, "eigh": 0.05 * 19.5e12, "load": 2.0e9,
             "gpu_memory": 80 * 2**30},
    "h100": {"inference": 0.5 * 67e12, "float32": 0.4 * 67e12, "tf32": 0.4 * 495e12, "bfloat16": 0.4 * 989e12, "float16": 0.4 * 989e12,
             "float64": 0.4 * 67e12, "cholesky": 0.2 * 67e12, "eigh": 0.05 * 67e12, "load": 2.0e9,
             "gpu_memory": 80 * 2**30},
    "h200": {"inference": 0.5 * 67e12, "float32": 0.4 * 67e12, "tf32": 0.4 * 495e12, "bfloat16": 0.4 * 989e12, "float16": 0.4 * 989e12,
             "float64": 0.4 * 67e12, "cholesky": 0.2 * 67e12, "eigh": 0.05 * 67e12, "load": 2.0e9,
             "gpu_memory": 141 * 2**30},
}  # fmt: skip
RATE_SOURCE = {"cpu": "measured on the reference machine", "a100": "assumed", "h100": "assumed", "h200": "assumed"}
# The CPU rates are those of a job on RATE_THREADS threads. A job on t threads runs at (t / RATE_THREADS) ** THREAD_EXPONENT
# of them: measured on the reference machine (2026-12-07, SmolLM2-135M forward + backward, 16 x 40 tokens, bf16-mixed
# and fp32 alike), 2 threads are 1.7x as fast as 1; two 1-thread jobs side by side each keep their 1-thread speed
# (one job per core, as `threads: 1` with `--cores all` runs them). Beyond 2 threads: an extrapolation.
RATE_THREADS, THREAD_EXPONENT = 2, math.log2(1.7)
# Generation samples token by token (KV cache, batches of 16 prompts): its small products run below the batched
# inference rate. Measured on the CPU in the lifelong-cpu study (2026-12-07): the fastest of its final evaluations
# took 1.6x the batched-rate estimate for the 20 records' generations. GPUs: not measured (1, as before).
DECODE_EFFICIENCY = {"cpu": 0.6, "a100": 1.0, "h100": 1.0, "h200": 1.0}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PYTHON_BASELINE = 0.6 * 2**30  # interpreter + torch + transformers + pandas, measured RSS before a model loads
ACTIVATION_FLOATS = 12  # floats saved per token and d_model (+ 4 per d_ff) per block for the backward pass


# Mean tokens per corpus document after truncation at max_length: 1,000 documents sampled as the statistics rule
# samples them (random.Random(1)) from the offline Wikipedia sample, SmolLM2 tokenizer (untruncated: mean 448,
# median 247). Full Wikipedia dumps have longer articles: the statistics of paper runs can take up to ~2x longer.
DOCUMENT_TOKENS = {128: 118.0, 256: 195.1, 512: 284.2, 1024: 367.5, 2048: 418.7, 4096: 439.9, 8192: 446.8}


# The number of corpus documents N (mom2_n_samples) at which a computed C0 edits as well as the reference's, by the
# rule of docs/statistics.md ("Which N to choose"), as the published N-sweep gives it (docs/results/statistics-sweep/,
# SmolLM2-135M; tests/reporting/test_statistics_sweep_choice.py checks it). None would mean not measured: the plan
# then shows the statistics cost at the configured N only.
SUPPORTED_N_SAMPLES: int | None = 300
# What the N-sweep measured it on (its protocol.csv): the model, hence its d_ff, and the documents' maximum length.
SWEEP_MODEL, SWEEP_MAX_LENGTH = "smollm2-135m", 256
SWEEP_D_FF = KNOWN_SHAPES[SWEEP_MODEL].d_ff


def scaled_n_samples(d_ff: int, max_length: int) -> int | None:
    """``SUPPORTED_N_SAMPLES`` carried to another model at the same corpus tokens per dimension of C0:
    N' = ceil(N · t(SWEEP_MAX_LENGTH) / t(max_length) · d_ff / SWEEP_D_FF), t = mean tokens per document.

    The error of a sample covariance of d dimensions from n samples is of order sqrt(d / n), so equal n / d keeps it
    about equal. An extrapolation, not a measurement (docs/statistics.md, "Which N to choose")."""
    if SUPPORTED_N_SAMPLES is None:
        return None
    tokens = SUPPORTED_N_SAMPLES * _mean_document_tokens(SWEEP_MAX_LENGTH)
    return math.ceil(tokens / _mean_document_tokens(max_length) * d_ff / SWEEP_D_FF)


def _mean_document_tokens(max_length: int) -> float:
    """``DOCUMENT_TOKENS``, interpolated linearly in log(max_length)."""
    points = sorted(DOCUMENT_TOKENS.items())
    if max_length <= points[0][0]:
        return min(max_length, points[0][1])
    for (low, low_tokens), (high, high_tokens) in zip(points, points[1:]):
        if max_length <= high:
            weight = math.log(max_length / low) / math.log(high / low)
            return low_tokens + weight * (high_tokens - low_tokens)
    return points[-1][1]


@dataclass
class Cost:
    rule: str
    jobs: int
    seconds: float  # per job
    host_bytes: float  # peak RSS per job
    gpu_bytes: float  # peak device memory per job (0 on the CPU)
    disk_bytes: float  # written per job

    def row(self) -> dict:
        """Per job: time, peak host and GPU memory, disk; and the rule's totals over its jobs."""
        gib = 2**30
        return {"rule": self.rule, "jobs": self.jobs, "time per job": duration(self.seconds),
                "peak host GiB": round(self.host_bytes / gib, 2), "peak GPU GiB": round(self.gpu_bytes / gib, 2),
                "disk GiB per job": round(self.disk_bytes / gib, 3), "total time": duration(self.seconds * self.jobs),
                "total disk GiB": round(self.disk_bytes * self.jobs / gib, 2)}  # fmt: skip


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------- the cost model


class Planner:
    def __init__(self, config: dict, hparams_by_run: dict[tuple[str, str], dict], device: str = "cpu"):
        self.config, self.runs, self.device = config, hparams_by_run, device
        self.shape = model_shape(config["model"])
        self.dtype = config.get("dtype", "float32")
        self.on_gpu = device != "cpu"
        self.threads = int(config.get("threads") or RATE_THREADS)
        self.statistics_threads = int(config.get("statistics_threads") or self.threads)
        self.rates = self._rates_on(self.threads)
        self.edit_precision, self.score_precision = phase_precisions(config.get("precision", "fp32"))
        # editing (targets, keys): small forward/backward micro-batches in the editing precision
        self.rate = self.rates[self._product_dtype(self.edit_precision)]
        # no-grad batches: answer scoring (editing metrics, downstream tasks) in the scoring precision; generation,
        # perplexity, analyses and C0 in the model's dtype (encore.models.precision)
        self.score_rate = self._inference_rate(self.rates, self._product_dtype(self.score_precision))
        self.inference_rate = self._inference_rate(self.rates, self._product_dtype("fp32"))
        self.weight_bytes = self.shape.params * BYTES[self.dtype]
        self.statistics_source = (config.get("statistics") or {}).get("source", "computed")  # docs/statistics.md

    # -- rates
    def _rates_on(self, threads: int) -> dict:
        """The device's rates; on the CPU, those of a job on ``threads`` threads (RATE_THREADS, THREAD_EXPONENT)."""
        if self.on_gpu:
            return RATES[self.device]
        factor = (threads / RATE_THREADS) ** THREAD_EXPONENT
        return {key: value if key in ("load", "gpu_memory") else value * factor for key, value in RATES["cpu"].items()}

    def _product_dtype(self, precision: str) -> str:
        """The rate key of the matrix products of a phase run in ``precision`` (fp32 | bf16-mixed)."""
        if precision == "bf16-mixed":
            return "bfloat16"
        use_tf32 = self.config.get("tf32") and self.dtype == "float32" and self.on_gpu
        return "tf32" if use_tf32 else self.dtype

    @staticmethod
    def _inference_rate(rates: dict, dtype: str) -> float:
        return rates[dtype] * rates["inference"] / rates["float32"]

    # -- pieces
    def _load_seconds(self) -> float:
        return self.weight_bytes / self.rates["load"] + 5.0

    def _block_flops(self, tokens: float, blocks: float, backward: bool = False) -> float:
        return tokens * blocks * 2 * self.shape.block_params * (2 if backward else 1)

    def _head_flops(self, positions: float, backward: bool = False) -> float:
        return positions * 2 * self.shape.vocab * self.shape.d_model * (2 if backward else 1)

    def iterations(self, hp: dict) -> float:
        steps = hp["v_num_grad_steps"]
        if hp.get("mpes") is None:
            return BUDGET_FRACTION * steps
        return min(steps, MPES_ITERATIONS + hp["mpes"])

    def _resident(self, host: float, gpu: float, nbytes: float) -> tuple[float, float]:
        return (host, gpu + nbytes) if self.on_gpu else (host + nbytes, gpu)

    # -- rules
    def statistics(self, hp: dict) -> Cost:
        layers, s = sorted(hp["layers"]), self.shape
        tokens = hp["mom2_n_samples"] * _mean_document_tokens(hp["mom2_max_length"])
        flops = self._block_flops(tokens, max(layers) + 1)
        accumulate = tokens * 2 * s.d_ff**2 * len(layers)
        rates = self._rates_on(self.statistics_threads)
        seconds = self._load_seconds() + flops / self._inference_rate(rates, self._product_dtype("fp32"))
        seconds += accumulate / rates["float32"]
        sums = len(layers) * s.d_ff**2 * 4
        batch = 8 * hp["mom2_max_length"] * (s.d_model * 6 + s.d_ff * (len(layers) + 2)) * BYTES[self.dtype]
        # the forward stops after the last edited block: weights above it (and the head) are never touched, so
        # their memory-mapped safetensors pages are never read in
        touched = (s.vocab * s.d_model + (max(layers) + 1) * s.block_params) * BYTES[self.dtype]
        host, gpu = self._resident(
            PYTHON_BASELINE + (0 if self.on_gpu else touched),
            0.0,
            sums + batch + (self.weight_bytes if self.on_gpu else 0),
        )
        if self.on_gpu:
            host = max(host, PYTHON_BASELINE + self.weight_bytes)  # loaded on the host first
        return Cost("statistics", 1, seconds, host, gpu, sums)

    def imported_statistics(self, hp: dict) -> Cost:
        """C0 imported from statistics files (config ``statistics``): no pass over the corpus, nothing computed; the
        rule loads the model (for its layer names and d_ff), reads and hashes each file (float32, d_ff^2) once and
        writes its C0 to the cache (downloads are kept too)."""
        layers, d = len(hp["layers"]), self.shape.d_ff
        files = layers * d * d * 4
        seconds = self._load_seconds() + 2 * files / self.rates["load"]
        one = d * d * (4 + 8 + 4)  # one file's sum, its float64 division, C0
        host, gpu = PYTHON_BASELINE + one, (self.weight_bytes if self.on_gpu else 0.0)
        host = max(host, PYTHON_BASELINE + self.weight_bytes) if self.on_gpu else host
        downloads = files if self.statistics_source in ("url", "hub") else 0
        return Cost("statistics (imported)", 1, seconds, host, gpu, files + downloads)

    def statistics_summary(self) -> dict:
        """Where C0 comes from and what computing it here costs, per setting (N, max_length) of the runs: at the
        configured N and, once the N-sweep has measured it, at ``SUPPORTED_N_SAMPLES`` and at that N scaled to this model
        (``scaled_n_samples``)."""
        settings = {}
        for hp in self.runs.values():
            setting = (hp["mom2_n_samples"], hp["mom2_max_length"])
            layers = sorted(set(settings.get(setting, {}).get("layers", [])) | set(hp["layers"]))
            settings[setting] = {**hp, "layers": layers}
        rows = []
        for (n, max_length), hp in settings.items():
            scaled = scaled_n_samples(self.shape.d_ff, max_length)
            rows.append({"n_samples": n, "max_length": max_length, "layers": hp["layers"],
                         "computed_seconds": self.statistics(hp).seconds,
                         "supported_n_samples": SUPPORTED_N_SAMPLES,
                         "supported_seconds": self._statistics_seconds_at(hp, SUPPORTED_N_SAMPLES),
                         "d_ff": self.shape.d_ff, "scaled_n_samples": scaled,
                         "scaled_seconds": self._statistics_seconds_at(hp, scaled)})  # fmt: skip
        return {"source": self.statistics_source, "settings": rows}

    def _statistics_seconds_at(self, hp: dict, n_samples: int | None) -> float | None:
        return None if n_samples is None else self.statistics({**hp, "mom2_n_samples": n_samples}).seconds

    def edit_batch_seconds(self, hp: dict, n: int) -> dict:
        layers, s = sorted(hp["layers"]), self.shape
        z_layer, upper = max(layers), s.n_layers - max(layers) - 1
        first = self._block_flops(n * TOKENS["whole"], s.n_layers)
        per_iteration = (
            self._block_flops(n * TOKENS["suffix"], upper, backward=True)
            + self._head_flops(n * TOKENS["scored"], backward=True)
            + self._block_flops(n * TOKENS["suffix"], upper)
        )
        targets = (first + self.iterations(hp) * per_iteration) / self.rate
        lowest = layers[0]
        keys = self._block_flops(n * (TOKENS["key_prompts"] + TOKENS["bare"]), lowest)
        for layer in layers:
            keys += self._block_flops(n * TOKENS["key_prompts"], layer - lowest + 1)
            keys += self._block_flops(n * TOKENS["bare"], z_layer - lowest + 1)
        d = s.d_ff
        per_layer = 6 * d * d * n / self.rates["float64"] + (d**3 / 3) / self.rates["cholesky"]
        if hp["editor"] == "alphaedit":
            per_layer += 4 * d**3 / self.rates["float64"]
        return {"targets": targets, "keys": keys / self.rate, "solves": len(layers) * per_layer}

    def edit_segment(self, hp: dict, batches: int, label: str, jobs: int, projectors: int = 0) -> Cost:
        """One segment of ``batches`` batches; ``projectors``: AlphaEdit null-space projectors it computes first
        (eigh of C0 in float64 on the host; cached next to the statistics for later segments and runs)."""
        n, layers, s = self.config["batch_size"], sorted(hp["layers"]), self.shape
        phases = self.edit_batch_seconds(hp, n)
        seconds = self._load_seconds() + batches * sum(phases.values())
        seconds += projectors * 9 * s.d_ff**3 / self.rates["eigh"]
        d = s.d_ff
        upper = s.n_layers - max(layers) - 1
        prefix_cache = n * (TOKENS["whole"] - TOKENS["suffix"]) * upper * 2 * s.kv_dim * BYTES[self.dtype]
        budget = default_tokens_per_microbatch("cuda" if self.on_gpu else "cpu")
        activations = budget * upper * (ACTIVATION_FLOATS * s.d_model + 4 * s.d_ff) * BYTES[self.dtype]
        logits = n * TOKENS["scored"] * s.vocab * 4 * 3 / max(1.0, n * TOKENS["suffix"] / budget)
        covariance = len(layers) * d * d * 4  # float32, resident on the host
        state = len(layers) * d * d * 8  # S_P, float64
        projector = len(layers) * d * d * (4 if not self.on_gpu else 8) if hp["editor"] == "alphaedit" else 0
        working = 2 * d * d * 8 + (2 * d * d * 8 if hp["editor"] == "alphaedit" else 0)  # system + factor (+ P S)
        host = PYTHON_BASELINE + covariance + (0 if self.on_gpu else self.weight_bytes)
        gpu = 0.0
        state_on_gpu = self.on_gpu and state_fits(
            d, len(layers), bool(projector), self.rates["gpu_memory"] - self.weight_bytes
        )
        if self.on_gpu:
            gpu = self.weight_bytes + prefix_cache + activations + logits
            if state_on_gpu:
                gpu += state + len(layers) * d * d * 8 + (projector if projector else 0) + working
            else:
                host += state + projector + working
        else:
            host += prefix_cache + activations + logits + state + projector + working
        if self.on_gpu:  # the weights pass through host memory while loading, before the state is built
            host = max(host, PYTHON_BASELINE + covariance + self.weight_bytes)
        edits = min(batches * n, self.config["num_edits"])
        disk = (
            len(layers) * s.d_model * d * BYTES[self.dtype] + len(layers) * edits * d * BYTES[self.dtype] + edits * 400
        )
        return Cost(label, jobs, seconds, host, gpu, disk)

    def evaluation_seconds(self, facts: float, parts: dict) -> dict[str, float]:
        """Seconds of each part of one evaluation of ``facts`` facts (``parts``: downstream, generation, analysis;
        perplexity at every evaluation), named as an evaluation's provenance names them. Answer scoring (the
        editing metrics, the downstream tasks) runs in the scoring precision, the rest in the model's dtype."""
        ev, s = self.config.get("evaluation", {}), self.shape
        flops = self._block_flops(facts * TOKENS["eval_per_fact"], s.n_layers) + self._head_flops(facts * 13 * 2 * 1.5)
        seconds = {"editing metrics": flops / self.score_rate}
        if parts.get("downstream"):
            items = len(ev.get("downstream_tasks") or range(6)) * (ev.get("downstream_tests") or 300)
            flops = self._block_flops(items * TOKENS["downstream_item"], s.n_layers) + self._head_flops(items * 6)
            seconds["downstream tasks"] = flops / self.score_rate
        if parts.get("generation"):
            records = ev.get("generation_records") or facts
            tokens = records * TOKENS["generation_per_record"]
            flops = self._block_flops(tokens, s.n_layers) + self._head_flops(tokens)
            seconds["generation entropy"] = flops / (DECODE_EFFICIENCY[self.device] * self.inference_rate)
        if parts.get("analysis"):
            flops = self._block_flops(ev.get("analysis_records", 100) * TOKENS["analysis_prompt"], s.n_layers)
            seconds["norm and activation analyses"] = flops / self.inference_rate
        # perplexity at every evaluation: one forward and the LM head at every token (attention within the windows
        # not counted: ~15% more at 512 tokens for SmolLM2)
        text = ev.get("perplexity_tokens", 0)
        seconds["perplexity"] = (self._block_flops(text, s.n_layers) + self._head_flops(text)) / self.inference_rate
        return seconds

    def evaluation(self, facts: float, parts: dict, label: str, jobs: int) -> Cost:
        s = self.shape
        seconds = self._load_seconds() + sum(self.evaluation_seconds(facts, parts).values())
        batch = 64 * 24 * (s.d_model * 4 + s.d_ff) * BYTES[self.dtype] + 64 * 3 * s.vocab * 4
        host = PYTHON_BASELINE + self.weight_bytes + (0 if self.on_gpu else batch)  # on a GPU: the load peak
        gpu = self.weight_bytes + batch if self.on_gpu else 0.0
        return Cost(label, jobs, seconds, host, gpu, 2e5)

    # -- the experiment
    def plan(self) -> list[Cost]:
        config, ev = self.config, self.config.get("evaluation", {})
        orders = config["order_sample"] if isinstance(config["order_sample"], list) else [config["order_sample"]]
        step = config["batch_size"] * config["snapshot_every"]
        ends = list(range(step, config["num_edits"], step)) + [config["num_edits"]]
        costs, cached = [], set()  # C0 and projectors are cached per layer and setting
        for (method, variant), hp in self.runs.items():
            setting = (hp["mom2_n_samples"], hp["mom2_max_length"])
            new = [layer for layer in hp["layers"] if (layer, *setting) not in cached]
            if new:
                imported = self.statistics_source != "computed"
                costs.append((self.imported_statistics if imported else self.statistics)({**hp, "layers": new}))
                cached.update((layer, *setting) for layer in new)
            projectors = 0
            if hp["editor"] == "alphaedit":
                projectors = sum((layer, *setting, hp["nullspace_threshold"]) not in cached for layer in hp["layers"])
                cached.update((layer, *setting, hp["nullspace_threshold"]) for layer in hp["layers"])
            previous = 0
            for end in ends:
                batches = -(-(end - previous) // config["batch_size"])
                label = f"edit_segment {method}/{variant}"
                costs.append(self.edit_segment(hp, batches, label, len(orders), projectors if previous == 0 else 0))
                previous = end
            for end in ends:
                final = end == config["num_edits"]
                facts = end if (final or ev.get("edited_facts", "all") == "all") else 0.2 * end
                if final:
                    facts += 0.2 * end  # the authors' subset comes from the same scores: counted once more for safety
                parts = {
                    name: ev.get(name, default) == "all" or (final and ev.get(name, default) == "final")
                    for name, default in (("generation", "final"), ("downstream", "final"), ("analysis", "all"))
                }
                costs.append(self.evaluation(facts, parts, f"evaluate_snapshot {method}/{variant}", len(orders)))
        parts = {"generation": ev.get("generation", "final") != "none", "downstream": ev.get("downstream", "final") != "none",
                 "analysis": ev.get("analysis", "all") != "none"}  # fmt: skip
        costs.append(self.evaluation(config["num_edits"], parts, "evaluate_unedited", len(orders)))
        return costs
