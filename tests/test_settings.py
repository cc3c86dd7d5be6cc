"""encore.settings: the evaluation settings as a frozen dataclass whose defaults are the config schema's (one place),
the pipeline's validated config passing through unchanged, one-line errors naming the key, and one request
measuring the same rows through the API and the pipeline's evaluate_snapshot."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import tiny_editor, tiny_run

from encore import api, experiment
from encore.settings import CONFIG_SCHEMA, RUN_KEYS, EvaluationSettings, RunSettings

REPO = Path(__file__).resolve().parents[1]


def schema_evaluation() -> dict:
    return yaml.safe_load(CONFIG_SCHEMA.read_text())["properties"]["evaluation"]


def test_the_schema_is_the_workflows_config_schema():
    """The defaults the settings read are the file the Snakefile validates the config against (package data)."""
    rules = REPO / "workflow" / "rules"
    validated_against = re.search(r'validate\(config, schema="([^"]+)"\)', (rules / "common.smk").read_text())
    assert (rules / validated_against.group(1)).resolve() == CONFIG_SCHEMA.resolve()
    assert CONFIG_SCHEMA.is_relative_to(REPO / "encore")  # inside the package, so a wheel ships it


def test_every_schema_property_is_a_field_with_the_schemas_default_and_vice_versa():
    properties = schema_evaluation()["properties"]
    names = [field.name for field in dataclasses.fields(EvaluationSettings)]
    assert sorted(names) == sorted(properties)
    assert all(field.default is dataclasses.MISSING for field in dataclasses.fields(EvaluationSettings))  # no copy
    defaults = EvaluationSettings.from_dict({})
    for name in names:
        assert "default" in properties[name], name
        assert getattr(defaults, name) == (
            tuple(properties[name]["default"]) if name == "downstream_tasks" else properties[name]["default"]
        ), name
    assert defaults.as_dict() == {name: properties[name]["default"] for name in names}


def validated(config: dict) -> dict:
    from snakemake.utils import validate

    validate(config, str(CONFIG_SCHEMA))  # fills the schema's defaults in place, as the workflow's validate
    return config


def test_run_settings_reach_the_rules_as_the_configs_own_values_and_come_back_equal():
    """The rules' params are the config's values themselves (Snakemake compares params by repr, so a changed value
    reruns its jobs and results made before RunSettings keep their params); the script rebuilds the same object."""
    config = validated({**yaml.safe_load((REPO / "config.yaml").read_text()), "records_files": ["a.json"]})
    run = RunSettings.from_config(config)
    params = run.as_params()
    assert set(params) == set(RUN_KEYS) and all(repr(params[key]) == repr(config[key]) for key in RUN_KEYS)
    assert RunSettings.from_params(params) == run and run.records_files == ("a.json",)
    assert RunSettings.from_params({**params, "num_edits": 51}) != run


def test_the_validated_config_passes_through_unchanged_and_partial_ones_get_the_same_defaults():
    config = validated(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert EvaluationSettings.from_dict(config["evaluation"]).as_dict() == config["evaluation"]
    for partial in ({}, {"generation": "all", "perplexity_tokens": 0}, {"downstream_tasks": ["sst2"]}):
        demo = validated({**yaml.safe_load((REPO / "config.yaml").read_text()), "evaluation": dict(partial)})
        assert EvaluationSettings.from_dict(partial).as_dict() == demo["evaluation"], partial


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"perplexity": 10}, r"^evaluation: unknown key 'perplexity'; known keys: analysis, "),
        ({"generation": "last"}, r"^evaluation\.generation: 'last' is not one of \['none', 'final', 'all'\]$"),
        ({"generation_records": 0}, r"^evaluation\.generation_records: 0 is less than the minimum of 1$"),
        ({"downstream_tasks": ["sst2", "boolq"]}, r"^evaluation\.downstream_tasks\.1: 'boolq' is not one of "),
    ],
)
def test_unknown_keys_and_bad_values_are_one_line_errors_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message) as error:
        EvaluationSettings.from_dict(values)
    assert "\n" not in str(error.value)


def test_settings_are_frozen_and_typed_at_the_boundary():
    settings = EvaluationSettings.from_dict({"analysis": "final", "downstream_tasks": ["mmlu"]})
    assert EvaluationSettings.of(settings) is settings
    assert (
        EvaluationSettings.of(settings.as_dict())
        == settings
        == EvaluationSettings.of({"analysis": "final", "downstream_tasks": ("mmlu",)})
    )
    assert EvaluationSettings.of(None) == EvaluationSettings.from_dict({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.analysis = "all"  # type: ignore[misc]
    assert [settings.measured("analysis", final) for final in (False, True)] == [False, True]
    assert [settings.measured("generation_efficacy", final) for final in (False, True)] == [False, True]
    assert not EvaluationSettings.from_dict(api.API_EVALUATION).measured("generation", True)


def test_the_apis_defaults_are_the_schemas_except_its_editing_metrics_only_keys():
    ours, schema = (EvaluationSettings.from_dict(values).as_dict() for values in (api.API_EVALUATION, {}))
    differs = {key for key, value in ours.items() if value != schema[key]}
    assert differs == set(api.API_EVALUATION) == {"generation", "downstream", "analysis", "perplexity_tokens"}
    assert ours["generation_efficacy"] == "final" and ours["edited_facts"] == "all"  # ES_gen, PS_gen stay measured


def test_one_request_measures_the_same_rows_through_the_api_and_the_pipeline(tiny_setup, tmp_path):
    editor = tiny_editor(tiny_setup)
    editor.edit(tiny_setup["records"][:4], batch_size=2)
    editor.save(tmp_path / "edits_00004")
    # editing metrics, ES_gen/PS_gen, generation entropy on 2 records, the analyses on 3 prompts; no data-file parts
    request = {"generation": "final", "generation_records": 2, "analysis": "final", "analysis_records": 3,
               "downstream": "none", "perplexity_tokens": 0}  # fmt: skip
    settings = EvaluationSettings.from_dict(request)  # the schema's defaults for the rest, as the pipeline's config
    through_api = editor.evaluate(evaluation=settings, output=tmp_path / "api" / "edits_00004.csv")
    through_pipeline = experiment.evaluate_snapshot(
        tiny_run(tiny_setup), snapshot=tmp_path / "edits_00004", output=tmp_path / "pipeline" / "edits_00004.csv",
        evaluation=settings.as_dict(), order_sample="0",
    )  # fmt: skip
    timing = through_api["metric"] == "evaluation_seconds"
    assert {"ES", "PS", "NS", "S", "ES_gen", "PS_gen", "GE", "activation_share.L00.mlp"} <= set(through_api["metric"])
    pd.testing.assert_frame_equal(
        through_api[~timing].reset_index(drop=True),
        through_pipeline[~through_pipeline["metric"].eq("evaluation_seconds")].reset_index(drop=True),
    )
    recorded = [
        json.loads((tmp_path / side / "edits_00004.provenance.json").read_text())["evaluation"]
        for side in ("api", "pipeline")
    ]
    assert recorded[0] == recorded[1] == settings.as_dict()

    # a partial dict through the API is API_EVALUATION over the schema's defaults: the pipeline given that measures
    # the same rows
    partial = {"analysis": "final", "analysis_records": 3}
    rows = editor.evaluate(evaluation=partial)
    pipeline_rows = experiment.evaluate_snapshot(
        tiny_run(tiny_setup), snapshot=tmp_path / "edits_00004", output=tmp_path / "partial" / "edits_00004.csv",
        evaluation={**api.API_EVALUATION, **partial}, order_sample="0",
    )  # fmt: skip
    assert "GE" not in set(rows["metric"]) and {"ES_gen", "activation_share.L00.mlp"} <= set(rows["metric"])
    pd.testing.assert_frame_equal(
        rows[rows["metric"] != "evaluation_seconds"].reset_index(drop=True),
        pipeline_rows[pipeline_rows["metric"] != "evaluation_seconds"].reset_index(drop=True),
    )
