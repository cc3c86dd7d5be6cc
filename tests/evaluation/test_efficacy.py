"""Post-update efficacy (encore.evaluation.efficacy): what the ledger records right after each batch is what the
evaluation's CounterFact scoring gives for the same facts on the same weights, it is measured in the scoring
precision, and measuring it changes nothing of the edit."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import data_dir
from pipeline_helpers import TINY_HPARAMS, save_tiny_model

from encore import api
from encore.editing.sequential import edit_batch
from encore.evaluation.counterfact import counterfact_record_scores
from encore.evaluation.efficacy import COLUMNS, post_update_efficacy
from encore.models import precision


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("efficacy")
    model_dir = save_tiny_model(root / "tiny-llama")
    (root / "hparams" / "MEMIT").mkdir(parents=True)
    (root / "hparams" / "MEMIT" / "tiny-llama.yaml").write_text(yaml.safe_dump(TINY_HPARAMS))
    resources = root / "resources"
    records = api.load_requests("counterfact", 4, "0", data_dir=data_dir(), resources=resources)
    return {"model": str(model_dir), "hparams_dir": root / "hparams", "resources": resources, "records": records}


def editor_for(setup):
    return api.load_editor(setup["model"], "memit", "plain", hparams_dir=setup["hparams_dir"], data_dir=data_dir(),
                           resources=setup["resources"], order="0", experiment="t")  # fmt: skip


def test_ledger_efficacy_equals_the_evaluations_rewrite_scores_right_after_the_batch(setup):
    editor = editor_for(setup)
    records = setup["records"]
    ledger = editor.edit(records[:2], batch_size=2)
    scores = counterfact_record_scores(editor.model, editor.tokenizer, records[:2])  # the same weights, now
    for column in COLUMNS:
        assert column in ledger.columns
    assert list(ledger["post_success"].astype(float)) == list(scores["es"])
    assert list(ledger["post_top1"].astype(float)) == list(scores["es_top1"].astype(float))
    for ours, theirs in zip(ledger["post_p_new"], scores["p_new_rewrite"]):
        assert math.isclose(ours, theirs, rel_tol=1e-5)
    for ours, theirs in zip(ledger["post_p_true"], scores["p_true_rewrite"]):
        assert math.isclose(ours, theirs, rel_tol=1e-5)
    # the first batch's efficacy is recorded once: the next batch's rows describe that batch's facts only
    later = editor.edit(records[2:4], batch_size=2)
    assert list(later["case_id"]) == [r.case_id for r in records[2:4]]
    after = counterfact_record_scores(editor.model, editor.tokenizer, records[2:4])
    assert list(later["post_success"].astype(float)) == list(after["es"])


def test_measuring_efficacy_leaves_the_edit_bitwise_unchanged(setup):
    """A session (which scores after each batch) and edit_batch alone (which does not) write the same weights and
    leave the same random state, over two batches."""
    with_efficacy = editor_for(setup)
    with_efficacy.edit(setup["records"][:4], batch_size=2)
    plain = editor_for(setup)
    session = plain.session
    for start in (0, 2):
        edit_batch(plain.model, plain.tokenizer, setup["records"][start : start + 2], session.hparams,
                   session.editor, session.state, session.covariances, session.projectors)  # fmt: skip
    for name, tensor in with_efficacy.model.state_dict().items():
        assert torch.equal(tensor, plain.model.state_dict()[name]), name
    assert torch.equal(with_efficacy.session.state.torch_rng_state, session.state.torch_rng_state)


def test_efficacy_is_scored_in_the_scoring_precision_not_the_editing_one(setup, monkeypatch):
    """An edit job in bf16-mixed with fp32 scoring scores its batches in fp32: the active precision seen by the
    scorer is the scoring one, and the process-wide setting is the editing one again afterwards."""
    seen = []
    real = post_update_efficacy

    def spy(model, tokenizer, records):
        seen.append(precision.get_precision())
        return real(model, tokenizer, records)

    monkeypatch.setattr("encore.session.post_update_efficacy", spy)
    editor = editor_for(setup)
    execution = editor.session.execution
    monkeypatch.setattr(
        editor.session,
        "execution",
        type(execution)(execution.device, execution.dtype, precision="fp32", score_precision="bf16-mixed"),
    )
    editor.edit(setup["records"][:2], batch_size=2)
    assert seen == ["bf16-mixed"] and precision.get_precision() == "fp32"


def test_efficacy_rows_follow_the_records_order(setup):
    editor = editor_for(setup)
    records = setup["records"][:3]
    forward = post_update_efficacy(editor.model, editor.tokenizer, records)
    backward = post_update_efficacy(editor.model, editor.tokenizer, records[::-1])
    assert forward == backward[::-1]


def test_the_api_scores_its_evaluations_in_the_scoring_precision_and_records_it(setup, monkeypatch, tmp_path):
    """load_editor(execution={precision, score_precision}): evaluate() runs in the scoring precision, and collect reads
    that precision from the evaluation's provenance (not the editing one)."""
    import encore.api
    from encore.reporting.collect import score_precision

    seen = []
    real = encore.api.evaluate_model

    def spy(*args, **kwargs):
        seen.append(precision.get_precision())
        return real(*args, **kwargs)

    monkeypatch.setattr(encore.api, "evaluate_model", spy)
    editor = api.load_editor(setup["model"], "memit", "plain", hparams_dir=setup["hparams_dir"], data_dir=data_dir(),
                             resources=setup["resources"], order="0", experiment="t",
                             execution={"precision": "fp32", "score_precision": "bf16-mixed"})  # fmt: skip
    editor.edit(setup["records"][:2], batch_size=2)
    editor.evaluate(output=tmp_path / "edits_00002.csv")
    assert seen == ["bf16-mixed"] and precision.get_precision() == "fp32"
    assert score_precision(tmp_path / "edits_00002.csv") == "bf16-mixed"
