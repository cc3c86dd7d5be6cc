"""The pipeline's stages as plain functions (the Snakemake scripts are thin wrappers around these).

Stages: statistics -> edit segments (each continues from the previous snapshot) -> evaluation of
each snapshot. Every output records what it depends on: model identity, hyperparameters, seeds,
data checksums and the code version. The editing and evaluation themselves are encore.session's, shared with the
library API (encore.api).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from encore import datasets, record_formats
from encore.editing.hparams import Hyperparameters
from encore.models.device import resolve_execution
from encore.models.loading import load_model
from encore.progress import clock, log
from encore.session import (
    EditingSession,
    code_version,
    evaluate_model,
    load_covariances,
    read_requests,
    statistics_manifest,
    write_evaluation,
)
from encore.settings import EvaluationSettings

__all__ = ["code_version", "load_covariances"]  # kept importable from here


def load_requests(
    dataset: str, data_dir, cache_dir, order_sample: str, limit: int | None, records_files: list | None = None
):
    """Edit requests in the authors' order (filtered to the records available) and their provenance.

    ``records_files`` (config key): JSON files read instead of the dataset's registered records file, each in any
    schema of encore.record_formats (ROME or EasyEdit CounterFact, MEND or EasyEdit/KnowEdit zsRE; detected per
    file). A relative path is looked up in the data directory (``data_dir`` or ENCORE_DATA_DIR), then in the working
    directory. The authors' order applies when every record has its own case_id (both CounterFact schemas), or to
    the full registered zsRE file; other records are edited in the files' order."""
    if dataset not in ("counterfact", "zsre"):
        raise ValueError(f"unknown dataset {dataset!r} (known: counterfact, zsre)")
    if records_files:
        records, files = _load_records_files(dataset, records_files, data_dir)
        order_file = datasets.resolve_data_file(f"{dataset}_order", data_dir, cache_dir)
        full_zsre = [f["git_blob_sha1"] for f in files] == [datasets.REGISTRY["zsre"].git_blob_sha1]
        authors_order = all(f["own_case_ids"] for f in files) or full_zsre
        source = {"records_files": [{k: v for k, v in f.items() if k != "own_case_ids"} for f in files]}
    else:
        records_file = datasets.resolve_data_file(dataset, data_dir, cache_dir)
        order_file = datasets.resolve_data_file(f"{dataset}_order", data_dir, cache_dir)
        load = datasets.load_counterfact if dataset == "counterfact" else datasets.load_zsre
        records = load(records_file.path)
        # positions of the local zsRE subset in the full file are unknown: the authors' order cannot apply
        authors_order = not (dataset == "zsre" and records_file.source == "local")
        source = {"records_file": {"path": str(records_file.path), "sha256": records_file.sha256,
                                   "source": records_file.source}}  # fmt: skip
    order = datasets.load_order(order_file.path, order_sample)
    if not authors_order:
        order = [record.case_id for record in records]
    ordered, skipped = datasets.order_records(records, order, limit)
    provenance = {
        "dataset": dataset,
        **source,
        "order_file": {"path": str(order_file.path), "sha256": order_file.sha256, "sample": order_sample},
        "order_ids_not_available": skipped,
        "records_available": len(records),
    }
    if records_files:
        provenance["order"] = "authors" if authors_order else "file"
    return ordered, provenance


def _records_path(name, data_dir) -> Path:
    """A records file: absolute, or relative to the data directory (if set and there), else to the working one."""
    path = Path(name)
    directory = data_dir or os.environ.get("ENCORE_DATA_DIR")
    if not path.is_absolute() and directory and (Path(directory) / path).is_file():
        return Path(directory) / path
    if not path.is_file():
        where = f"{directory} or the working directory" if directory else "the working directory"
        raise datasets.DataError(f"records_files: {name} not found (looked in {where}); give an existing JSON file")
    return path


def _load_records_files(dataset: str, names: list, data_dir) -> tuple[list, list[dict]]:
    """Records of every file (case ids unique over all of them) and, per file, what the provenance records."""
    records, files, first_file = [], [], {}
    for name in names:
        path = _records_path(name, data_dir)
        loaded, info = record_formats.load_records(path, dataset, first_case_id=len(records))
        for record in loaded:
            if record.case_id in first_file:
                raise datasets.DataError(
                    f"records_files: case_id {record.case_id} is in {first_file[record.case_id]} and in {path}; "
                    "give every record its own case_id"
                )
            first_file[record.case_id] = path
        sha256, blob = datasets.file_digests(path)
        files.append({**info, "sha256": sha256, "git_blob_sha1": blob})
        for note in info["notes"]:
            log(f"{path.name} ({info['schema']} schema): {note}")
        records += loaded
    return records, files


def _records_description(provenance: dict) -> str:
    if "records_files" in provenance:
        return ", ".join(entry["path"] for entry in provenance["records_files"])
    return provenance["records_file"]["path"]


