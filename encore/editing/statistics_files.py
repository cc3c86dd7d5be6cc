"""Statistics files of the ROME / MEMIT / EMMET / AlphaEdit / EasyEdit lineage: import them as C0, export ours.

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
symmetric, n > 0); a bad file raises ``StatisticsFileError`` (one line naming the file). Downloads (the MEMIT
statistics URL, a Hugging Face repository) are used only when their sha256 is recorded (``known_statistics.yaml`` or
the config's ``statistics.sha256``). An imported C0 enters the content-addressed cache (encore.editing.covariance)
under a key naming its source, file and file sha256, so it is never taken for a computed one.

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
import shutil
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import numpy as np
import torch
import yaml

from encore.data.datasets import file_digests
from encore.editing.covariance import (
    STATISTICS_VERSION,
    StatisticsCacheError,
    cached_statistic,
    load_statistic,
    save_statistic,
    statistic_count,
    statistics_path,
    tensor_sha256,
)

SOURCES = ("computed", "local", "url", "hub")
MEMIT_STATS_URL = "https://memit.baulab.info/data/stats"  # REMOTE_ROOT_URL + "/data/stats" of kmeng01/memit
KNOWN_FILES = Path(__file__).with_name("known_statistics.yaml")
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
        raise StatisticsFileError(file, f"unreadable: truncated or corrupted? ({_first_line(error)})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:  # truncated or garbled
        raise StatisticsFileError(file, f"unreadable: truncated or corrupted? ({_first_line(error)})") from None
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


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class StatisticsSource:
    """Where imported statistics come from: the config's ``statistics`` (encore/schemas/config.schema.yaml)."""

    source: str  # local | url | hub
    path: str | None = None  # local: the directory holding <model>/<dataset>_stats/
    url: str = MEMIT_STATS_URL  # url: the base the layout paths are appended to
    repo: str | None = None  # hub: repository id
    revision: str = "main"
    repo_type: str = "model"
    subfolder: str = ""  # hub: folder of the repository holding the layout
    model_dir: str | None = None  # the <model> directory (None: the reference code's names for the model)
    dataset: str = "wikipedia"  # the <dataset>_stats directory
    n_samples: int | None = None  # N of the file names (None: the hyperparameters' mom2_n_samples)
    dtype: str | None = None  # <dtype> of the file names (None: the hyperparameters' mom2_dtype)
    sha256: Mapping[str, str] = field(default_factory=dict)  # recorded digests by layout path

    def describe(self) -> dict:
        where = {"local": {"path": self.path}, "url": {"url": self.url},
                 "hub": {"repo": self.repo, "revision": self.revision, "repo_type": self.repo_type,
                         "subfolder": self.subfolder}}[self.source]  # fmt: skip
        return {"source": self.source, **where, "model_dir": self.model_dir, "dataset": self.dataset,
                "n_samples": self.n_samples, "dtype": self.dtype}  # fmt: skip


def statistics_source(config: Mapping | None) -> StatisticsSource | None:
    """The import ``config`` asks for, or None for statistics computed here (no config, or source computed)."""
    config = dict(config or {})
    source = config.get("source", "computed")
    if source not in SOURCES:
        raise ValueError(f"statistics.source: {source!r} is not one of {', '.join(SOURCES)}")
    if source == "computed":
        return None
    if source == "local" and not config.get("path"):
        raise ValueError("statistics.path: the directory holding <model>/<dataset>_stats/ is needed for source local")
    if source == "hub" and not config.get("repo"):
        raise ValueError("statistics.repo: a Hugging Face repository id is needed for source hub")
    known = {name for name in StatisticsSource.__dataclass_fields__}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"statistics: unknown keys {unknown} (known: {sorted(known)})")
    values = {key: value for key, value in config.items() if value is not None}
    values["url"] = str(values.get("url", MEMIT_STATS_URL)).rstrip("/")
    values["sha256"] = dict(values.get("sha256") or {})
    return StatisticsSource(**values)


def known_sha256(source: StatisticsSource, layout: str) -> str | None:
    """The recorded sha256 of a file: the config's ``sha256``, else known_statistics.yaml."""
    if layout in source.sha256:
        return source.sha256[layout]
    known = yaml.safe_load(KNOWN_FILES.read_text()) if KNOWN_FILES.is_file() else {}
    where = {"url": source.url, "hub": source.repo}.get(source.source)
    return (((known or {}).get(source.source) or {}).get(where) or {}).get(layout)


def _address(source: StatisticsSource, layout: str) -> str:
    """Where a layout file is: its local path, URL or Hugging Face address."""
    if source.source == "local":
        return str(Path(source.path) / layout)
    if source.source == "url":
        return f"{source.url}/{layout}"
    kind = "" if source.repo_type == "model" else f"{source.repo_type}s/"
    return f"https://huggingface.co/{kind}{source.repo}/blob/{source.revision}/{_hub_filename(source, layout)}"


