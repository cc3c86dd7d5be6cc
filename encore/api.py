"""The library API: sequential editing (MEMIT, EMMET, AlphaEdit, ENCORE, ...) from Python, on the pipeline's code.

    from encore.api import load_editor
    editor = load_editor("smollm2-135m", "memit", "mpes_nc")     # ENCORE = MEMIT's mpes_nc variant
    ledger = editor.edit([{"prompt": "{} plays the", "subject": "Toko Yasuda", "target_new": "piano"}])
    editor.save("snapshots/edits_00001")                           # the pipeline's snapshot format
    metrics = editor.evaluate()                                    # the pipeline's metric rows

Editing, snapshots and metrics are encore.session's, the same functions the pipeline's rules run
(encore.experiment), so an API run and a pipeline run on the same requests give bitwise the same weights and the
same ledger and metric rows. docs/api.md: a worked example and the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from encore import experiment as stages
from encore.data.datasets import EditRecord, RecordLocation
from encore.data.record_formats import parse_record
from encore.data.requests import load_requests as load_ordered_requests
from encore.editing.hparams import Hyperparameters, hparams_file
from encore.editing.statistics import statistics_manifest
from encore.models.loading import load_for_execution
from encore.models.precision import precision_scope
from encore.session import EditingSession, evaluate_model, read_requests, write_evaluation
from encore.settings import EvaluationSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"model": "smollm2-135m", "method": "memit", "variant": "plain"}
# Where the API's evaluation deliberately differs from the config schema's defaults (encore.settings): editing
# metrics only (ES, PS, NS, S; ES_gen, PS_gen at the final snapshot as in the schema); every other key is the
# schema's, and any key of the config's ``evaluation`` adds more (generation, downstream, analysis, perplexity)
API_EVALUATION = {"generation": "none", "downstream": "none", "analysis": "none", "perplexity_tokens": 0}


def load_requests(
    dataset: str = "counterfact", n: int | None = None, order_sample: str = "0", *, data_dir=None,
    resources="resources", records_files: list | None = None,
) -> list[EditRecord]:  # fmt: skip
    """The pipeline's edit requests: the first ``n`` of the authors' ordering ``order_sample`` (see
    encore.data.requests.load_requests for ``records_files``, e.g. EasyEdit's CounterFact files)."""
    records, _ = load_ordered_requests(dataset, data_dir, Path(resources) / "data", order_sample, n, records_files)
    return records


def as_records(requests, dataset: str, first_position: int, edited: dict[int, int]) -> list[EditRecord]:
    """Requests (dicts in any schema of encore.data.record_formats, or EditRecords) as checked EditRecords; one without a
    case_id gets the next free one (1 + the largest so far, 0 first). ``edited``: case id -> position in the edit
    stream of the requests edited so far."""
    if isinstance(requests, (dict, EditRecord)):
        requests = [requests]
    records, seen = [], dict(edited)
    for index, item in enumerate(requests):
        position, free_id = first_position + index, max(seen, default=-1) + 1
        case_id = item.get("case_id", free_id) if isinstance(item, dict) else getattr(item, "case_id", "?")
        where = RecordLocation("requests", index, case_id)
        if isinstance(item, EditRecord):
            if not item.subject or item.prompt.count("{}") != 1:
                raise where.error(f"needs a subject and a prompt with exactly one '{{}}': {item.prompt!r}")
            if not isinstance(item.target_new, str) or not item.target_new:
                raise where.error("target_new must be a non-empty str")
            record = item
        elif isinstance(item, dict):
            record = parse_record(item, where, free_id, dataset, require_true=False)
        else:
            raise where.error(f"expected a dict or an EditRecord, got {type(item).__name__}")
        if record.case_id in seen:
            raise where.error(
                f"case_id {record.case_id} repeats the request at position {seen[record.case_id]}; give every "
                "request its own case_id"
            )
        seen[record.case_id] = position
        records.append(record)
    return records


class EditingRun:
    """A model under sequential editing. ``model`` / ``tokenizer`` are the transformers objects being edited (the
    tokenizer pads on the right); ``requests`` are the requests edited so far (None where a pipeline snapshot did not
    store them). Build one with ``load_editor`` or ``EditingRun.from_snapshot``. (Not an editor of
    encore.editing.editors, the per-layer update rule it runs: ``run.session.editor``.)"""

    def __init__(self, session: EditingSession, *, model_name: str, method: str, variant: str, dataset: str,
                 seed: int, data_dir, resources: Path, experiment: str, order: str,
                 requests: list[EditRecord] | None) -> None:  # fmt: skip
        self.session, self.model_name, self.method, self.variant = session, model_name, method, variant
        self.dataset, self.seed, self.data_dir, self.resources = dataset, seed, data_dir, Path(resources)
        self.experiment, self.order, self.batch_size = experiment, order, None
        self._requests = requests

    @property
    def model(self):
        return self.session.loaded.model

    @property
    def tokenizer(self):
        return self.session.loaded.tokenizer

    @property
    def hparams(self) -> Hyperparameters:
        return self.session.hparams

    @property
    def edits_done(self) -> int:
        return self.session.state.edits_done

    @property
    def requests(self) -> list[EditRecord] | None:
        return None if self._requests is None else list(self._requests)

    def edit(self, requests: Iterable | dict | EditRecord, batch_size: int = 100) -> pd.DataFrame:
        """Edit ``requests`` in batches of ``batch_size``, continuing from the edits before (a batch never spans two
        calls); the ledger rows of these edits (the columns of the pipeline's ledger.csv)."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
        edited = {case_id: position for position, case_id in enumerate(self.session.case_ids)}
        records = as_records(requests, self.dataset, self.edits_done, edited)
        first_row = len(self.session.ledger)
        self.batch_size = batch_size
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            self.session.edit(batch)
            if self._requests is not None:
                self._requests += batch
        labels = {"method": self.method, "variant": self.variant, "order": self.order}
        return pd.DataFrame([{**labels, **row} for row in self.session.ledger[first_row:]])

    def save(self, directory) -> Path:
        """Write a snapshot of the edits so far into ``directory`` (a new one) in the pipeline's format, with the
        requests (requests.json) so that encore.experiment.evaluate_snapshot can score it; returns its manifest."""
        data = {"dataset": self.dataset, "source": "api", "order_file": {"sample": self.order}}
        manifest = self.session.manifest(experiment=self.experiment, model_name=self.model_name, method=self.method,
                                         variant=self.variant, seed=self.seed, batch_size=self.batch_size,
                                         data=data)  # fmt: skip
        labels = {"method": self.method, "variant": self.variant, "order": self.order}
        return self.session.save(Path(directory), manifest, labels, self._requests)

    def evaluate(
        self, records=None, *, evaluation: EvaluationSettings | dict | None = None, final: bool = True, output=None
    ):
        """The pipeline's metric rows (experiment, model, dataset, method, variant, order, edits, metric, value,
        protocol) of the model as it is: ``records`` (default: the requests edited so far; before any edit they are
        required: the unedited model scores the facts to be edited). ``evaluation``: the config's evaluation keys
        over API_EVALUATION (editing metrics only) over the config schema's defaults, or an
        encore.settings.EvaluationSettings (taken as it is, as the pipeline takes it); ``final``: score as the last
        snapshot of a run (adds the authors' 20% subset); ``output``: also write the evaluate rule's files there
        (metrics CSV and beside it)."""
        unedited = self.edits_done == 0
        if records is None:
            if unedited or self._requests is None:
                why = "nothing is edited yet" if unedited else "the snapshot did not store its requests"
                raise ValueError(f"records: {why}; pass the records to score")
            records = self._requests
        records = list(records)
        if not all(isinstance(record, EditRecord) for record in records):
            records = as_records(records, self.dataset, 0, {})
        if not isinstance(evaluation, EvaluationSettings):
            evaluation = {**API_EVALUATION, **(evaluation or {})}
        settings = EvaluationSettings.of(evaluation)
        with precision_scope(self.session.execution.scoring):  # as the pipeline's evaluate jobs score
            result = evaluate_model(self.model, self.tokenizer, dataset=self.dataset, records=records,
                                    unedited=unedited, final=final, evaluation=settings, data_dir=self.data_dir,
                                    resources=self.resources, seed=self.seed)  # fmt: skip
        if unedited:
            labels = {"method": "unedited", "variant": "unedited", "order": self.order, "edits": 0}
        else:
            labels = {"method": self.method, "variant": self.variant, "order": self.order, "edits": self.edits_done}
        provenance = {"snapshot": str(self.session.previous) if self.session.previous else None,
                      "model": self.session.loaded.identity, "execution": self.session.execution.describe(),
                      "evaluation": settings.as_dict(), "api": True}  # fmt: skip
        return write_evaluation(result, output, labels=labels, experiment=self.experiment,
                                model_name=self.model_name, dataset=self.dataset, provenance=provenance)  # fmt: skip

    @classmethod
    def from_snapshot(cls, directory, *, resources="resources", data_dir=None, device="auto", dtype="float32",
                      tf32: bool = False, execution: dict | None = None, experiment: str | None = None) -> EditingRun:  # fmt: skip
        """Continue from a snapshot written by ``save`` or by the pipeline's edit rule: the model, method, variant,
        hyperparameters, seed and order it records; the statistics must be those it was edited with."""
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise ValueError(f"snapshot: {manifest_path} not found; give a directory written by save or the edit rule")
        manifest = json.loads(manifest_path.read_text())
        hparams = Hyperparameters.from_dict(manifest["hparams"], origin=str(manifest_path))
        resources = Path(resources)
        execution = {"device": device, "dtype": dtype, "tf32": tf32, **(execution or {})}
        loaded, resolved = load_for_execution(manifest["model_name"], resources / "models", execution)
        statistics = statistics_manifest(loaded, sorted(hparams.layers), hparams, data_dir, resources, resolved)
        keys = {layer: entry["key"] for layer, entry in statistics["layers"].items()}
        if keys != {layer: entry["key"] for layer, entry in manifest["statistics"].items()}:
            raise ValueError(
                f"{manifest_path}: edited with other covariance statistics (corpus or model differ); "
                "give the data_dir it was edited with"
            )
        session = EditingSession.open(loaded, hparams, resolved, statistics, manifest["seed"], previous=directory)
        run = cls(session, model_name=manifest["model_name"], method=manifest["method"],
                     variant=manifest["variant"], dataset=manifest["data"].get("dataset") or "counterfact",
                     seed=manifest["seed"], data_dir=data_dir, resources=resources,
                     experiment=experiment or manifest["experiment"], order=manifest["data"]["order_file"]["sample"],
                     requests=read_requests(directory))  # fmt: skip
        run.batch_size = manifest["batch_size"]
        return run


def load_editor(
    model: str | None = None, method: str | None = None, variant: str | None = None, *, dataset: str = "counterfact",
    hparams: str | Path | Hyperparameters | None = None, overrides: dict | None = None, hparams_dir=None,
    resources="resources", data_dir=None, device: str = "auto", dtype: str = "float32", tf32: bool = False,
    execution: dict | None = None, seed: int = 0, snapshot=None, experiment: str | None = None, order: str = "api",
) -> EditingRun:  # fmt: skip
    """A model ready for sequential editing, as the pipeline's first edit segment sets it up.

    model: packaged name, hub id or local directory (default smollm2-135m); method: an editor with a hyperparameter
    folder (default memit); variant: plain or a variant of its hyperparameter file (ENCORE = memit mpes_nc);
    dataset: counterfact | zsre (the metrics evaluate computes, and hparams/<METHOD>/<model>.<dataset>.yaml when it
    exists); hparams: a file or Hyperparameters instead of hparams_dir's (default: this checkout's hparams/);
    overrides: hyperparameter values to change (e.g. {"v_num_grad_steps": 5}); resources: the pipeline's cache
    folder (models, statistics: C0 is read from its content-addressed cache, computed with progress when missing);
    data_dir: the data sets (default ENCORE_DATA_DIR, else downloads); device/dtype/tf32/execution: where and in
    which precision (encore.models.device); seed: context templates and target optimisation; snapshot: continue
    from a snapshot instead (EditingRun.from_snapshot; model, method and variant must then match it); experiment
    (default "api", or the snapshot's) and order (default "api"): labels of the ledger, snapshots and metric rows."""
    if snapshot is not None:
        if hparams is not None or overrides:
            raise ValueError("hparams/overrides: a snapshot continues with the hyperparameters it records")
        run = EditingRun.from_snapshot(snapshot, resources=resources, data_dir=data_dir, device=device, dtype=dtype,
                                      tf32=tf32, execution=execution, experiment=experiment)  # fmt: skip
        for name, given in (("model", model), ("method", method), ("variant", variant)):
            recorded = getattr(run, "model_name" if name == "model" else name)
            if given is not None and given != recorded:
                raise ValueError(f"{name}: {given!r} given, but snapshot {snapshot} is of {recorded!r}")
        return run
    model, method, variant = model or DEFAULTS["model"], method or DEFAULTS["method"], variant or DEFAULTS["variant"]
    hparams_dir = Path(hparams_dir) if hparams_dir is not None else REPO / "hparams"
    if dataset not in ("counterfact", "zsre"):
        raise ValueError(f"dataset: {dataset!r} is not one of counterfact, zsre")
    if hparams is None:
        stages.check_methods([method], hparams_dir)  # the pipeline's one-line error for an unknown method
    if not isinstance(hparams, Hyperparameters):
        path = Path(hparams) if hparams is not None else hparams_file(hparams_dir, method, model, dataset)
        hparams = Hyperparameters.from_yaml(path, variant)
    if overrides:
        hparams = hparams.with_overrides(**overrides)
    resources = Path(resources)
    execution = {"device": device, "dtype": dtype, "tf32": tf32, **(execution or {})}
    loaded, resolved = load_for_execution(model, resources / "models", execution)
    statistics = statistics_manifest(loaded, sorted(hparams.layers), hparams, data_dir, resources, resolved)
    session = EditingSession.open(loaded, hparams, resolved, statistics, seed)
    return EditingRun(session, model_name=model, method=method, variant=variant, dataset=dataset, seed=seed,
                  data_dir=data_dir, resources=resources, experiment=experiment or "api", order=order, requests=[])  # fmt: skip


def __getattr__(name: str):
    if name == "Editor":  # the name until issue 28 (two classes were called Editor)
        import warnings

        warnings.warn("encore.api.Editor is now encore.api.EditingRun", DeprecationWarning, stacklevel=2)
        return EditingRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