def check_methods(methods: list[str], hparams_dir) -> None:
    """Every method must be a known editor or have a hyperparameter folder of its own."""
    from encore.editing.editors import EDITORS
    from encore.editing.hparams import hparams_folder

    for method in methods:
        if method not in EDITORS and not hparams_folder(hparams_dir, method).is_dir():
            raise ValueError(
                f"methods: unknown method {method!r}; known methods: {', '.join(sorted(EDITORS))} "
                f"(a new editor needs an entry in encore.editing.editors.EDITORS and {hparams_dir}/{method.upper()}/)"
            )


def experiment_runs(config: dict) -> list[tuple[str, str]]:
    """The (method, variant) runs of an experiment's config: every method x every variant, or per method (default
    plain) when ``variants`` is a mapping, whose methods must all be listed in ``methods``. The pipeline's rules and
    the plan (encore.plan) enumerate runs with it."""
    methods, variants = config["methods"], config["variants"]
    if isinstance(variants, dict):
        unknown = sorted(set(variants) - set(methods))
        if unknown:
            raise ValueError(f"variants: {unknown} are not in methods {methods}: list them in methods or remove them")
        return [(method, variant) for method in methods for variant in variants.get(method, ["plain"])]
    return [(method, variant) for method in methods for variant in variants]


def check_edit_count(
    dataset: str, data_dir, cache_dir, order_sample: str, num_edits: int, records_files: list | None = None
) -> int | None:
    """Requests available in the ordering; a clear error when ``num_edits`` exceeds them. Returns None (no
    check) when the data files would first have to be downloaded: the edit rule checks again."""
    keys = {"counterfact": ("counterfact", "counterfact_order"), "zsre": ("zsre", "zsre_order")}[dataset]
    if not all(datasets.is_available(key, data_dir, cache_dir) for key in keys[1 if records_files else 0 :]):
        return None
    records, provenance = load_requests(dataset, data_dir, cache_dir, order_sample, None, records_files)
    if num_edits > len(records):
        raise ValueError(
            f"num_edits: {num_edits} edits requested, but ordering {order_sample} of {dataset} has only {len(records)} "
            f"requests among the {provenance['records_available']} records of {_records_description(provenance)}; "
            f"lower num_edits to at most {len(records)}"
        )
    return len(records)


def snapshot_edits(num_edits: int, batch_size: int, snapshot_every: int) -> list[int]:
    """Edit counts at which a run writes a snapshot: every ``snapshot_every`` batches, and at the end."""
    step = batch_size * snapshot_every
    return list(range(step, num_edits, step)) + [num_edits]


def compute_statistics(
    model_name: str,
    layers: list[int],
    hparams: Hyperparameters,
    data_dir,
    resources: Path,
    output: Path,
    execution: dict | None = None,
    statistics: dict | None = None,
) -> dict:
    """C0 for every layer (cached, content-addressed) and a manifest pointing at the cache files; ``statistics``: the
    config's key of that name, computed here (None, the default) or imported from files (docs/statistics.md)."""
    run = resolve_execution(**(execution or {}))
    loaded = load_model(model_name, cache_dir=resources / "models", device=run.device, dtype=run.torch_dtype)
    manifest = statistics_manifest(loaded, layers, hparams, data_dir, resources, run, source=statistics)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(manifest, indent=1))
    return manifest


