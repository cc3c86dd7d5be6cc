"""The bootstrap intervals of the claim rules: coverage, determinism, pairing, and the confusion-matrix scores."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from encore.reporting.claims import intervals
from encore.reporting.claims.intervals import Interval, harmonic_score, mean_interval, paired_bootstrap


def test_the_interval_of_a_mean_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = [mean_interval(rng.normal(3.0, 2.0, 60), resamples=1000).includes(3.0) for _ in range(200)]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_the_interval_is_deterministic_and_shrinks_with_more_data():
    values = np.random.default_rng(2).normal(0, 1, 400)
    assert mean_interval(values) == mean_interval(values)
    wide, narrow = mean_interval(values[:40]), mean_interval(values)
    assert narrow.high - narrow.low < wide.high - wide.low
    assert mean_interval(values).estimate == pytest.approx(values.mean())


def test_pairing_makes_a_small_consistent_difference_decisive_where_independent_resampling_straddles():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 200).astype(float)  # per-fact 0/1: large spread between facts
    b = a.copy()
    b[np.flatnonzero(a == 0)[:10]] = 1.0  # the same facts, 10 of them now succeed: +0.05
    paired = paired_bootstrap(lambda x, y: y.mean(axis=1) - x.mean(axis=1), a, b)
    ra, rb = mean_interval(a, seed=0), mean_interval(b, seed=1)
    unpaired_low, unpaired_high = rb.low - ra.high, rb.high - ra.low  # the independent samples' range
    assert paired.estimate == pytest.approx(0.05)
    assert paired.above(0.0) == "reproduced"
    assert unpaired_low < 0 < unpaired_high
    # and an explicitly independent resampling of the two runs straddles 0 as well
    index = np.random.default_rng(0).integers(0, 200, size=(2, 4000, 200))
    independent = b[index[1]].mean(axis=1) - a[index[0]].mean(axis=1)
    assert np.percentile(independent, 2.5) < 0 < np.percentile(independent, 97.5)


@pytest.mark.parametrize(
    "interval, above, below",
    [
        (Interval(5, 2, 8), "reproduced", "not reproduced"),
        (Interval(-5, -8, -2), "not reproduced", "reproduced"),
        (Interval(0, -1, 1), "inconclusive", "inconclusive"),
    ],
)
def test_an_interval_decides_only_when_it_lies_on_one_side_of_the_threshold(interval, above, below):
    assert (interval.above(0.0), interval.below(0.0)) == (above, below)


def test_the_score_is_the_harmonic_mean_of_the_three_means():
    es, ps, ns = (np.full((1, 10), v) for v in (0.9, 0.6, 0.3))
    assert harmonic_score(es, ps, ns)[0] == pytest.approx(3 / (1 / 90 + 1 / 60 + 1 / 30))
    assert harmonic_score(es, ps, np.zeros((1, 10)))[0] == 0.0


def test_f1_and_mcc_from_confusion_matrices_match_sklearn():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 150)
    predictions = np.where(rng.random(150) < 0.6, labels, rng.integers(-1, 3, 150))
    matrix = intervals.confusion(labels, np.where(predictions < 0, 3, predictions), 4)
    assert intervals.weighted_f1(matrix) == pytest.approx(f1_score(labels, predictions, average="weighted"))
    assert intervals.mcc(matrix) == pytest.approx(matthews_corrcoef(labels, predictions))


def test_a_claim_with_parts_is_decided_by_its_worst_part():
    assert intervals.combine(["reproduced", "not reproduced", "not run"]) == "not reproduced"
    assert intervals.combine(["reproduced", "not run", "inconclusive"]) == "not run"
    assert intervals.combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert intervals.combine(["reproduced", "reproduced"]) == "reproduced"
