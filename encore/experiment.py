"""The pipeline's stages as plain functions (the Snakemake scripts are thin wrappers around these).

Stages: statistics -> edit segments (each continues from the previous snapshot) -> evaluation of
each snapshot. Every output records what it depends on: model identity, hyperparameters, seeds,
data checksums and the code version. The editing and evaluation themselves are encore.session's, shared with the
library API (encore.api).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from encore.data import files
from encore.data.requests import load_requests, records_description
from encore.editing.hparams import Hyperparameters
from encore.editing.statistics import statistics_manifest
from encore.models.loading import load_for_execution
from encore.progress import clock, log
from encore.session import EditingSession, evaluate_model, read_requests, write_evaluation
from encore.settings import EvaluationSettings, RunSettings


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
    if not all(files.is_available(key, data_dir, cache_dir) for key in keys[1 if records_files else 0 :]):
        return None
    records, provenance = load_requests(dataset, data_dir, cache_dir, order_sample, None, records_files)
    if num_edits > len(records):
        raise ValueError(
            f"num_edits: {num_edits} edits requested, but ordering {order_sample} of {dataset} has only {len(records)} "
            f"requests among the {provenance['records_available']} records of {records_description(provenance)}; "
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
    loaded, resolved = load_for_execution(model_name, resources / "models", execution)
    manifest = statistics_manifest(loaded, layers, hparams, data_dir, resources, resolved, source=statistics)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(manifest, indent=1))
    return manifest


def run_edit_segment(
    run: RunSettings,
    *,
    method: str,
    variant: str,
    hparams: Hyperparameters,
    order_sample: str,
    batch_size: int,
    n_batches: int,
    statistics_manifest: Path,
    previous: Path | None,
    output: Path,
    execution: dict | None = None,
) -> Path:
    """Continue sequential editing of ``run`` from ``previous`` (or the unedited model) for ``n_batches`` batches of
    ``batch_size`` requests of ordering ``order_sample``; writes the snapshot ``output`` and returns its manifest."""
    loaded, resolved = load_for_execution(run.model, run.resources / "models", execution)
    records, provenance = load_requests(
        run.dataset, run.data_dir, run.resources / "data", order_sample, run.num_edits, run.records_files
    )
    if len(records) < run.num_edits:
        raise ValueError(
            f"only {len(records)} {run.dataset} requests are available but num_edits = {run.num_edits}; lower num_edits"
        )
    statistics = json.loads(Path(statistics_manifest).read_text())
    session = EditingSession.open(loaded, hparams, resolved, statistics, run.seed, previous)
    state = session.state
    if session.case_ids != [record.case_id for record in records[: state.edits_done]]:
        raise ValueError(
            f"{previous}: its edited case ids differ from the current edit order (data or order changed); "
            "rerun from the first segment"
        )
    log(f"{method}/{variant}: model on {resolved.device} ({resolved.dtype}), float64 solves on {session.solves_on}")

    started, first_edit = time.perf_counter(), state.edits_done
    total_batches = -(-run.num_edits // batch_size)
    log(f"{method}/{variant}: segment of {n_batches} batches from edit {state.edits_done} of {run.num_edits}")
    for k in range(n_batches):
        batch = records[state.edits_done : state.edits_done + batch_size]
        if not batch:
            break
        batch_index = state.batches_done
        result = session.edit(batch)
        per_edit = (time.perf_counter() - started) / (state.edits_done - first_edit)
        segment_left = min(first_edit + n_batches * batch_size, run.num_edits) - state.edits_done
        iterations = result["targets"].iterations
        log(
            f"batch {k + 1} of {n_batches} in this segment ({batch_index + 1} of {total_batches} in the run): "
            f"{state.edits_done}/{run.num_edits} edits, mean iterations {sum(iterations) / len(iterations):.1f}, "
            f"post-update efficacy {100 * sum(row['post_success'] for row in session.ledger[-len(batch) :]) / len(batch):.0f}%, "
            f"{per_edit:.2f} s/edit ("
            + ", ".join(f"{name} {value:.1f} s" for name, value in result["timings"].items())
            + f"), ETA segment {clock(per_edit * segment_left)}, "
            f"run {clock(per_edit * (run.num_edits - state.edits_done))}"
        )
    manifest = session.manifest(experiment=run.experiment, model_name=run.model, method=method, variant=variant,
                                seed=run.seed, batch_size=batch_size, data=provenance)  # fmt: skip
    return session.save(output, manifest, {"method": method, "variant": variant, "order": order_sample})


def evaluate_snapshot(
    run: RunSettings,
    *,
    snapshot: Path | None,
    output: Path,
    evaluation: EvaluationSettings | dict,
    order_sample: str = "0",
    execution: dict | None = None,
    records_output: Path | None = None,
    downstream_output: Path | None = None,
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
    settings = EvaluationSettings.of(evaluation)
    loaded, resolved = load_for_execution(run.model, run.resources / "models", execution)
    model, tokenizer = loaded.model, loaded.tokenizer
    records, final, labels = _state_to_score(run, snapshot, loaded, order_sample)
    result = evaluate_model(model, tokenizer, dataset=run.dataset, records=records, unedited=snapshot is None,
                            final=final, evaluation=settings, data_dir=run.data_dir, resources=run.resources,
                            seed=run.seed)  # fmt: skip
    provenance = {
        "snapshot": str(snapshot) if snapshot else None,
        "model": loaded.identity,
        "execution": resolved.describe(),
        "evaluation": settings.as_dict(),
    }
    return write_evaluation(result, output, labels=labels, experiment=run.experiment, model_name=run.model,
                            dataset=run.dataset, provenance=provenance, records_output=records_output,
                            downstream_output=downstream_output)  # fmt: skip


def _state_to_score(run: RunSettings, snapshot: Path | None, loaded, order_sample: str):
    """The model state ``evaluate_snapshot`` scores: the snapshot applied to ``loaded`` (None: the unedited model),
    the facts it scores (the snapshot's stored requests, else its case ids in the data files; the unedited model:
    the run's first num_edits of ``order_sample``), whether it is the run's final state, and its row labels."""
    from encore.editing.snapshots import apply_snapshot, load_snapshot

    if snapshot is None:
        records, _ = load_requests(
            run.dataset, run.data_dir, run.resources / "data", order_sample, run.num_edits, run.records_files
        )
        return records, True, {"method": "unedited", "variant": "unedited", "order": order_sample, "edits": 0}
    manifest = json.loads((Path(snapshot) / "manifest.json").read_text())
    restored = load_snapshot(snapshot, expected_model=loaded.identity, expected_layers=manifest["layers"])
    apply_snapshot(loaded.model, restored)
    sample = manifest["data"]["order_file"]["sample"]
    records = read_requests(snapshot) if "requests.json" in manifest["files"] else None
    if records is None:
        everything, _ = load_requests(
            run.dataset, run.data_dir, run.resources / "data", sample, None, run.records_files
        )
        by_id = {record.case_id: record for record in everything}
        records = [by_id[case_id] for case_id in manifest["case_ids"]]
    labels = {"method": manifest["method"], "variant": manifest["variant"], "order": sample,
              "edits": manifest["edits_done"]}  # fmt: skip
    return records, manifest["edits_done"] == run.num_edits, labels
