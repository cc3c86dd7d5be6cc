"""Statistics files of the ROME / MEMIT / EMMET / AlphaEdit / EasyEdit lineage: their format, reading, export of ours.

Layout (rome/layer_stats.py): ``<model>/<dataset>_stats/<module>_<dtype>_mom2_<N>.npz``, e.g.
``gpt2-xl/wikipedia_stats/transformer.h.17.mlp.c_proj_float32_mom2_100000.npz``; <model> is the model's name with
"/" -> "_" (MEMIT) or its last part (EasyEdit, AlphaEdit), <dtype> the precision the keys were accumulated in, N the
number of documents. Each file is ``numpy.savez`` of util/runningstats.py's CombinedStat(mom2=SecondMoment())
state_dict and the tally's sample size:

    mom2.constructor  "util.runningstats.SecondMoment()"
    mom2.count        n, the number of tokens
    mom2.mom2         S = sum_t k_t k_t^T (d_ff x d_ff)
    sample_size       N (a NaN-boxed null when every document was used)

C0 = S / n as ``SecondMoment.moment()`` computes it (the division in the stored dtype), then float32 as the reference
editors use it. Files are read with ``allow_pickle=False`` and checked (module name, shape d_ff x d_ff, finite,
symmetric, n > 0); a bad file raises ``StatisticsFileError`` (one line naming the file). Where files come from
(a local directory, the MEMIT statistics URL, a Hugging Face repository) and their import into the cache:
encore.editing.statistics_sources.

Export writes our C0 in the same layout with S = C0 * n stored in float64: exact (24 + log2 n bits < 53), so
S / n gives C0 back bit for bit here and in the reference code (which converts to float32).

    python -m encore.editing.statistics_files export --manifest results/<experiment>/statistics/<method>.json \
        --out exported-stats
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encore.cli import one_line
from encore.editing.covariance import (
    load_statistic,
    statistic_count,
    tensor_sha256,
)

CONSTRUCTOR = "util.runningstats.SecondMoment()"
MOM2, COUNT, CONSTRUCTOR_KEY, SAMPLE_SIZE = "mom2.mom2", "mom2.count", "mom2.constructor", "sample_size"
PROVENANCE = "encore.provenance"  # added by our export; the reference loaders ignore keys outside "mom2."
SYMMETRY_RTOL = 1e-3  # max |S - S^T| allowed, relative to max |S| (summation order differs between S_ij and S_ji)
NULL = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000002))[0]  # runningstats' NaN-boxed None
_FILE_NAME = re.compile(
    r"^(?P<module>.+?)_(?P<dtype>float16|bfloat16|float32|float64)_(?P<stats>(?:mom2|mean|norm_mean)"
    r"(?:-(?:mom2|mean|norm_mean))*)(?P<tokens>_t\{batch_tokens\}|_t\d+)?(?:_(?P<n>\d+))?\.npz$"
)


class StatisticsFileError(ValueError):
    """A statistics file (or its download) is missing, unreadable or not the C0 it should be (``file`` says which)."""

    def __init__(self, file, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file, self.problem = str(file), problem


# ------------------------------------------------------------------------------------------------ names


def file_name(module: str, dtype: str, n_samples: int | None) -> str:
    """``<module>_<dtype>_mom2_<N>.npz`` (no ``_<N>`` when every document was used)."""
    return f"{module}_{dtype}_mom2{'' if n_samples is None else f'_{n_samples}'}.npz"


def layout_path(model_dir: str, dataset: str, module: str, dtype: str, n_samples: int | None) -> str:
    return f"{model_dir}/{dataset}_stats/{file_name(module, dtype, n_samples)}"


def parse_file_name(name: str) -> dict | None:
    """{module, dtype, stats, n} of a layout file name, or None when it is not one."""
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    return {"module": match["module"], "dtype": match["dtype"], "stats": match["stats"].split("-"),
            "n": int(match["n"]) if match["n"] else None}  # fmt: skip


def model_dirs(model_name: str) -> list[str]:
    """The <model> directory names the reference code writes for ``model_name``: "/" -> "_" (MEMIT), the last
    part (EasyEdit, AlphaEdit)."""
    return list(dict.fromkeys([str(model_name).replace("/", "_"), Path(str(model_name)).name]))


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class ReferenceStatistic:
    """One layer's statistics file: C0 = S / n (float32) and what the file says about it."""

    second_moment: torch.Tensor
    count: int
    sample_size: int | None
    dtype: str  # the precision in the file name
    provenance: dict | None  # an export's ``encore.provenance``, else None


