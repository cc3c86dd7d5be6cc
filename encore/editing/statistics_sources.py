"""Where statistics files of the ROME/MEMIT lineage come from, and their import as C0 (docs/statistics.md).

The config key ``statistics`` (``statistics_source``) names a source: ``local`` (a directory in the lineage's layout),
``url`` (the MEMIT statistics URL the official code downloads from) or ``hub`` (a Hugging Face repository). A download
is used only when its sha256 is recorded (``known_statistics.yaml`` or ``statistics.sha256``) and is verified
before it is read. ``import_statistics`` reads each layer's file (encore.editing.statistics_files: checked, one-line
errors) into the content-addressed cache under a key naming its source, file and sha256.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import torch
import yaml

from encore.cli import one_line
from encore.data.files import file_digests
from encore.editing.covariance import (
    STATISTICS_VERSION,
    StatisticsCacheError,
    cached_statistic,
    load_statistic,
    save_statistic,
    statistic_count,
    statistics_path,
)
from encore.editing.statistics_files import (
    StatisticsFileError,
    layout_path,
    model_dirs,
    parse_file_name,
    read_statistics_file,
)

SOURCES = ("computed", "local", "url", "hub")
MEMIT_STATS_URL = "https://memit.baulab.info/data/stats"  # REMOTE_ROOT_URL + "/data/stats" of kmeng01/memit
KNOWN_FILES = Path(__file__).with_name("known_statistics.yaml")


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
            raise StatisticsFileError(url, f"download failed ({one_line(error)})") from None
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
        raise StatisticsFileError(location, f"download failed ({one_line(error)})") from None
    except EntryNotFoundError:  # the repository has no such file
        raise _NotThere(location) from None
    except Exception as error:  # network, authentication, unknown repository or revision
        raise StatisticsFileError(location, f"download failed ({one_line(error)})") from None
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
