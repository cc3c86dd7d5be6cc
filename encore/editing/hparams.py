"""Hyperparameters of one editing method on one model, loaded from hparams/<METHOD>/<model>[.<dataset>].yaml
(``hparams_file``: the one place that says which file a run reads).

A file holds the base values of the method (or ``inherit: <other file>`` and changes) plus named ``variants`` (e.g. ``mpes``, ``nc``, ``mpes_nc``)
that override some of them; ``plain`` is the base itself. ENCORE = MEMIT's ``mpes_nc`` variant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jsonschema
import yaml

from encore.editing.targets import TargetSettings

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "hparams.schema.yaml"


def hparams_folder(hparams_dir, method: str) -> Path:
    """<hparams_dir>/<METHOD>/: the folder of a method's hyperparameter files (the method's name in upper case)."""
    return Path(hparams_dir) / method.upper()


def hparams_file(hparams_dir, method: str, model: str, dataset: str | None = None) -> Path:
    """The file a run of ``method`` on ``model`` (a name, hub id or directory: its last component) reads:
    <METHOD>/<model>.<dataset>.yaml if present, else <METHOD>/<model>.yaml; else a one-line error naming the file to
    create. Used by the pipeline's rules, the API, the plan and the benchmark."""
    folder, name = hparams_folder(hparams_dir, method), Path(model).name
    for path in ([folder / f"{name}.{dataset}.yaml"] if dataset else []) + [folder / f"{name}.yaml"]:
        if path.exists():
            return path
    raise ValueError(f"methods: no hyperparameters for {method!r} on {model!r}: create {folder / (name + '.yaml')}")


@dataclass(frozen=True)
class Hyperparameters:
    editor: str
    layers: list[int]
    v_num_grad_steps: int
    v_lr: float
    mom2_update_weight: float
    mom2_n_samples: int
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    loss_stop: float = 0.05
    mom2_max_length: int = 1024
    mom2_dtype: str = "float32"
    norm_lambda: float = 0.0
    emmet_lambda: float = 0.1
    nullspace_threshold: float = 0.02
    alphaedit_l2: float = 10.0
    rect_fraction: float = 0.4  # MEMIT+RECT: share of each update's entries kept (ENCORE v2 memit_rect_main.py: 40%)
    prune_log_base: float = math.e  # MEMIT+PRUNE: base alpha of F(s) = log_a(s) - log_a(b) + b (ENCORE v2: natural log)
    mpes: int | None = None
    mpes_rule: str = "all"
    context_template_length: int = 10
    context_seed_words: list[str] = field(default_factory=lambda: ["The", "Therefore", "Because", "I", "You"])
    prefix_reuse: bool = True  # execution choice, not a hyperparameter of the method: the result is the same
    source: str = ""

    @classmethod
    def from_dict(cls, values: dict, origin: str = "hyperparameters") -> Hyperparameters:
        schema = yaml.safe_load(SCHEMA_PATH.read_text())
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(values), key=lambda e: list(e.path))
        if errors:
            error = errors[0]
            where = ".".join(str(p) for p in error.path) or "(top level)"
            raise ValueError(f"{origin}: {where}: {error.message}")
        return cls(**{k: v for k, v in values.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, variant: str = "plain") -> Hyperparameters:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if "inherit" in values:  # e.g. a dataset-specific file that only changes the variants
            parent = yaml.safe_load((Path(path).parent / values.pop("inherit")).read_text()) or {}
            values = {**parent, **values}
        variants = values.pop("variants", {}) or {}
        if variant != "plain":
            if variant not in variants:
                known = ", ".join(["plain", *variants])
                raise ValueError(f"{path}: no variant {variant!r} (defined: {known}); add it under 'variants:'")
            values = {**values, **variants[variant]}
        return cls.from_dict(values, origin=f"{path} (variant {variant})")

    def with_overrides(self, **overrides) -> Hyperparameters:
        return Hyperparameters.from_dict({**asdict(self), **overrides}, origin="overrides")

    def target_settings(self) -> TargetSettings:
        return TargetSettings(
            layer=max(self.layers),
            steps=self.v_num_grad_steps,
            lr=self.v_lr,
            weight_decay=self.v_weight_decay,
            clamp_norm_factor=self.clamp_norm_factor,
            kl_factor=self.kl_factor,
            loss_stop=self.loss_stop,
            mpes=self.mpes,
            mpes_rule=self.mpes_rule,
            prefix_reuse=self.prefix_reuse,
        )

    def as_dict(self) -> dict:
        return asdict(self)