def _scalar(array: np.ndarray, key: str, file) -> float | int | str:
    if array.shape != ():
        raise StatisticsFileError(file, f"{key} has shape {array.shape}, expected a scalar")
    return array.item()


def _check_matrix(raw: np.ndarray, file, block: int = 1024) -> None:
    """Finite, symmetric (within SYMMETRY_RTOL), non-negative diagonal; in row blocks (no d_ff^2 temporaries)."""
    scale, asymmetry, bad = 0.0, 0.0, 0
    for start in range(0, raw.shape[0], block):
        rows = raw[start : start + block].astype(np.float64)
        finite = np.isfinite(rows)
        bad += int(rows.size - np.count_nonzero(finite))
        if bad:
            continue
        scale = max(scale, float(np.abs(rows).max(initial=0.0)))
        asymmetry = max(asymmetry, float(np.abs(rows - raw[:, start : start + block].T).max(initial=0.0)))
    if bad:
        raise StatisticsFileError(file, f"{MOM2} holds {bad} non-finite values (NaN or inf)")
    if asymmetry > SYMMETRY_RTOL * scale:
        problem = f"max |S - S^T| = {asymmetry:.3g} > {SYMMETRY_RTOL:g} x max |S| ({scale:.3g})"
        raise StatisticsFileError(file, f"{MOM2} is not symmetric: {problem}")
    if (np.diagonal(raw) < 0).any():
        raise StatisticsFileError(file, f"{MOM2} has negative diagonal entries (a sum of squares cannot)")


