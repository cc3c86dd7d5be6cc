"""Hyperparameter files: every shipped file and variant validates; bad input names the key."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from encore.editing.hparams import Hyperparameters

FILES = sorted((REPO / "hparams").glob("*/*.yaml"))


def variants_of(path: Path) -> list[str]:
    values = yaml.safe_load(path.read_text())
    if "inherit" in values and "variants" not in values:
        values = yaml.safe_load((path.parent / values["inherit"]).read_text())
    return ["plain", *(values.get("variants") or {})]


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_every_shipped_file_and_variant_validates(path):
    for variant in variants_of(path):
        hparams = Hyperparameters.from_yaml(path, variant)
        assert hparams.editor == path.parent.name.lower()
        assert hparams.layers == sorted(hparams.layers)


def test_paper_encore_values_are_what_tables_8_and_11_say():
    encore_cf = Hyperparameters.from_yaml(REPO / "hparams/MEMIT/Meta-Llama-3-8B.yaml", "mpes_nc")
    assert (encore_cf.mom2_update_weight, encore_cf.norm_lambda, encore_cf.mpes) == (15000, 20, 1)
    encore_zsre = Hyperparameters.from_yaml(REPO / "hparams/MEMIT/gpt2-xl.zsre.yaml", "mpes_nc")
    assert (encore_zsre.mom2_update_weight, encore_zsre.norm_lambda, encore_zsre.mpes) == (20000, 40, 4)
    assert encore_zsre.layers == [13, 14, 15, 16, 17]  # inherited


def test_unknown_or_mistyped_key_is_named(tmp_path):
    base = yaml.safe_load((REPO / "hparams/MEMIT/gpt2-xl.yaml").read_text())
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**base, "v_lrr": 0.5}))
    with pytest.raises(ValueError, match="v_lrr"):
        Hyperparameters.from_yaml(tmp_path / "typo.yaml")
    (tmp_path / "type.yaml").write_text(yaml.safe_dump({**base, "v_num_grad_steps": "many"}))
    with pytest.raises(ValueError, match="v_num_grad_steps"):
        Hyperparameters.from_yaml(tmp_path / "type.yaml")
    with pytest.raises(ValueError, match="no variant 'nope'"):
        Hyperparameters.from_yaml(REPO / "hparams/MEMIT/gpt2-xl.yaml", "nope")


def test_the_schema_editor_enum_is_the_editor_registry():
    from encore.editing.editors import EDITORS
    from encore.editing.hparams import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["properties"]["editor"]["enum"] == list(EDITORS)


def test_hparams_file_prefers_the_dataset_file_and_names_the_file_to_create(tmp_path):
    from encore.editing.hparams import hparams_file

    folder = tmp_path / "MEMIT"
    folder.mkdir()
    (folder / "tiny.yaml").write_text("{}")
    assert hparams_file(tmp_path, "memit", "models/tiny", "zsre") == folder / "tiny.yaml"
    (folder / "tiny.zsre.yaml").write_text("{}")
    assert hparams_file(tmp_path, "memit", "models/tiny", "zsre") == folder / "tiny.zsre.yaml"
    assert hparams_file(tmp_path, "memit", "tiny", "counterfact") == hparams_file(tmp_path, "memit", "tiny")
    with pytest.raises(ValueError, match=r"no hyperparameters for 'emmet' on 'tiny': create .*EMMET/tiny\.yaml$"):
        hparams_file(tmp_path, "emmet", "tiny", "zsre")


def test_the_schema_defaults_are_the_dataclass_defaults_and_every_copy_of_them_agrees():
    """The defaults are written in the schema (its documentation) and the Hyperparameters dataclass (the code's); the
    targets' settings and the editors' constructors repeat some of them. A change to one must change them all."""
    import dataclasses
    import inspect

    from encore.editing import editors
    from encore.editing.targets import TargetSettings

    schema = yaml.safe_load((REPO / "encore/schemas/hparams.schema.yaml").read_text())["properties"]
    fields = {f.name: f for f in dataclasses.fields(Hyperparameters)}
    assert set(schema) - {"variants"} == set(fields)

    def default(field):
        if field.default is not dataclasses.MISSING:
            return field.default
        return field.default_factory() if field.default_factory is not dataclasses.MISSING else None

    defaults = {name: default(f) for name, f in fields.items() if default(f) is not None or name == "mpes"}
    assert {name: schema[name]["default"] for name in defaults if name != "source"} == {
        name: value for name, value in defaults.items() if name != "source"
    }
    target_defaults = {f.name: f.default for f in dataclasses.fields(TargetSettings)}
    for ours, theirs in [("weight_decay", "v_weight_decay"), ("clamp_norm_factor", "clamp_norm_factor"),
                         ("kl_factor", "kl_factor"), ("loss_stop", "loss_stop"), ("mpes", "mpes"),
                         ("mpes_rule", "mpes_rule"), ("prefix_reuse", "prefix_reuse")]:  # fmt: skip
        assert target_defaults[ours] == defaults[theirs], ours
    for editor, parameter, key in [(editors.EMMET, "emmet_lambda", "emmet_lambda"),
                                   (editors.AlphaEdit, "alpha", "alphaedit_l2"),
                                   (editors.AlphaEdit, "nullspace_threshold", "nullspace_threshold"),
                                   (editors.MEMITRect, "fraction", "rect_fraction"),
                                   (editors.MEMITPrune, "log_base", "prune_log_base"),
                                   (editors.MEMIT, "norm_lambda", "norm_lambda")]:  # fmt: skip
        assert inspect.signature(editor.__init__).parameters[parameter].default == defaults[key], (editor, parameter)
