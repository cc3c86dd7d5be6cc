"""The pipeline's stages as plain functions (the Snakemake scripts are thin wrappers around these).

Stages: statistics -> edit segments (each continues from the previous snapshot) -> evaluation of
each snapshot. Every output records what it depends on: model identity, hyperparameters, seeds,
data checksums and the code version.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
import transformers

import encore
from encore import datasets
from encore.editing.context import generate_context_templates
from encore.editing.covariance import (
    load_or_compute_projector,
    load_or_compute_statistics,
    load_statistic,
    statistics_key,
)
from encore.editing.editors import make_editor
from encore.editing.hparams import Hyperparameters
from encore.editing.sequential import EditorState, edit_batch, ledger_rows
from encore.editing.snapshots import apply_snapshot, load_snapshot, save_snapshot
from encore.models.architecture import read_weight
from encore.models.device import resolve_execution, state_device
from encore.models.loading import load_model
from encore.progress import clock, log


def code_version() -> dict:
    """Package version and, inside a git checkout, the commit and whether the tree is dirty."""
    version = {
        "encore": encore.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    from encore.environment import summary as environment_summary

    version["environment"] = environment_summary()
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        version.update(git_commit=commit, git_dirty=bool(dirty))
    except (OSError, subprocess.CalledProcessError):
        pass
    return version


def load_requests(dataset: str, data_dir, cache_dir, order_sample: str, limit: int | None):
    """Edit requests in the authors' order (filtered to the records available) and their provenance."""
    if dataset == "counterfact":
        records_file = datasets.resolve_data_file("counterfact", data_dir, cache_dir)
        order_file = datasets.resolve_data_file("counterfact_order", data_dir, cache_dir)
        records = datasets.load_counterfact(records_file.path)
    elif dataset == "zsre":
        records_file = datasets.resolve_data_file("zsre", data_dir, cache_dir)
        order_file = datasets.resolve_data_file("zsre_order", data_dir, cache_dir)
        records = datasets.load_zsre(records_file.path)
    else:
        raise ValueError(f"unknown dataset {dataset!r} (known: counterfact, zsre)")
    order = datasets.load_order(order_file.path, order_sample)
    if dataset == "zsre" and records_file.source == "local":
        # positions of the local zsRE subset in the full file are unknown: the authors' order cannot apply
        order = [record.case_id for record in records]
    ordered, skipped = datasets.order_records(records, order, limit)
    provenance = {
        "dataset": dataset,
        "records_file": {"path": str(records_file.path), "sha256": records_file.sha256, "source": records_file.source},
        "order_file": {"path": str(order_file.path), "sha256": order_file.sha256, "sample": order_sample},
        "order_ids_not_available": skipped,
        "records_available": len(records),
    }
    return ordered, provenance


def check_methods(methods: list[str], hparams_dir) -> None:
    """Every method must be a known editor or have a hyperparameter folder of its own."""
    from encore.editing.editors import EDITORS

    for method in methods:
        if method not in EDITORS and not (Path(hparams_dir) / method.upper()).is_dir():
            raise ValueError(
                f"methods: unknown method {method!r}; known methods: {', '.join(sorted(EDITORS))} "
                f"(a new editor needs an entry in encore.editing.editors.EDITORS and {hparams_dir}/{method.upper()}/)"
            )


def check_edit_count(dataset: str, data_dir, cache_dir, order_sample: str, num_edits: int) -> int | None:
    """Requests available in the ordering; a clear error when ``num_edits`` exceeds them. Returns None (no
    check) when the data files would first have to be downloaded: the edit rule checks again."""
    keys = {"counterfact": ("counterfact", "counterfact_order"), "zsre": ("zsre", "zsre_order")}[dataset]
    if not all(datasets.is_available(key, data_dir, cache_dir) for key in keys):
        return None
    records, provenance = load_requests(dataset, data_dir, cache_dir, order_sample, None)
    if num_edits > len(records):
        raise ValueError(
            f"num_edits: {num_edits} edits requested, but ordering {order_sample} of {dataset} has only {len(records)} "
            f"requests among the {provenance['records_available']} records of {provenance['records_file']['path']}; "
            f"lower num_edits to at most {len(records)}"
        )
    return len(records)


