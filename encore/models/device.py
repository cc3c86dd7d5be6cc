"""Where and in which precision models run: the config keys ``device``, ``dtype`` and ``tf32``.

device: auto (CUDA when available, else the CPU) | cpu | cuda | cuda:N. dtype: float32 (the reference's
precision, the default) | bfloat16 | float16. tf32: let float32 matmuls use TF32 tensor cores (faster on
Ampere and newer, ~1e-3 relative error per product; off by default). precision: fp32 (the default) | bf16-mixed
(bfloat16 matrix products in a float32 model where the hardware has them; encore.models.precision), one value for
both phases or a mapping ``{edit: ..., score: ...}``: editing (targets, keys) and scoring (answers, downstream tasks,
and the post-update efficacy an edit job measures) each in their own precision (``phase_precisions``). The editors'
closed-form solves always run in float64, on the GPU when C0, S_P (and AlphaEdit's projector) fit in its free memory,
else on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from encore.models.precision import PRECISIONS, check_precision, set_precision

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Execution:
    device: str  # resolved: "cpu" or "cuda:N"
    dtype: str
    tf32: bool = False
    precision: str = "fp32"  # fp32 | bf16-mixed (encore.models.precision): the job's own model products
    score_precision: str | None = None  # answer scoring inside an edit job (post-update efficacy); None: precision

    @property
    def scoring(self) -> str:
        """The precision in which this job scores answers."""
        return self.score_precision or self.precision

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> dict:
        """What a result records about where it was computed."""
        record = {"device": self.device, "dtype": self.dtype, "tf32": self.tf32, "torch": torch.__version__,
                  "cpu_threads": torch.get_num_threads()}  # fmt: skip
        if self.precision != "fp32":  # fp32 records stay as they were
            record["precision"] = self.precision
        if self.scoring != self.precision:
            record["score_precision"] = self.scoring
        if not self.is_cuda:
            record["cpu"] = cpu_record()
        if self.is_cuda:
            record.update(
                gpu_name=torch.cuda.get_device_name(self.device),
                cuda=torch.version.cuda,
                gpu_memory_gib=round(torch.cuda.get_device_properties(self.device).total_memory / 2**30, 1),
            )
        return record


# The instruction sets that decide how bf16 and fp32 products round on a CPU, and the settings that cap them.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
KERNEL_SETTINGS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ATEN_CPU_CAPABILITY")


def cpu_record() -> dict:
    """The CPU a result was computed on: its model, which of CPU_FEATURES it has, torch's kernel capability and any
    KERNEL_SETTINGS set. One commit, locks and seed reproduce a bf16-mixed run bit for bit only on CPUs that take the
    same kernels (docs/precision.md, "Across CPUs")."""
    import os

    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    record = {"model": model, "features": [f for f in CPU_FEATURES if f in flags],
              "capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip
    settings = {key: os.environ[key] for key in KERNEL_SETTINGS if key in os.environ}
    if settings:
        record["kernel_settings"] = settings
    return record


def phase_precisions(precision: str | dict) -> tuple[str, str]:
    """(editing, scoring) precision from the config key ``precision``: one value for both, or ``{edit:, score:}``
    (a missing phase is fp32). Every job of an experiment edits in the first and scores in the second."""
    if isinstance(precision, str):
        return precision, precision
    unknown = sorted(set(precision) - {"edit", "score"})
    if unknown:
        raise ValueError(f"precision: unknown phase(s) {unknown}; give a value or a mapping with edit and score")
    return precision.get("edit", "fp32"), precision.get("score", "fp32")


def check_settings(dtype: str, precision: str | dict) -> None:
    """The checks across config keys that need no hardware, run before any job (workflow/rules/common.smk): dtype
    is known, each phase's precision is known and compatible with dtype. One-line errors name the keys."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    for phase in dict.fromkeys(phase_precisions(precision)):
        if phase not in PRECISIONS:
            raise ValueError(f"precision: {phase!r} is not one of {', '.join(PRECISIONS)}")
        if phase != "fp32" and dtype != "float32":
            raise ValueError(f"precision: {phase} keeps float32 weights and needs dtype: float32 (got {dtype}); "
                             "set dtype: float32 or precision: fp32")  # fmt: skip


def resolve_execution(
    device: str = "auto",
    dtype: str = "float32",
    tf32: bool = False,
    precision: str = "fp32",
    score_precision: str | None = None,
) -> Execution:
    """Check the settings against this machine and apply ``tf32`` and ``precision`` (process-wide; the job's model
    products) after checking ``score_precision`` too (the answer scoring inside an edit job, applied where it
    scores); one-line errors name the config key."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValueError(f"device: {device!r} is not auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {device!r} requested but CUDA is not available here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); set device: auto or cpu"
            )
        if int(index) >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        device = f"cuda:{index}"
    elif device != "cpu":
        raise ValueError(f"device: {device!r} is not auto, cpu, cuda or cuda:N")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    check_precision(precision, device, dtype)
    if score_precision is not None:
        check_precision(score_precision, device, dtype)
    set_precision(precision)
    return Execution(device=device, dtype=dtype, tf32=tf32, precision=precision, score_precision=score_precision)


def state_fits(d_ff: int, n_layers: int, with_projector: bool, free_bytes: float, share: float = 0.5) -> bool:
    """Whether C0, S_P (and P) of every edited layer in float64 plus a solve's working set (three d_ff x d_ff
    matrices) fit in ``share`` of the free GPU memory; the rest is left to target optimisation."""
    matrix = d_ff * d_ff * 8
    return n_layers * matrix * (3 if with_projector else 2) + 3 * matrix <= share * free_bytes


def state_device(execution: Execution, d_ff: int, n_layers: int, with_projector: bool) -> str:
    """Device of the float64 editor state and solves: the GPU when ``state_fits`` its free memory, else the CPU."""
    if not execution.is_cuda:
        return "cpu"
    free, _ = torch.cuda.mem_get_info(execution.device)
    return execution.device if state_fits(d_ff, n_layers, with_projector, free) else "cpu"
