"""Settings as types: the config's ``evaluation`` object as a frozen dataclass, ``EvaluationSettings``, and what every
job of an experiment shares, ``RunSettings``.

The defaults live in one place, the config schema (encore/schemas/config.schema.yaml, its ``evaluation``
object): ``EvaluationSettings.from_dict`` fills every key a dict leaves out from there, checks the values against
the same schema and names an unknown key in a one-line error. The pipeline (encore.experiment.evaluate_snapshot),
the evaluation (encore.session.evaluate_model, encore.evaluation.rows) and the API (encore.api: its own explicit
values over the schema's) all read one such object, so one request measures the same metrics everywhere. (The
demo's config.yaml sets smaller sizes than the schema's defaults, for minutes on a laptop: a config's values win.)

``RunSettings`` (experiment, model, data, resources, edit count, seed) travels from the config to the edit and
evaluate stages as one object; the rules pass its fields as separate builtin params, because Snakemake's rerun
triggers compare params by ``repr`` of builtins only (an object would hide a change), and read it back with
``RunSettings.from_params``. Where and in which precision a job runs is typed already: encore.models.device.Execution (resolve_execution).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

CONFIG_SCHEMA = Path(__file__).with_name("schemas") / "config.schema.yaml"  # package data: ships in the wheel


@functools.cache
def evaluation_schema() -> dict:
    """The config schema's ``evaluation`` object (its properties carry the defaults)."""
    return yaml.safe_load(CONFIG_SCHEMA.read_text())["properties"]["evaluation"]


@functools.cache
def _validator():
    import jsonschema

    schema = evaluation_schema()
    return jsonschema.Draft202012Validator({**schema, "additionalProperties": False})


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation measures (the config's ``evaluation`` keys; docs in the config schema). No defaults here:
    ``from_dict`` takes them from the schema."""

    edited_facts: str  # all | final
    generation: str  # none | final | all
    generation_records: int | None
    generation_efficacy: str  # none | final | all
    downstream: str  # none | final | all
    downstream_tasks: tuple[str, ...]
    downstream_tests: int | None
    downstream_shots: int
    analysis: str  # none | final | all
    analysis_records: int
    perplexity_tokens: int
    perplexity_window: int

    @classmethod
    def from_dict(cls, values: dict | None = None) -> EvaluationSettings:
        """``values`` (the config's ``evaluation`` dict, complete after validation, or any part of it) over the
        schema's defaults; an unknown key or a value the schema rejects is a one-line ValueError naming the key."""
        values = dict(values or {})
        names = [field.name for field in fields(cls)]
        for key in values:
            if key not in names:
                raise ValueError(f"evaluation: unknown key {key!r}; known keys: {', '.join(sorted(names))}")
        properties = evaluation_schema()["properties"]
        merged = {name: values[name] if name in values else properties[name]["default"] for name in names}
        plain = {**merged, "downstream_tasks": list(merged["downstream_tasks"] or [])}
        for error in _validator().iter_errors(plain):
            key = ".".join(str(part) for part in error.absolute_path) or "?"
            raise ValueError(f"evaluation.{key}: {error.message}")
        return cls(**{**merged, "downstream_tasks": tuple(merged["downstream_tasks"] or ())})

    @classmethod
    def of(cls, value: EvaluationSettings | dict | None) -> EvaluationSettings:
        """``value`` itself when typed already, else ``from_dict(value)``: the conversion at a boundary."""
        return value if isinstance(value, cls) else cls.from_dict(value)

    def measured(self, part: str, final: bool) -> bool:
        """Whether ``part`` (generation, generation_efficacy, downstream, analysis) is measured at this snapshot;
        ``final``: the last snapshot of a run or the unedited model."""
        return {"all": True, "final": final, "none": False}[getattr(self, part)]

    def as_dict(self) -> dict:
        """The config's form (lists, not tuples), e.g. for a provenance record."""
        return {**asdict(self), "downstream_tasks": list(self.downstream_tasks)}


@dataclass(frozen=True)
class RunSettings:
    """What every edit and evaluate job of one experiment shares (the config's top-level keys of those names)."""

    experiment: str
    model: str  # packaged name, hub id or local directory
    dataset: str  # counterfact | zsre
    data_dir: str | None  # local copy of the data sets (None: $ENCORE_DATA_DIR, else download)
    records_files: tuple[str, ...] | None  # JSON records files replacing the dataset's
    resources: Path  # caches: models, data downloads, statistics
    num_edits: int
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> RunSettings:
        """From the validated config (the Snakefile's ``config``)."""
        return cls.from_params({name: config[name] for name in RUN_KEYS if name in config})

    @classmethod
    def from_params(cls, params) -> RunSettings:
        """From a mapping or a rule's ``snakemake.params`` holding the fields by name (``RUN_KEYS``)."""
        get = params.get if isinstance(params, dict) else lambda name: getattr(params, name)
        files = get("records_files")
        return cls(
            experiment=get("experiment"), model=get("model"), dataset=get("dataset"), data_dir=get("data_dir"),
            records_files=None if files is None else tuple(files), resources=Path(get("resources")),
            num_edits=int(get("num_edits")), seed=int(get("seed")),
        )  # fmt: skip

    def as_params(self) -> dict:
        """The rules' params: builtins, as the config has them (so earlier results keep their params)."""
        values = {**asdict(self), "resources": str(self.resources)}
        values["records_files"] = None if self.records_files is None else list(self.records_files)
        return values


RUN_KEYS = tuple(field.name for field in fields(RunSettings))