def run_edit_segment(
    *,
    model_name: str,
    method: str,
    variant: str,
    hparams: Hyperparameters,
    dataset: str,
    data_dir,
    resources: Path,
    order_sample: str,
    num_edits: int,
    batch_size: int,
    n_batches: int,
    seed: int,
    statistics_manifest: Path,
    previous: Path | None,
    output: Path,
    experiment: str,
    execution: dict | None = None,
    records_files: list | None = None,
) -> Path:
    """Continue sequential editing from ``previous`` (or the unedited model) for ``n_batches`` batches."""
    run_on = resolve_execution(**(execution or {}))
    loaded = load_model(model_name, cache_dir=resources / "models", device=run_on.device, dtype=run_on.torch_dtype)
    records, provenance = load_requests(dataset, data_dir, resources / "data", order_sample, num_edits, records_files)
    if len(records) < num_edits:
        raise ValueError(
            f"only {len(records)} {dataset} requests are available but num_edits = {num_edits}; lower num_edits"
        )
    statistics = json.loads(Path(statistics_manifest).read_text())
    session = EditingSession.open(loaded, hparams, run_on, statistics, seed, previous)
    state = session.state
    if session.case_ids != [record.case_id for record in records[: state.edits_done]]:
        raise ValueError(
            f"{previous}: its edited case ids differ from the current edit order (data or order changed); "
            "rerun from the first segment"
        )
    log(f"{method}/{variant}: model on {run_on.device} ({run_on.dtype}), float64 solves on {session.solves_on}")

    started, first_edit = time.perf_counter(), state.edits_done
    total_batches = -(-num_edits // batch_size)
    log(f"{method}/{variant}: segment of {n_batches} batches from edit {state.edits_done} of {num_edits}")
    for k in range(n_batches):
        batch = records[state.edits_done : state.edits_done + batch_size]
        if not batch:
            break
        batch_index = state.batches_done
        result = session.edit(batch)
        per_edit = (time.perf_counter() - started) / (state.edits_done - first_edit)
        segment_left = min(first_edit + n_batches * batch_size, num_edits) - state.edits_done
        iterations = result["targets"].iterations
        log(
            f"batch {k + 1} of {n_batches} in this segment ({batch_index + 1} of {total_batches} in the run): "
            f"{state.edits_done}/{num_edits} edits, mean iterations {sum(iterations) / len(iterations):.1f}, "
            f"post-update efficacy {100 * sum(row['post_success'] for row in session.ledger[-len(batch) :]) / len(batch):.0f}%, "
            f"{per_edit:.2f} s/edit ("
            + ", ".join(f"{name} {value:.1f} s" for name, value in result["timings"].items())
            + f"), ETA segment {clock(per_edit * segment_left)}, "
            f"run {clock(per_edit * (num_edits - state.edits_done))}"
        )
    manifest = session.manifest(experiment=experiment, model_name=model_name, method=method, variant=variant,
                                seed=seed, batch_size=batch_size, data=provenance)  # fmt: skip
    return session.save(output, manifest, {"method": method, "variant": variant, "order": order_sample})


def evaluate_snapshot(
    *,
    model_name: str,
    snapshot: Path | None,
    dataset: str,
    data_dir,
    resources: Path,
    output: Path,
    evaluation: EvaluationSettings | dict,
    experiment: str,
    order_sample: str = "0",
    num_edits: int | None = None,
    seed: int = 0,
    execution: dict | None = None,
    records_output: Path | None = None,
    downstream_output: Path | None = None,
    records_files: list | None = None,
):
    """All metrics of a snapshot (or of the unedited model when ``snapshot`` is None) from files alone.
    Next to ``output`` a ``.provenance.json`` records where and with which code each part was computed (and the
    metrics the records cannot support, ``skipped_metrics``), ``records_output`` (default: ``output`` with the
    suffix ``.records.csv``) the per-record editing scores and ``downstream_output`` (default: the suffix
    ``.downstream.csv``) the per-item downstream predictions. A snapshot written by the API (encore.api) scores the
    requests it stores; a pipeline snapshot those of its case ids in the data files.

    ``evaluation`` (config key): generation / downstream / analysis = "none" | "final" | "all" (at which
    snapshots; the unedited model counts as final), generation_records, downstream_tasks,
    downstream_tests, downstream_shots, analysis_records; edited_facts = "all" (every snapshot scores every
    fact edited so far) | "final" (earlier snapshots score the authors' seeded 20% of them); perplexity_tokens
    (0: none), perplexity_window: WikiText-2 test perplexity at every evaluation. A dict (the rule's param, the
    validated config's) becomes an encore.settings.EvaluationSettings here, once; keys it leaves out take the
    config schema's defaults.
    """
    from encore.editing.snapshots import apply_snapshot, load_snapshot

    settings = EvaluationSettings.of(evaluation)
    run_on = resolve_execution(**(execution or {}))
    loaded = load_model(model_name, cache_dir=resources / "models", device=run_on.device, dtype=run_on.torch_dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    if snapshot is None:
        records, _ = load_requests(dataset, data_dir, resources / "data", order_sample, num_edits, records_files)
        final = True
        labels = {"method": "unedited", "variant": "unedited", "order": order_sample, "edits": 0}
    else:
        manifest = json.loads((Path(snapshot) / "manifest.json").read_text())
        restored = load_snapshot(snapshot, expected_model=loaded.identity, expected_layers=manifest["layers"])
        apply_snapshot(model, restored)
        records = read_requests(snapshot) if "requests.json" in manifest["files"] else None
        if records is None:
            sample = manifest["data"]["order_file"]["sample"]
            everything, _ = load_requests(dataset, data_dir, resources / "data", sample, None, records_files)
            by_id = {record.case_id: record for record in everything}
            records = [by_id[case_id] for case_id in manifest["case_ids"]]
        final = manifest["edits_done"] == num_edits
        labels = {
            "method": manifest["method"],
            "variant": manifest["variant"],
            "order": manifest["data"]["order_file"]["sample"],
            "edits": manifest["edits_done"],
        }
    result = evaluate_model(model, tokenizer, dataset=dataset, records=records, unedited=snapshot is None,
                            final=final, evaluation=settings, data_dir=data_dir, resources=resources,
                            seed=seed)  # fmt: skip
    provenance = {
        "snapshot": str(snapshot) if snapshot else None,
        "model": loaded.identity,
        "execution": run_on.describe(),
        "evaluation": settings.as_dict(),
    }
    return write_evaluation(result, output, labels=labels, experiment=experiment, model_name=model_name,
                            dataset=dataset, provenance=provenance, records_output=records_output,
                            downstream_output=downstream_output)  # fmt: skip
