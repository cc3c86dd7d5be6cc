"""The statistics rule's work: C0 of every edited layer, computed over the corpus (encore.editing.covariance) or
imported from the ROME/MEMIT lineage's statistics files (encore.editing.statistics_sources), with the manifest that
points at them; and loading them back, with AlphaEdit's projector, for an edit (docs/algorithms.md §3, §4.4).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from encore.data import datasets, files
from encore.editing.covariance import (
    load_or_compute_projector,
    load_or_compute_statistics,
    load_statistic,
    statistics_key,
)
from encore.editing.hparams import Hyperparameters
from encore.environment import code_version
from encore.models.architecture import read_weight
from encore.models.device import Execution
from encore.models.loading import LoadedModel


def statistics_manifest(
    loaded: LoadedModel,
    layers: list[int],
    hparams: Hyperparameters,
    data_dir,
    resources: Path,
    run: Execution,
    source: dict | None = None,
) -> dict:
    """C0 of every layer of the (unedited) ``loaded`` model from the content-addressed cache under
    ``resources/statistics``, computed in one pass over the corpus where missing; the manifest pointing at them.
    ``source``: the config's ``statistics`` (docs/statistics.md); unless computed, C0 is imported from statistics files
    of the ROME/MEMIT lineage instead, and the manifest records where from ("source", and per layer "imported")."""
    from encore.editing.statistics_sources import import_statistics, statistics_source
    from encore.models.architecture import architecture_of

    imported = statistics_source(source)
    if imported is not None:
        started = time.perf_counter()
        layers_of = import_statistics(
            imported,
            model_name=loaded.name,
            model_identity=loaded.identity,
            layers=layers,
            module_of=architecture_of(loaded.model).down_proj_name,
            d_ff={layer: read_weight(loaded.model, layer).shape[1] for layer in layers},
            n_samples=hparams.mom2_n_samples,
            dtype=hparams.mom2_dtype,
            cache_dir=resources / "statistics",
        )
        return {
            "model": loaded.identity,
            "source": imported.describe(),
            "layers": {str(layer): entry for layer, entry in layers_of.items()},
            "seconds": round(time.perf_counter() - started, 2),
            "execution": run.describe(),
            "code": code_version(),
        }
    corpus = files.resolve_data_file("wikipedia", data_dir, resources / "data")
    started = time.perf_counter()
    paths = load_or_compute_statistics(
        loaded.model,
        loaded.tokenizer,
        loaded.identity,
        layers,
        documents_loader=lambda: list(datasets.iter_corpus_texts(corpus.path)),
        corpus_sha256=corpus.sha256,
        n_samples=hparams.mom2_n_samples,
        max_length=hparams.mom2_max_length,
        cache_dir=resources / "statistics",
        dtype=hparams.mom2_dtype,
    )
    key = lambda layer: statistics_key(  # noqa: E731
        loaded.identity, layer, corpus.sha256, hparams.mom2_n_samples, hparams.mom2_max_length, hparams.mom2_dtype
    )
    return {
        "model": loaded.identity,
        "corpus": {"path": str(corpus.path), "sha256": corpus.sha256, "source": corpus.source},
        "layers": {str(layer): {"path": str(path), "key": key(layer)} for layer, path in paths.items()},
        "seconds": round(time.perf_counter() - started, 2),
        "execution": run.describe(),
        "code": code_version(),
    }


def load_covariances(
    statistics_manifest: Path | dict, layers: list[int], projector_threshold: float | None = None, device="cpu"
):
    """({layer: C0}, {layer: null-space projector} or None) from the statistics rule's manifest (file or dict); an
    imported C0 whose cache file went bad is imported again from its source file (statistics_sources.load_imported)."""
    from encore.editing.statistics_sources import load_imported

    manifest = statistics_manifest
    if not isinstance(manifest, dict):
        manifest = json.loads(Path(statistics_manifest).read_text())
    covariances, projectors = {}, {}
    for layer in layers:
        entry = manifest["layers"].get(str(layer))
        if entry is None:
            raise ValueError(f"{statistics_manifest}: no statistics for layer {layer}; rerun the statistics rule")
        if "imported" in entry:
            covariances[layer] = load_imported(entry)
        else:
            covariances[layer] = load_statistic(Path(entry["path"]), entry["key"])
        if projector_threshold is not None:
            projectors[layer] = load_or_compute_projector(
                Path(entry["path"]), entry["key"], projector_threshold, device
            )
    return covariances, (projectors if projector_threshold is not None else None)
