"""Which N the statistics sweep supports (encore.reporting.statistics_sweep.supported_n): the rule fixed before the
reference runs, on hand-made sweeps, and the plan's SUPPORTED_N_SAMPLES equal to what the published sweep gives."""

from pathlib import Path

import pandas as pd
import pytest

from encore.plan import costs
from encore.reporting.statistics_sweep import MARGIN, supported_n

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "docs" / "results" / "statistics-sweep" / "sweep.csv"


def sweep(lows: dict[int, float], reference: int = 10000, missing: int | None = None) -> pd.DataFrame:
    """sweep.csv rows of S_diff and NS_diff for both runs: at each N every interval's lower end is lows[N]."""
    rows = []
    for n in (*lows, reference):
        for run in ("MEMIT", "ENCORE"):
            for quantity in ("S_diff", "NS_diff"):
                low = 0.0 if n == reference else lows[n]
                if n == missing and run == "ENCORE" and quantity == "NS_diff":
                    low = float("nan")
                rows.append({"n": n, "run": run, "layer": "all", "quantity": quantity, "value": low + 0.5,
                             "low": low, "high": low + 1.0, "note": ""})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_smallest_n_from_which_every_larger_n_loses_less_than_the_margin():
    supported, verdicts = supported_n(sweep({100: -3.0, 300: -0.5, 1000: -0.2, 3000: -0.1}))
    assert supported == 300 and verdicts[300] == "passes" and verdicts[100].startswith("fails")


def test_a_failing_larger_n_keeps_a_passing_smaller_one_from_counting():
    assert supported_n(sweep({100: -0.2, 300: -0.3, 1000: -1.5, 3000: -0.1}))[0] == 3000


def test_a_lower_end_at_the_margin_fails_and_no_passing_n_supports_only_the_reference():
    supported, verdicts = supported_n(sweep({100: -5.0, 300: -2.0, 1000: -1.2, 3000: -MARGIN}))
    assert supported == 10000 and all(v.startswith("fails") for v in verdicts.values())


def test_a_missing_difference_leaves_the_n_undecided():
    supported, verdicts = supported_n(sweep({100: -0.2, 300: -0.2, 1000: -0.2, 3000: -0.2}, missing=1000))
    assert supported is None and verdicts[1000] == "missing: ENCORE NS - NS_ref"


def test_the_plan_holds_the_n_the_published_sweep_supports():
    if not PUBLISHED.exists():
        assert costs.SUPPORTED_N_SAMPLES is None  # not measured yet: the plan says so
        pytest.skip("the N-sweep is not published yet")
    assert costs.SUPPORTED_N_SAMPLES == supported_n(pd.read_csv(PUBLISHED))[0]
