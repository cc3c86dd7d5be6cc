"""The three-path benchmark (encore.measuring.benchmark.compare_paths) on a tiny Llama: it times the same batch three
ways, restores the weights, and its same-result check compares what the paths computed."""

import pytest
import torch

from encore.measuring import benchmark
from encore.models.architecture import read_weight


def test_the_three_paths_edit_the_same_batch_alike_and_leave_the_weights_unedited(benchmark_setting, capsys):
    before = {layer: read_weight(benchmark_setting.model, layer).clone() for layer in (1, 2)}
    out = benchmark.compare_paths(benchmark_setting, skip_per_request=False)
    for layer, weight in before.items():
        assert torch.equal(read_weight(benchmark_setting.model, layer), weight)
    paths, check = out["paths"], out["same_result"]
    assert list(paths) == ["per-request", "batched", "batched + prefix reuse"]
    for row in paths.values():
        assert row["targets"] > 0 and row["keys"] > 0 and row["solves"] > 0
        assert row["z"].shape == (4, 64) and len(row["iterations"]) == 4
    # per-request runs only its targets differently: its keys and solves are the batched path's
    assert paths["per-request"]["keys"] == paths["batched"]["keys"]
    assert paths["per-request"]["solves"] == paths["batched"]["solves"]
    # the check is computed from the paths' own results (float32: equal up to rounding)
    fast = paths["batched + prefix reuse"]["z"]
    for name in ("per-request", "batched"):
        relative = float(((fast - paths[name]["z"]).norm(dim=-1) / paths[name]["z"].norm(dim=-1)).max())
        assert check["z"][name] == pytest.approx(relative) and relative < 1e-3
    assert 0 <= check["delta_vs_batched"] < 1e-3
    printed = capsys.readouterr().out
    assert "batched + prefix reuse" in printed and f"{check['delta_vs_batched']:.2e}" in printed


def test_the_check_reports_a_path_that_computed_something_else():
    z = torch.ones(2, 3)
    paths = {"batched": {"z": z, "iterations": [3, 4]}, "batched + prefix reuse": {"z": 2 * z, "iterations": [3, 5]}}
    deltas = {"batched": torch.ones(6), "batched + prefix reuse": torch.zeros(6)}
    check = benchmark.same_result(paths, deltas)
    assert check["z"]["batched"] == pytest.approx(1.0) and check["same_iterations"]["batched"] is False
    assert check["delta_vs_batched"] == pytest.approx(1.0)
