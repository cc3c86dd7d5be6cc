"""The fp32 vs bf16-mixed benchmark (encore.measuring.precision_benchmark) and fidelity study (encore.measuring.precision_fidelity) on a
tiny Llama: every number they print is computed from the two runs, and the paired differences are right."""

import numpy as np
import pandas as pd
import pytest
import torch

from encore.measuring import precision_benchmark, precision_fidelity
from encore.models import precision
from encore.models.architecture import read_weight


def test_benchmark_compares_both_precisions_on_the_same_batch_and_restores_the_weights(benchmark_setting):
    before = read_weight(benchmark_setting.model, 2).clone()
    out = precision_benchmark.compare_precisions(benchmark_setting, profile_steps=1)
    assert torch.equal(read_weight(benchmark_setting.model, 2), before) and precision.get_precision() == "fp32"
    check = out["same_result"]
    assert check["n"] == 4 and 0 <= check["equal_iterations"] <= 4 and 0 < check["z_median"] <= check["z_max"] < 0.5
    assert 0 < check["delta"] < 1
    for name in ("fp32", "bf16-mixed"):
        profile = out["profiles"][name]
        assert profile["seconds"]["matrix products"] > 0 and profile["matmul_flops"] > 0
        assert profile["floor_s"] == pytest.approx(profile["matmul_flops"] / (max(profile["rates"].values()) * 1e9))
        assert set(profile["rates"]) == {"d x d_ff", "d_ff x d", "d x vocab"}
    # every request runs the profiled steps: its matrix products are the same work in both precisions
    assert out["profiles"]["fp32"]["matmul_flops"] == out["profiles"]["bf16-mixed"]["matmul_flops"]


def test_categories_of_the_profile():
    assert precision_benchmark._category("aten::mm") == "matrix products"
    assert precision_benchmark._category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert precision_benchmark._category("aten::copy_") == "casts and copies"
    assert precision_benchmark._category("aten::_log_softmax_backward_data") == "log-softmax"
    assert precision_benchmark._category("aten::mul").startswith("other")


def test_fidelity_chains_edit_the_same_facts_and_score_them(benchmark_setting):
    before = read_weight(benchmark_setting.model, 1).clone()
    chains = {
        name: precision_fidelity.edit_chain(benchmark_setting, name, batch_size=2) for name in precision.PRECISIONS
    }
    assert torch.equal(read_weight(benchmark_setting.model, 1), before)
    assert all(len(chain["batches"]) == 2 for chain in chains.values())
    agreement = precision_fidelity.target_agreement(chains)
    assert agreement["first batch: requests"] == 2 and agreement["all batches: requests"] == 4
    assert 0 < agreement["first batch: z relative difference, max"] < 0.5
    scoring = precision_fidelity.scoring_agreement(benchmark_setting, chains["fp32"]["weights"])
    prompts = sum(1 + len(r.paraphrase_prompts) + len(r.neighborhood_prompts) for r in benchmark_setting.records)
    assert scoring["scoring: prompts"] == prompts and 0 < scoring["scoring: |NLL difference| max"] < 1
    assert torch.equal(read_weight(benchmark_setting.model, 1), before) and precision.get_precision() == "fp32"


def test_metric_differences_are_paired_percentage_points():
    rng = np.random.default_rng(0)
    base = pd.DataFrame({m: rng.integers(0, 2, 200).astype(float) for m in ("es", "ps", "ns")})
    same, worse = base.copy(), base.copy()
    worse["es"] = 0.0
    rows = pd.DataFrame(precision_fidelity.metric_differences({"fp32": base, "same": same, "worse": worse}))
    value = rows.set_index(["run", "metric"])
    assert value.loc[("same", "ES - fp32"), ["value", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
    assert value.loc[("worse", "ES - fp32"), "value"] == pytest.approx(-100 * base["es"].mean())
    assert value.loc[("worse", "S"), "value"] == 0.0  # ES 0 -> S 0
    assert value.loc[("fp32", "S"), "value"] == pytest.approx(
        3 / sum(1 / (100 * base[m].mean()) for m in ("es", "ps", "ns"))
    )