def _hub_filename(source: StatisticsSource, layout: str) -> str:
    return f"{source.subfolder.strip('/')}/{layout}".lstrip("/")


@dataclass(frozen=True)
class Located:
    local: Path  # the file on this machine
    layout: str  # its path in the layout
    location: str  # where it came from (path, URL, hub address)


class _NotThere(Exception):
    """The file is not at this candidate location (try the next <model> directory)."""


def _downloads(cache_dir: Path, source: StatisticsSource) -> Path:
    where = {"url": source.url.split("://", 1)[-1], "hub": f"{source.repo}@{source.revision}"}[source.source]
    return Path(cache_dir) / "downloads" / re.sub(r"[^A-Za-z0-9.@-]+", "_", where)


def _verify(located: Located, source: StatisticsSource, digest: str, remove_bad: bool) -> None:
    expected = known_sha256(source, located.layout)
    if expected is None:
        raise StatisticsFileError(
            located.location,
            f"downloaded to {located.local} with sha256 {digest}, but no sha256 is recorded for it; check the file, "
            f"then record it (statistics.sha256 in the config: {{{located.layout}: {digest}}})",
        )
    if digest != expected:
        if remove_bad:
            located.local.unlink(missing_ok=True)
        raise StatisticsFileError(
            located.location, f"sha256 {digest} differs from the recorded {expected}; refused" + (
                " (download removed)" if remove_bad else "")
        )  # fmt: skip


