"""Settings as types: the config's ``evaluation`` object as a frozen dataclass, ``EvaluationSettings``.

The defaults live in one place, the config schema (workflow/schemas/config.schema.yaml, its ``evaluation``
object): ``EvaluationSettings.from_dict`` fills every key a dict leaves out from there, checks the values against
the same schema and names an unknown key in a one-line error. The pipeline (encore.experiment.evaluate_snapshot),
the evaluation (encore.session.evaluate_model, encore.evaluation.rows) and the API (encore.api: its own explicit
values over the schema's) all read one such object, so one request measures the same metrics everywhere.

Where and in which precision a job runs is typed already: encore.models.device.Execution (resolve_execution).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def evaluation_schema() -> dict:
    """The config schema's ``evaluation`` object (its properties carry the defaults)."""
    if not CONFIG_SCHEMA.is_file():
        raise ValueError(
            f"evaluation: the config schema {CONFIG_SCHEMA} (where the evaluation defaults live) is not found; "
            "use encore from its repository (pip install -e .)"
        )
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