def read_statistics_file(path: Path, *, module: str, d_ff: int, shown: str | None = None) -> ReferenceStatistic:
    """C0 of one layout file, checked against the expected down-projection ``module`` and ``d_ff``; ``shown`` names
    the file in errors (default: the path). Read with ``allow_pickle=False``; every failure: StatisticsFileError."""
    path, file = Path(path), shown or str(path)
    parsed = parse_file_name(path.name)
    if parsed is None:
        raise StatisticsFileError(file, "not a statistics file name (<module>_<dtype>_mom2_<N>.npz)")
    if parsed["module"] != module:
        raise StatisticsFileError(file, f"module {parsed['module']} is not the edited down-projection {module}")
    if "mom2" not in parsed["stats"]:
        raise StatisticsFileError(file, "holds no second moment (mom2)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in (MOM2, COUNT) if key not in data.files]
            if missing:
                raise StatisticsFileError(file, f"has no {' or '.join(missing)}: not a SecondMoment statistics file")
            arrays = {key: data[key] for key in (MOM2, COUNT, CONSTRUCTOR_KEY, SAMPLE_SIZE, PROVENANCE)
                      if key in data.files}  # fmt: skip
    except StatisticsFileError:
        raise
    except FileNotFoundError:
        raise StatisticsFileError(file, "missing") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error):
            raise StatisticsFileError(file, "holds pickled objects; refused (read with allow_pickle=False)") from None
        raise StatisticsFileError(file, f"unreadable: truncated or corrupted? ({one_line(error)})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:  # truncated or garbled
        raise StatisticsFileError(file, f"unreadable: truncated or corrupted? ({one_line(error)})") from None
    constructor = arrays.get(CONSTRUCTOR_KEY)
    if constructor is not None and "SecondMoment" not in str(_scalar(constructor, CONSTRUCTOR_KEY, file)):
        raise StatisticsFileError(file, f"{CONSTRUCTOR_KEY} is {constructor.item()!r}, not a SecondMoment")
    count = _positive_integer(_scalar(arrays[COUNT], COUNT, file))
    if count is None:
        raise StatisticsFileError(file, f"{COUNT} is {arrays[COUNT].item()!r}, expected a positive number of tokens")
    sample_size = _scalar(arrays[SAMPLE_SIZE], SAMPLE_SIZE, file) if SAMPLE_SIZE in arrays else None
    if isinstance(sample_size, float) and math.isnan(sample_size):
        sample_size = None  # runningstats writes None as a NaN-boxed null
    elif sample_size is not None:
        if _positive_integer(sample_size) is None:
            raise StatisticsFileError(file, f"{SAMPLE_SIZE} is {sample_size!r}, expected a number of documents")
        sample_size = _positive_integer(sample_size)
        if parsed["n"] is not None and sample_size != parsed["n"]:
            raise StatisticsFileError(file, f"{SAMPLE_SIZE} {sample_size} differs from N = {parsed['n']} of its name")
    raw = arrays[MOM2]
    if raw.dtype.kind != "f":
        raise StatisticsFileError(file, f"{MOM2} has dtype {raw.dtype}, expected floating point")
    if raw.shape != (d_ff, d_ff):
        raise StatisticsFileError(file, f"{MOM2} has shape {raw.shape}, expected ({d_ff}, {d_ff}) (d_ff of {module})")
    _check_matrix(raw, file)
    provenance = None
    if PROVENANCE in arrays:
        try:
            provenance = json.loads(str(_scalar(arrays[PROVENANCE], PROVENANCE, file)))
        except json.JSONDecodeError:
            raise StatisticsFileError(file, f"{PROVENANCE} is not JSON") from None
    # SecondMoment.moment() (S / n in the stored dtype), then float32 as the reference editors use it
    second_moment = (torch.from_numpy(np.ascontiguousarray(raw)) / count).float()
    return ReferenceStatistic(second_moment, count, sample_size, parsed["dtype"], provenance)


def _positive_integer(value) -> int | None:
    """``value`` as an int when it is a whole number > 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value) if value == int(value) and value > 0 else None


# ------------------------------------------------------------------------------------------------ export


def export_statistics(manifest: Mapping, out_dir: Path, *, model_dir: str, module_of: Callable[[int], str],
                      dataset: str = "wikipedia") -> list[Path]:  # fmt: skip
    """Write every layer of a statistics manifest in the layout under ``out_dir``: S = C0 * n in float64 (exact),
    n, N and the SecondMoment constructor as the reference writes them, and our key as ``encore.provenance``."""
    written = []
    for layer, entry in sorted(manifest["layers"].items(), key=lambda item: int(item[0])):
        path, key = Path(entry["path"]), entry["key"]
        second_moment, count = load_statistic(path, key), statistic_count(path)
        n_samples = key.get("n_samples", (key.get("imported") or {}).get("n_samples"))
        target = Path(out_dir) / layout_path(model_dir, dataset, module_of(int(layer)), key["dtype"], n_samples)
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = second_moment.double().numpy() * count  # exact: a float32 times n < 2^29 fits float64's 53 bits
        provenance = {"key": key, "count": count, "c0_sha256": tensor_sha256(second_moment)}
        state = {CONSTRUCTOR_KEY: CONSTRUCTOR, COUNT: count, MOM2: raw, SAMPLE_SIZE: NULL if n_samples is None else n_samples,
                 PROVENANCE: json.dumps(provenance, sort_keys=True)}  # fmt: skip
        temporary = target.with_name(f"{target.stem}.tmp-{os.getpid()}.npz")
        try:
            np.savez(temporary, **state)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        written.append(target)
    return written


def module_template(identity: Mapping, resources: Path) -> str:
    """The down-projection module name ("{}" = layer) of the model a manifest names, from its config.json."""
    from transformers import AutoConfig

    from encore.models.architecture import ARCHITECTURES
    from encore.models.loading import prepare_packaged_model

    if identity.get("source") == "packaged":
        where = str(prepare_packaged_model(identity["name"], Path(resources) / "models"))
    else:
        where = identity.get("path") or identity.get("repo_id")
    config = AutoConfig.from_pretrained(where, revision=identity.get("revision"))
    if config.model_type not in ARCHITECTURES:
        raise ValueError(f"{where}: model_type {config.model_type!r} has no known down-projection; pass --module")
    return ARCHITECTURES[config.model_type].down_proj


def _default_model_dir(identity: Mapping) -> str:
    name = identity.get("name") or identity.get("repo_id") or Path(identity.get("path", "model")).name
    return model_dirs(name)[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Statistics files of the ROME/MEMIT lineage (docs/statistics.md)")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the C0 of a statistics manifest in the reference layout")
    export.add_argument("--manifest", required=True, help="results/<experiment>/statistics/<method>.json")
    export.add_argument("--out", required=True, help="directory to write <model>/<dataset>_stats/ into")
    export.add_argument("--model-dir", help="the <model> directory (default: the model name, / -> _)")
    export.add_argument("--module", help='down-projection module name with {} for the layer (default: from the '
                        'model\'s config.json, e.g. "transformer.h.{}.mlp.c_proj")')  # fmt: skip
    export.add_argument("--dataset", default="wikipedia", help="the <dataset>_stats directory (default wikipedia)")
    export.add_argument("--resources", default="resources", help="resources directory (packaged models' configs)")
    args = parser.parse_args(argv)
    manifest = json.loads(Path(args.manifest).read_text())
    template = args.module or module_template(manifest["model"], Path(args.resources))
    model_dir = args.model_dir or _default_model_dir(manifest["model"])
    for path in export_statistics(manifest, Path(args.out), model_dir=model_dir, module_of=template.format,
                                  dataset=args.dataset):  # fmt: skip
        print(path)


if __name__ == "__main__":
    from encore.cli import run

    run(main)