def load_covariances(
    statistics_manifest: Path, layers: list[int], projector_threshold: float | None = None, device="cpu"
):
    """({layer: C0}, {layer: null-space projector} or None) from the statistics rule's manifest."""
    manifest = json.loads(Path(statistics_manifest).read_text())
    covariances, projectors = {}, {}
    for layer in layers:
        entry = manifest["layers"].get(str(layer))
        if entry is None:
            raise ValueError(f"{statistics_manifest}: no statistics for layer {layer}; rerun the statistics rule")
        covariances[layer] = load_statistic(Path(entry["path"]), entry["key"])
        if projector_threshold is not None:
            projectors[layer] = load_or_compute_projector(
                Path(entry["path"]), entry["key"], projector_threshold, device
            )
    return covariances, (projectors if projector_threshold is not None else None)


def compute_statistics(
    model_name: str,
    layers: list[int],
    hparams: Hyperparameters,
    data_dir,
    resources: Path,
    output: Path,
    execution: dict | None = None,
) -> dict:
    """C0 for every layer (cached, content-addressed) and a manifest pointing at the cache files."""
    run = resolve_execution(**(execution or {}))
    loaded = load_model(model_name, cache_dir=resources / "models", device=run.device, dtype=run.torch_dtype)
    corpus = datasets.resolve_data_file("wikipedia", data_dir, resources / "data")
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
    manifest = {
        "model": loaded.identity,
        "corpus": {"path": str(corpus.path), "sha256": corpus.sha256, "source": corpus.source},
        "layers": {
            str(layer): {
                "path": str(path),
                "key": statistics_key(
                    loaded.identity,
                    layer,
                    corpus.sha256,
                    hparams.mom2_n_samples,
                    hparams.mom2_max_length,
                    hparams.mom2_dtype,
                ),
            }
            for layer, path in paths.items()
        },
        "seconds": round(time.perf_counter() - started, 2),
        "execution": run.describe(),
        "code": code_version(),
    }
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
) -> Path:
    """Continue sequential editing from ``previous`` (or the unedited model) for ``n_batches`` batches."""
    layers = sorted(hparams.layers)
    run_on = resolve_execution(**(execution or {}))
    loaded = load_model(model_name, cache_dir=resources / "models", device=run_on.device, dtype=run_on.torch_dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    records, provenance = load_requests(dataset, data_dir, resources / "data", order_sample, num_edits)
    if len(records) < num_edits:
        raise ValueError(
            f"only {len(records)} {dataset} requests are available but num_edits = {num_edits}; lower num_edits"
        )
    editor = make_editor(hparams)
    d_ff = read_weight(loaded.model, layers[0]).shape[1]
    solves_on = state_device(run_on, d_ff, len(layers), editor.needs_projector)
    norm_rows = []
    if previous is None:
        torch.manual_seed(seed)
        templates = generate_context_templates(
            model, tokenizer, seed, hparams.context_seed_words, hparams.context_template_length
        )
        state = EditorState.initial(templates, layers, d_ff, device=solves_on)
        norm_rows += [
            {"edits": 0, "batch": 0, "layer": layer, "frobenius_norm": float(read_weight(model, layer).double().norm())}
            for layer in layers
        ]
    else:
        snapshot = load_snapshot(
            previous, expected_model=loaded.identity, expected_layers=layers, state_device=solves_on
        )
        apply_snapshot(model, snapshot)
        state = snapshot.state
        if snapshot.manifest["case_ids"] != [record.case_id for record in records[: state.edits_done]]:
            raise ValueError(
                f"{previous}: its edited case ids differ from the current edit order (data or order changed); "
                "rerun from the first segment"
            )
    covariances, projectors = load_covariances(
        statistics_manifest, layers, hparams.nullspace_threshold if editor.needs_projector else None, run_on.device
    )
    if solves_on != "cpu":  # resident on the GPU in float64 for the whole segment
        covariances = {layer: c.to(solves_on, torch.float64) for layer, c in covariances.items()}
        projectors = projectors and {layer: p.to(solves_on, torch.float64) for layer, p in projectors.items()}
    log(f"{method}/{variant}: model on {run_on.device} ({run_on.dtype}), float64 solves on {solves_on}")

    ledger, started, first_edit = [], time.perf_counter(), state.edits_done
    total_batches = -(-num_edits // batch_size)
    log(f"{method}/{variant}: segment of {n_batches} batches from edit {state.edits_done} of {num_edits}")
    for k in range(n_batches):
        batch = records[state.edits_done : state.edits_done + batch_size]
        if not batch:
            break
        first_position, batch_index = state.edits_done, state.batches_done
        result = edit_batch(model, tokenizer, batch, hparams, editor, state, covariances, projectors)
        ledger += ledger_rows(batch, result, batch_index, first_position)
        norm_rows += [
            {"edits": state.edits_done, "batch": batch_index + 1, "layer": layer, "frobenius_norm": value}
            for layer, value in result["norms"].items()
        ]
        per_edit = (time.perf_counter() - started) / (state.edits_done - first_edit)
        segment_left = min(first_edit + n_batches * batch_size, num_edits) - state.edits_done
        iterations = result["targets"].iterations
        log(
            f"batch {k + 1} of {n_batches} in this segment ({batch_index + 1} of {total_batches} in the run): "
            f"{state.edits_done}/{num_edits} edits, mean iterations {sum(iterations) / len(iterations):.1f}, "
            f"{per_edit:.2f} s/edit ("
            + ", ".join(f"{name} {value:.1f} s" for name, value in result["timings"].items())
            + f"), ETA segment {clock(per_edit * segment_left)}, "
            f"run {clock(per_edit * (num_edits - state.edits_done))}"
        )

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    run = {"method": method, "variant": variant, "order": order_sample}
    pd.DataFrame([{**run, **row} for row in ledger]).to_csv(output / "ledger.csv", index=False)
    pd.DataFrame([{**run, **row} for row in norm_rows]).to_csv(output / "norms.csv", index=False)
    manifest = {
        "experiment": experiment,
        "model": loaded.identity,
        "model_name": model_name,
        "method": method,
        "variant": variant,
        "hparams": hparams.as_dict(),
        "seed": seed,
        "batch_size": batch_size,
        "data": provenance,
        "case_ids": [record.case_id for record in records[: state.edits_done]],
        "statistics": json.loads(Path(statistics_manifest).read_text())["layers"],
        "execution": {**run_on.describe(), "solves": solves_on},
        "code": code_version(),
    }
    return save_snapshot(
        output, model, state, layers, manifest, extra_files=("ledger.csv", "norms.csv"), previous=previous
    )


def evaluate_snapshot(
    *,
    model_name: str,
    snapshot: Path | None,
    dataset: str,
    data_dir,
    resources: Path,
    output: Path,
    evaluation: dict,
    experiment: str,
    order_sample: str = "0",
    num_edits: int | None = None,
    seed: int = 0,
    execution: dict | None = None,
    records_output: Path | None = None,
    downstream_output: Path | None = None,
) -> pd.DataFrame:
    """All metrics of a snapshot (or of the unedited model when ``snapshot`` is None) from files alone.
    Next to ``output`` a ``.provenance.json`` records where and with which code each part was computed, and
    ``records_output`` (default: ``output`` with the suffix ``.records.csv``) the per-record editing scores and
    ``downstream_output`` (default: the suffix ``.downstream.csv``) the per-item downstream predictions.

    ``evaluation`` (config key): generation / downstream / analysis = "none" | "final" | "all" (at which
    snapshots; the unedited model counts as final), generation_records, downstream_tasks,
    downstream_tests, downstream_shots, analysis_records; edited_facts = "all" (every snapshot scores every
    fact edited so far) | "final" (earlier snapshots score the authors' seeded 20% of them); perplexity_tokens
    (0: none), perplexity_window: WikiText-2 test perplexity at every evaluation.
    """
    from encore.evaluation import rows as ev

    run_on = resolve_execution(**(execution or {}))
    loaded = load_model(model_name, cache_dir=resources / "models", device=run_on.device, dtype=run_on.torch_dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    if snapshot is None:
        records, _ = load_requests(dataset, data_dir, resources / "data", order_sample, num_edits)
        subset, final = "to-be-edited", True
        labels = {"method": "unedited", "variant": "unedited", "order": order_sample, "edits": 0}
    else:
        manifest = json.loads((Path(snapshot) / "manifest.json").read_text())
        restored = load_snapshot(snapshot, expected_model=loaded.identity, expected_layers=manifest["layers"])
        apply_snapshot(model, restored)
        everything, _ = load_requests(
            dataset, data_dir, resources / "data", manifest["data"]["order_file"]["sample"], None
        )
        by_id = {record.case_id: record for record in everything}
        records = [by_id[case_id] for case_id in manifest["case_ids"]]
        subset, final = "edited-so-far", manifest["edits_done"] == num_edits
        labels = {
            "method": manifest["method"],
            "variant": manifest["variant"],
            "order": manifest["data"]["order_file"]["sample"],
            "edits": manifest["edits_done"],
        }

    started = time.perf_counter()
    wanted = {"all": True, "final": final, "none": False}
    scored, scored_subset = records, subset
    if snapshot is not None and not final and evaluation.get("edited_facts", "all") == "final":
        scored, scored_subset = ev.authors_subset_of(records), "authors-20pct"  # before the last snapshot
    record_frames, item_frames = [], []

    def with_records(results, frames=record_frames):  # metric rows; the per-record/-item frame goes to its file
        rows, frame = results
        frames.append(frame)
        return rows

    parts = [
        (
            f"editing metrics on {len(scored)} {scored_subset} facts"
            + (" (+ the authors' 20% subset)" if snapshot is not None and final else ""),
            lambda: with_records(
                ev.editing_results(
                    model,
                    tokenizer,
                    dataset,
                    scored,
                    scored_subset,
                    unedited=snapshot is None,
                    authors_subset=snapshot is not None and final,
                )
            ),
        )
    ]
    if evaluation.get("perplexity_tokens", 0):
        parts.append(
            ("perplexity", lambda: ev.perplexity_rows(model, tokenizer, data_dir, resources / "data", evaluation))
        )
    if wanted[evaluation.get("generation", "final")] and dataset == "counterfact":
        parts.append(
            (
                "generation entropy",
                lambda: with_records(
                    ev.generation_results(model, tokenizer, records, subset, evaluation.get("generation_records"), seed)
                ),
            )
        )
    if wanted[evaluation.get("downstream", "final")]:
        parts.append(
            (
                "downstream tasks",
                lambda: with_records(ev.downstream_results(model, tokenizer, data_dir, evaluation), item_frames),
            )
        )
    if wanted[evaluation.get("analysis", "all")]:
        from encore.evaluation.analysis import analysis_rows

        prompts = [r.rewrite_prompt for r in records[: evaluation.get("analysis_records", 100)]]
        parts.append(
            (
                "norm and activation analyses",
                lambda: analysis_rows(model, tokenizer, prompts, f"{dataset}-{subset}-rewrite-prompts"),
            )
        )
    rows, seconds = [], {}
    for number, (name, compute) in enumerate(parts, start=1):
        log(f"evaluation part {number}/{len(parts)}: {name}")
        part_started = time.perf_counter()
        rows += compute()
        seconds[name] = round(time.perf_counter() - part_started, 2)
        log(f"evaluation part {number}/{len(parts)}: {name} done in {seconds[name]:.1f} s")
    rows.append({"metric": "evaluation_seconds", "value": time.perf_counter() - started, "protocol": "timing"})
    table = ev.to_frame(rows, experiment=experiment, model=model_name, dataset=dataset, **labels)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    provenance = {
        "snapshot": str(snapshot) if snapshot else None,
        "model": loaded.identity,
        "execution": run_on.describe(),
        "evaluation": evaluation,
        "seconds": seconds,
        "code": code_version(),
    }
    Path(output).with_suffix(".provenance.json").write_text(json.dumps(provenance, indent=1))
    records_table = ev.to_frame(
        pd.concat(record_frames, ignore_index=True), experiment=experiment, model=model_name, dataset=dataset, **labels
    )
    ev.write_records(records_table, records_output or ev.records_path(output))
    from encore.evaluation.downstream import ITEM_COLUMNS

    items = pd.concat(item_frames, ignore_index=True) if item_frames else pd.DataFrame(columns=ITEM_COLUMNS)
    items_table = ev.to_frame(items, experiment=experiment, model=model_name, dataset=dataset, **labels)
    items_table.to_csv(downstream_output or ev.downstream_records_path(output), index=False)
    table.to_csv(output, index=False)
    return table