def _fetch_url(source: StatisticsSource, layout: str, cache_dir: Path) -> Located:
    url = _address(source, layout)
    target = _downloads(cache_dir, source) / layout
    located = Located(target, layout, url)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.part-{os.getpid()}")
        try:
            with urlopen(url, timeout=60) as response, open(temporary, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            os.replace(temporary, target)
        except HTTPError as error:
            if error.code == 404:
                raise _NotThere(url) from None
            raise StatisticsFileError(url, f"download failed (HTTP {error.code} {error.reason})") from None
        except (URLError, OSError) as error:
            raise StatisticsFileError(url, f"download failed ({_first_line(error)})") from None
        finally:
            temporary.unlink(missing_ok=True)
    _verify(located, source, file_digests(target)[0], remove_bad=True)
    return located


def _fetch_hub(source: StatisticsSource, layout: str, cache_dir: Path) -> Located:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    filename, location = _hub_filename(source, layout), _address(source, layout)
    try:
        local = huggingface_hub.hf_hub_download(
            repo_id=source.repo, filename=filename, revision=source.revision, repo_type=source.repo_type,
            cache_dir=str(_downloads(cache_dir, source)),
        )  # fmt: skip
    except LocalEntryNotFoundError as error:  # offline, and not in the download cache
        raise StatisticsFileError(location, f"download failed ({_first_line(error)})") from None
    except EntryNotFoundError:  # the repository has no such file
        raise _NotThere(location) from None
    except Exception as error:  # network, authentication, unknown repository or revision
        raise StatisticsFileError(location, f"download failed ({_first_line(error)})") from None
    located = Located(Path(local), layout, location)
    _verify(located, source, file_digests(local)[0], remove_bad=False)
    return located


def _fetch_local(source: StatisticsSource, layout: str, cache_dir: Path) -> Located:
    local = Path(source.path) / layout
    if not local.is_file():
        raise _NotThere(str(local))
    located = Located(local, layout, str(local))
    expected = known_sha256(source, layout)
    if expected is not None and file_digests(local)[0] != expected:
        raise StatisticsFileError(local, f"sha256 {file_digests(local)[0]} differs from the recorded {expected}")
    return located


_FETCH = {"local": _fetch_local, "url": _fetch_url, "hub": _fetch_hub}


def _explain_missing(source: StatisticsSource, tried: list[str], module: str, dtype: str, n: int | None):
    """(file, problem) saying why no file was found: for a local directory, a file it holds for this layer of another
    module (another model family), or of this module with another N or dtype."""
    problem = "missing" + (f" (also tried {', '.join(tried[1:])})" if tried[1:] else "")
    if source.source != "local":
        return tried[0], problem
    parts = module.split(".")
    layer = next((part for part in reversed(parts) if part.isdigit()), None)
    for directory in dict.fromkeys(Path(path).parent for path in tried):
        for name in sorted(p.name for p in directory.glob("*.npz")) if directory.is_dir() else []:
            parsed = parse_file_name(name)
            if parsed is None:
                continue
            if parsed["module"] != module and layer is not None and layer in parsed["module"].split("."):
                return directory / name, f"module {parsed['module']} is not the edited down-projection {module}"
            if parsed["module"] == module:
                return tried[0], f"{problem}; its directory holds {name} (N and dtype: statistics.n_samples, dtype)"
    return tried[0], problem


def locate(source: StatisticsSource, model_name: str, module: str, dtype: str, n: int | None, cache_dir: Path):
    """The file of one layer: under the first <model> directory that has it (downloaded and verified)."""
    tried = []
    for model_dir in [source.model_dir] if source.model_dir else model_dirs(model_name):
        layout = layout_path(model_dir, source.dataset, module, dtype, n)
        try:
            return _FETCH[source.source](source, layout, cache_dir)
        except _NotThere as where:
            tried.append(str(where))
    raise StatisticsFileError(*_explain_missing(source, tried, module, dtype, n))


# ------------------------------------------------------------------------------------------------ import


def imported_key(model_identity: dict, layer: int, origin: dict, dtype: str) -> dict:
    """The cache key of an imported C0: the model and layer, and the file it came from (not the corpus)."""
    return {"statistic": "second_moment_of_down_proj_inputs", "version": STATISTICS_VERSION, "model": model_identity,
            "layer": layer, "imported": origin, "dtype": dtype}  # fmt: skip


def import_statistics(
    source: StatisticsSource,
    *,
    model_name: str,
    model_identity: dict,
    layers: list[int],
    module_of: Callable[[int], str],
    d_ff: Mapping[int, int],
    n_samples: int,
    dtype: str,
    cache_dir: Path,
) -> dict[int, dict]:
    """Import C0 of every layer into the cache; {layer: {"path", "key", "imported": provenance}} for the manifest.

    N and the file dtype default to the hyperparameters' (``n_samples``, ``dtype``, also C0's dtype in the cache).
    A download whose sha256 is recorded and already imported is not fetched again; a local file is hashed each time.
    """
    n = source.n_samples or n_samples
    file_dtype = source.dtype or dtype
    entries = {}
    for layer in layers:
        module = module_of(layer)
        located, layout, digest = None, None, None
        if source.source != "local":  # a recorded digest names the cache entry without downloading
            for model_dir in [source.model_dir] if source.model_dir else model_dirs(model_name):
                layout = layout_path(model_dir, source.dataset, module, file_dtype, n)
                digest = known_sha256(source, layout)
                if digest is not None:
                    break
        if digest is None:
            located = locate(source, model_name, module, file_dtype, n, cache_dir)
            layout, digest = located.layout, file_digests(located.local)[0]
        origin = {"source": source.source, "file": layout, "file_sha256": digest, "dataset": source.dataset,
                  "n_samples": n, "file_dtype": file_dtype}  # fmt: skip
        key = imported_key(model_identity, layer, origin, dtype)
        path = statistics_path(cache_dir, key)
        if cached_statistic(path, key) is None:
            located = located or locate(source, model_name, module, file_dtype, n, cache_dir)
            if file_digests(located.local)[0] != digest:
                raise StatisticsFileError(located.location, f"sha256 changed while importing (expected {digest})")
            statistic = read_statistics_file(located.local, module=module, d_ff=d_ff[layer], shown=located.location)
            save_statistic(path, key, statistic.second_moment.to(getattr(torch, dtype)), statistic.count)
        provenance = {**origin, "location": _address(source, layout), "module": module, "d_ff": d_ff[layer],
                      "count": statistic_count(path), "local_file": str(located.local) if located else None}  # fmt: skip
        entries[layer] = {"path": str(path), "key": key, "imported": provenance}
    return entries


def load_imported(entry: Mapping) -> torch.Tensor:
    """C0 of an imported manifest entry; a cache file gone bad is imported again from its source file when that is
    still there with its sha256, else StatisticsFileError."""
    path, key, imported = Path(entry["path"]), entry["key"], entry["imported"]
    try:
        return load_statistic(path, key)
    except StatisticsCacheError as error:
        local = imported.get("local_file")
        if not local or not Path(local).is_file() or file_digests(local)[0] != key["imported"]["file_sha256"]:
            # not a StatisticsCacheError: recomputing (what the edit rule does for those) would not bring it back
            raise StatisticsFileError(
                path, f"{error.problem}, and its source file is not here to import again; rerun the statistics rule"
            ) from None
        print(f"{path}: {error.problem}; importing it again from {local}", flush=True)
        statistic = read_statistics_file(Path(local), module=imported["module"], d_ff=imported["d_ff"])
        save_statistic(path, key, statistic.second_moment.to(getattr(torch, key["dtype"])), statistic.count)
        return load_statistic(path, key)


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
