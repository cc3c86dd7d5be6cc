"""One code path for editing and evaluating, shared by the pipeline's stages (encore.experiment) and the library API
(encore.api).

``EditingSession`` is a model being edited sequentially: its hyperparameters and editor, C0 per layer (and
AlphaEdit's projector) from the statistics manifest, and the EditorState; ``open`` starts from the unedited model
(torch seed, then context templates sampled from it, algorithms.md §2.2) or continues from a snapshot (S_P rebuilt
from the chain's keys), ``edit`` applies one batch (encore.editing.sequential.edit_batch) and ``save`` writes the
snapshot with its ledger and norms. ``evaluate_model`` computes every metric row of a model state in memory;
``write_evaluation`` writes them as the evaluate rule does.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from encore.data.datasets import EditRecord
from encore.data.record_formats import missing_metrics
from encore.editing.context import generate_context_templates
from encore.editing.editors import Editor, make_editor
from encore.editing.hparams import Hyperparameters
from encore.editing.sequential import EditorState, edit_batch, ledger_rows
from encore.editing.snapshots import SnapshotError, apply_snapshot, load_snapshot, save_snapshot
from encore.editing.statistics import load_covariances
from encore.environment import code_version
from encore.evaluation import protocols
from encore.evaluation.efficacy import post_update_efficacy
from encore.models.architecture import read_weight
from encore.models.device import Execution, state_device
from encore.models.loading import LoadedModel
from encore.models.precision import precision_scope
from encore.progress import log
from encore.settings import EvaluationSettings

REQUESTS = "requests.json"  # beside API snapshots: every request edited so far (the pipeline reads its data files)


@dataclass
class EditingSession:
    """A model under sequential editing and everything its next batch depends on (see the module doc)."""

    loaded: LoadedModel
    hparams: Hyperparameters
    editor: Editor
    execution: Execution
    solves_on: str  # device of the float64 state and solves
    state: EditorState
    covariances: dict[int, torch.Tensor]
    projectors: dict[int, torch.Tensor] | None
    statistics: dict  # the statistics manifest
    previous: Path | None  # the snapshot the next ``save`` continues (None: the chain starts there)
    case_ids: list[int]  # edited so far, in order
    ledger: list[dict] = field(default_factory=list)  # per-edit rows since the last save
    norm_rows: list[dict] = field(default_factory=list)  # ||W_l||_F after each batch since the last save

    @property
    def layers(self) -> list[int]:
        return sorted(self.hparams.layers)

    @classmethod
    def open(
        cls,
        loaded: LoadedModel,
        hparams: Hyperparameters,
        execution: Execution,
        statistics: dict,
        seed: int,
        previous: Path | None = None,
    ) -> EditingSession:
        """Start from the unedited ``loaded`` model (torch.manual_seed(seed), then the context templates sampled
        from it) or continue from the snapshot ``previous`` (written into the model, its state rebuilt)."""
        layers = sorted(hparams.layers)
        editor = make_editor(hparams)
        model, tokenizer = loaded.model, loaded.tokenizer
        d_ff = read_weight(model, layers[0]).shape[1]
        solves_on = state_device(execution, d_ff, len(layers), editor.needs_projector)
        norm_rows = []
        if previous is None:
            torch.manual_seed(seed)
            templates = generate_context_templates(
                model, tokenizer, seed, hparams.context_seed_words, hparams.context_template_length
            )
            state = EditorState.initial(templates, layers, d_ff, device=solves_on)
            norm_rows += [
                {
                    "edits": 0,
                    "batch": 0,
                    "layer": layer,
                    "frobenius_norm": float(read_weight(model, layer).double().norm()),
                }
                for layer in layers
            ]
            case_ids = []
        else:
            snapshot = load_snapshot(
                previous, expected_model=loaded.identity, expected_layers=layers, state_device=solves_on
            )
            apply_snapshot(model, snapshot)
            state, case_ids = snapshot.state, list(snapshot.manifest["case_ids"])
        threshold = hparams.nullspace_threshold if editor.needs_projector else None
        covariances, projectors = load_covariances(statistics, layers, threshold, execution.device)
        if solves_on != "cpu":  # resident on the GPU in float64 for the whole session
            covariances = {layer: c.to(solves_on, torch.float64) for layer, c in covariances.items()}
            projectors = projectors and {layer: p.to(solves_on, torch.float64) for layer, p in projectors.items()}
        session = cls(loaded, hparams, editor, execution, solves_on, state, covariances, projectors, statistics,
                      Path(previous) if previous is not None else None, case_ids, norm_rows=norm_rows)  # fmt: skip
        return session

    def edit(self, batch: list[EditRecord]) -> dict:
        """Apply one batch of edits in place, then score the batch's own facts right after the update
        (post-update efficacy, encore.evaluation.efficacy); its ledger and norm rows are kept for the next ``save``."""
        first_position, batch_index = self.state.edits_done, self.state.batches_done
        result = edit_batch(
            self.loaded.model, self.loaded.tokenizer, batch, self.hparams, self.editor, self.state,
            self.covariances, self.projectors,
        )  # fmt: skip
        started = time.perf_counter()
        with precision_scope(self.execution.scoring):  # scored as the evaluations score (no RNG, weights untouched)
            efficacy = post_update_efficacy(self.loaded.model, self.loaded.tokenizer, batch)
        result["timings"]["efficacy_s"] = time.perf_counter() - started
        rows = ledger_rows(batch, result, batch_index, first_position)
        self.ledger += [{**row, **scores} for row, scores in zip(rows, efficacy)]
        self.norm_rows += [
            {"edits": self.state.edits_done, "batch": batch_index + 1, "layer": layer, "frobenius_norm": value}
            for layer, value in result["norms"].items()
        ]
        self.case_ids += [record.case_id for record in batch]
        return result

    def save(self, output: Path, manifest: dict, labels: dict, requests: list[EditRecord] | None = None) -> Path:
        """Write the snapshot of the current weights into ``output``: ledger.csv and norms.csv (rows since the last
        save, each prefixed with ``labels``), ``requests`` (if given) and, via save_snapshot, weights, this segment's
        keys and the manifest. The next save continues the chain from ``output``."""
        output = Path(output)
        if self.previous is not None and output.resolve() == self.previous.resolve():
            raise SnapshotError(f"{output}: holds the snapshot this one continues; save to a new directory")
        output.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{**labels, **row} for row in self.ledger]).to_csv(output / "ledger.csv", index=False)
        pd.DataFrame([{**labels, **row} for row in self.norm_rows]).to_csv(output / "norms.csv", index=False)
        extra = ["ledger.csv", "norms.csv"]
        if requests is not None:
            (output / REQUESTS).write_text(json.dumps([dataclasses.asdict(r) for r in requests]))
            extra.append(REQUESTS)
        path = save_snapshot(
            output, self.loaded.model, self.state, self.layers, manifest, extra_files=tuple(extra),
            previous=self.previous,
        )  # fmt: skip
        self.previous, self.ledger, self.norm_rows = output, [], []
        self.state.segment_keys = {}  # stored in this snapshot; the next one holds only its own batches' keys
        return path

    def manifest(self, *, experiment, model_name, method, variant, seed, batch_size, data) -> dict:
        """What a snapshot records besides its files (key order as the pipeline always wrote it)."""
        return {
            "experiment": experiment,
            "model": self.loaded.identity,
            "model_name": model_name,
            "method": method,
            "variant": variant,
            "hparams": self.hparams.as_dict(),
            "seed": seed,
            "batch_size": batch_size,
            "data": data,
            "case_ids": list(self.case_ids),
            "statistics": self.statistics["layers"],
            "execution": {**self.execution.describe(), "solves": self.solves_on},
            "code": code_version(),
        }


def read_requests(snapshot: Path) -> list[EditRecord] | None:
    """The requests an API snapshot stores (every one edited so far), or None for a pipeline snapshot."""
    path = Path(snapshot) / REQUESTS
    return [EditRecord(**record) for record in json.loads(path.read_text())] if path.exists() else None


@dataclass
class Evaluation:
    """The metric rows of one model state, the per-record and per-item frames behind them, the seconds of each
    part and the metrics the records could not support (name -> why)."""

    rows: list[dict]
    record_frames: list[pd.DataFrame]
    item_frames: list[pd.DataFrame]
    seconds: dict[str, float]
    skipped: dict[str, str]


def evaluate_model(
    model, tokenizer, *, dataset: str, records: list[EditRecord], unedited: bool, final: bool,
    evaluation: EvaluationSettings | dict, data_dir, resources: Path, seed: int,
) -> Evaluation:  # fmt: skip
    """Every metric of a model state (see encore.experiment.evaluate_snapshot for the ``evaluation`` keys): the
    unedited model scores the facts to be edited, an edited one those edited so far. ``evaluation``: an
    encore.settings.EvaluationSettings, or a dict of its keys (the schema's defaults fill the rest)."""
    from encore.evaluation import rows as ev

    settings = EvaluationSettings.of(evaluation)

    if dataset == "counterfact" and (missing := [r.case_id for r in records if r.target_true is None]):
        raise ValueError(
            f"record {missing[0]} has no target_true: CounterFact's metrics compare target_new with it; give "
            "target_true (or ground_truth) with every request to evaluate"
        )
    subset = "to-be-edited" if unedited else "edited-so-far"
    started = time.perf_counter()
    greedy, generation = settings.measured("generation_efficacy", final), settings.measured("generation", final)
    skipped = missing_metrics(records, dataset, generation=generation, generation_efficacy=greedy)
    for metric, why in skipped.items():
        log(f"evaluation: {metric} not measured: {why}")
    scored, scored_subset = records, subset
    if not unedited and not final and settings.edited_facts == "final":
        scored, scored_subset = ev.authors_subset_of(records), "authors-20pct"  # before the last snapshot
    # Each part: (name, compute, where its frame goes). compute() gives metric rows, or (rows, frame) when a
    # per-record ("records") or per-item ("items") frame stands behind them.
    parts: list[tuple[str, Callable[[], object], str | None]] = []
    scope = f"{len(scored)} {scored_subset} facts" + (" (+ the authors' 20% subset)" if not unedited and final else "")
    parts.append((f"editing metrics on {scope}",
                  lambda: ev.editing_results(model, tokenizer, dataset, scored, scored_subset, unedited=unedited,
                                             authors_subset=not unedited and final),
                  "records"))  # fmt: skip
    if greedy:  # ES_gen, PS_gen: greedy decoding of the same facts' rewrite and paraphrase prompts
        parts.append((f"generation efficacy (greedy decoding) on {len(scored)} {scored_subset} facts",
                      lambda: ev.generation_efficacy_results(model, tokenizer, dataset, scored, scored_subset),
                      "records"))  # fmt: skip
    if settings.perplexity_tokens:
        parts.append(("perplexity", lambda: ev.perplexity_rows(model, tokenizer, data_dir, resources / "data", settings),
                      None))  # fmt: skip
    if generation and dataset == "counterfact" and "GE" not in skipped:
        parts.append(("generation entropy",
                      lambda: ev.generation_results(model, tokenizer, records, subset, settings.generation_records, seed),
                      "records"))  # fmt: skip
    if settings.measured("downstream", final):
        parts.append(("downstream tasks", lambda: ev.downstream_results(model, tokenizer, data_dir, settings), "items"))
    if settings.measured("analysis", final):
        from encore.evaluation.analysis import analysis_rows

        prompts = [r.rewrite_prompt for r in records[: settings.analysis_records]]
        parts.append(("norm and activation analyses",
                      lambda: analysis_rows(model, tokenizer, prompts, f"{dataset}-{subset}-rewrite-prompts"), None))  # fmt: skip
    rows, seconds, frames = [], {}, {"records": [], "items": []}
    for number, (name, compute, frame_kind) in enumerate(parts, start=1):
        log(f"evaluation part {number}/{len(parts)}: {name}")
        part_started = time.perf_counter()
        result = compute()
        if frame_kind is not None:
            result, frame = result
            frames[frame_kind].append(frame)
        rows += result
        seconds[name] = round(time.perf_counter() - part_started, 2)
        log(f"evaluation part {number}/{len(parts)}: {name} done in {seconds[name]:.1f} s")
    rows.append({"metric": "evaluation_seconds", "value": time.perf_counter() - started, "protocol": protocols.TIMING})
    return Evaluation(rows, frames["records"], frames["items"], seconds, skipped)


def write_evaluation(
    result: Evaluation, output: Path | None, *, labels: dict, experiment: str, model_name: str, dataset: str,
    provenance: dict, records_output: Path | None = None, downstream_output: Path | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The metrics table (experiment, model, dataset, ``labels``, metric, value, protocol); with ``output`` also the
    evaluate rule's files: the table, ``.provenance.json`` (+ ``skipped_metrics``), the per-record scores
    (``.records.csv``) and the per-item downstream predictions (``.downstream.csv``)."""
    from encore.evaluation import rows as ev
    from encore.evaluation.downstream import ITEM_COLUMNS

    columns = dict(experiment=experiment, model=model_name, dataset=dataset, **labels)
    table = ev.to_frame(result.rows, **columns)
    if output is None:
        return table
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    provenance = {**provenance, "seconds": result.seconds, "code": code_version()}
    if result.skipped:
        provenance["skipped_metrics"] = result.skipped
    Path(output).with_suffix(".provenance.json").write_text(json.dumps(provenance, indent=1))
    records_table = ev.to_frame(pd.concat(result.record_frames, ignore_index=True), **columns)
    ev.write_records(records_table, records_output or ev.records_path(output))
    frames = result.item_frames
    items = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ITEM_COLUMNS)
    ev.to_frame(items, **columns).to_csv(downstream_output or ev.downstream_records_path(output), index=False)
    table.to_csv(output, index=False)
    return table
