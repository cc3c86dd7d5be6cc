"""tools/compare_results.py: a results directory equals its copy, timings aside; one changed bit or cell differs."""

import importlib.util
import shutil

import pandas as pd
import torch
from conftest import REPO
from safetensors.torch import save_file

spec = importlib.util.spec_from_file_location("compare_results", REPO / "tools" / "compare_results.py")
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)


def results(root):
    snapshot = root / "run" / "snapshots" / "edits_00002"
    snapshot.mkdir(parents=True)
    save_file({"layer.4": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, str(snapshot / "weights.safetensors"))
    pd.DataFrame({"case_id": [1, 2], "iterations": [3, 4], "targets_s": [0.5, 0.7]}).to_csv(
        snapshot / "ledger.csv", index=False
    )
    pd.DataFrame({"metric": ["ES", "evaluation_seconds"], "value": [100.0, 12.3]}).to_csv(
        root / "run" / "metrics.csv", index=False
    )
    return root


def test_a_copy_with_other_timings_is_the_same_and_a_changed_bit_or_cell_is_not(tmp_path):
    first = results(tmp_path / "first")
    second = tmp_path / "second"
    shutil.copytree(first, second)
    ledger = second / "run" / "snapshots" / "edits_00002" / "ledger.csv"
    pd.read_csv(ledger).assign(targets_s=[9.0, 9.0]).to_csv(ledger, index=False)
    metrics = second / "run" / "metrics.csv"
    pd.DataFrame({"metric": ["ES", "evaluation_seconds"], "value": [100.0, 99.0]}).to_csv(metrics, index=False)
    assert compare_results.main([str(first), str(second)]) == 0

    weights = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    weights.view(-1).view(torch.int16)[0] += 1  # one bit of one weight
    save_file({"layer.4": weights}, str(second / "run" / "snapshots" / "edits_00002" / "weights.safetensors"))
    pd.read_csv(ledger).assign(iterations=[3, 5]).to_csv(ledger, index=False)
    lines = compare_results.compare(first, second)
    assert [line.split()[1] for line in lines if line.startswith("DIFFERS")] == [
        "run/snapshots/edits_00002/ledger.csv",
        "run/snapshots/edits_00002/weights.safetensors",
    ]
    assert compare_results.main([str(first), str(second)]) == 1
