"""Percentile-bootstrap 95% intervals for the claim rules (``encore.reporting.claims``), and bounds on them
where only aggregates are published.

Every interval is drawn with ``numpy.random.default_rng(SEED)`` and ``RESAMPLES`` resamples, so a page
regenerates byte for byte. A *paired* bootstrap resamples one set of unit indices (facts, batches, layers,
items) and applies it to every array at once, so two runs are compared on the same units in every resample.

Without the per-unit data, ``Bounds`` holds where that interval must lie for *every* per-unit data set
consistent with the published aggregates (``mean_bounds``, ``difference_bounds``): a rule decides from them
when all those data sets give the same answer, and otherwise says which data are missing ("no data: ...").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SEED = 0
RESAMPLES = 4000
LEVEL = 0.95
CHUNK = 2_000_000  # resampled values held at once per array (16 MB)

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable at this scale"
NOT_RUN = "not run"
NO_DATA = "no data"  # an outcome "no data: <what is missing>": the runs exist, the data to judge them do not
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE, NOT_RUN, NO_DATA)
# Bounds from aggregates: each of the two states may leave its range with probability at most TAIL, so the
# difference leaves the bounds in at most 2 TAIL = 1% of resamples, well inside the 2.5% of each tail of a
# 95% interval (the margin covers the Monte Carlo error of RESAMPLES resamples).
TAIL = 0.005


def no_data(what: str) -> str:
    """The outcome of a claim whose runs exist but whose data to judge them were not published."""
    return f"{NO_DATA}: {what}"


def kind(outcome: str) -> str:
    """The outcome without its detail: "no data: records.csv" -> "no data"."""
    return NO_DATA if outcome.startswith(NO_DATA) else outcome


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def text(self, fmt: str = ".1f") -> str:
        return f"{self.estimate:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def above(self, threshold: float) -> str:
        """reproduced if the whole interval lies above ``threshold``, not reproduced if below, else inconclusive."""
        if self.low > threshold:
            return REPRODUCED
        return NOT_REPRODUCED if self.high < threshold else INCONCLUSIVE

    def below(self, threshold: float) -> str:
        if self.high < threshold:
            return REPRODUCED
        return NOT_REPRODUCED if self.low > threshold else INCONCLUSIVE

    def includes(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Bounds:
    """Where the 95% interval of a statistic lies for every per-unit data set consistent with the published
    aggregates (``low``/``high`` infinite: nowhere known). It decides a threshold only when every such data
    set decides it the same way; otherwise the outcome is "no data: ``missing``"."""

    estimate: float
    low: float
    high: float
    missing: str

    def text(self, fmt: str = ".1f") -> str:
        if not np.isfinite([self.low, self.high]).all():
            return f"{self.estimate:{fmt}}, no interval"
        return (
            f"{self.estimate:{fmt}}, no interval; with any per-unit data that give the published aggregates it "
            f"lies inside [{self.low:{fmt}}, {self.high:{fmt}}]"
        )

    def above(self, threshold: float) -> str:
        if self.low > threshold:
            return REPRODUCED
        return NOT_REPRODUCED if self.high < threshold else no_data(self.missing)

    def below(self, threshold: float) -> str:
        if self.high < threshold:
            return REPRODUCED
        return NOT_REPRODUCED if self.low > threshold else no_data(self.missing)


def unknown(missing: str, estimate: float = float("nan")) -> Bounds:
    """Nothing is known about the interval: every threshold gives "no data: ``missing``"."""
    return Bounds(estimate, -np.inf, np.inf, missing)


def mean_bounds(mean: float, units: int, tail: float = TAIL) -> tuple[float, float]:
    """The range that the mean of a bootstrap resample of ``units`` values in [0, 1] with mean ``mean`` leaves
    with probability at most ``tail`` on either side, whatever the values: m ± sqrt(ln(1/tail) / (2 units)), clipped to
    [0, 1] (Hoeffding's inequality; algorithms.md §14.1)."""
    reach = np.sqrt(np.log(1 / tail) / (2 * units))
    return max(0.0, mean - reach), min(1.0, mean + reach)


def difference_bounds(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Bounds on (statistic of b) - (statistic of a) from each one's ``(low, high)`` range: whatever the pairing
    of the units, the difference leaves [low_b - high_a, high_b - low_a] only when one of them leaves its range."""
    return b[0] - a[1], b[1] - a[0]


def paired_bootstrap(
    statistic: Callable[..., np.ndarray], *arrays, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """``statistic(*columns)`` on the data and on ``resamples`` resamples of the units (rows, axis 0).

    All ``arrays`` have one row per unit and are resampled with the same indices. ``statistic`` receives
    arrays of shape (resamples, units, ...) and returns one value per resample (shape (resamples,)).
    """
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    units = len(arrays[0])
    if units == 0 or any(len(a) != units for a in arrays):
        raise ValueError(
            f"paired_bootstrap: arrays need the same, non-zero number of rows, got {[len(a) for a in arrays]}"
        )
    estimate = float(statistic(*[a[None] for a in arrays])[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK // (units * max(a[0].size for a in arrays)))  # bounded memory: 3,000 facts x 3 scores
    values = []
    for start in range(0, resamples, chunk):
        index = rng.integers(0, units, size=(min(chunk, resamples - start), units))
        values.append(np.asarray(statistic(*[a[index] for a in arrays]), dtype=float))
    values = np.concatenate(values)
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))


def mean_interval(values, **kwargs) -> Interval:
    """The mean of ``values`` and its bootstrap interval."""
    return paired_bootstrap(lambda x: x.mean(axis=1), values, **kwargs)


def s_of_means(means: np.ndarray) -> np.ndarray:
    """S = 3 / (1/ES + 1/PS + 1/NS) of the means stacked on axis 0 (0 where any of them is 0; algorithms.md §7.2)."""
    with np.errstate(divide="ignore"):
        s = 3 / (1 / means).sum(axis=0)
    return np.where((means > 0).all(axis=0), s, 0.0)


def harmonic_score(es: np.ndarray, ps: np.ndarray, ns: np.ndarray) -> np.ndarray:
    """S of the per-resample means x100 (``s_of_means``); inputs (R, n)."""
    return s_of_means(np.stack([100 * x.mean(axis=-1) for x in (es, ps, ns)]))


def confusion(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """Confusion matrices (..., classes, classes) of integer ``labels`` x ``predictions`` (..., n); class
    ``classes - 1`` may stand for "invalid"."""
    flat = (labels * classes + predictions).astype(int)
    shape = flat.shape[:-1]
    flat = flat.reshape(-1, flat.shape[-1])
    cells = classes * classes
    shifted = flat + cells * np.arange(len(flat))[:, None]  # one bincount for every row at once
    counts = np.bincount(shifted.ravel(), minlength=cells * len(flat))
    return counts.reshape(*shape, classes, classes)


def weighted_f1(matrix: np.ndarray) -> np.ndarray:
    """Support-weighted F1 of confusion matrices (..., K, K) (rows: true class), as sklearn's
    ``f1_score(average="weighted", zero_division=0)``."""
    tp = np.diagonal(matrix, axis1=-2, axis2=-1).astype(float)
    support, predicted = matrix.sum(axis=-1), matrix.sum(axis=-2)
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    total = support.sum(axis=-1)
    return np.divide((f1 * support).sum(axis=-1), total, out=np.zeros(total.shape), where=total > 0)


def mcc(matrix: np.ndarray) -> np.ndarray:
    """Matthews correlation of confusion matrices (..., K, K), the multi-class form sklearn uses (0 when undefined)."""
    matrix = matrix.astype(float)
    t, p = matrix.sum(axis=-1), matrix.sum(axis=-2)
    c = np.diagonal(matrix, axis1=-2, axis2=-1).sum(axis=-1)
    s = matrix.sum(axis=(-2, -1))
    numerator = c * s - (t * p).sum(axis=-1)
    denominator = np.sqrt((s**2 - (p * p).sum(axis=-1)) * (s**2 - (t * t).sum(axis=-1)))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def combine(outcomes) -> str:
    """One outcome for a claim with several parts: any part not reproduced decides; then a missing run,
    missing data (every "no data" part named), a failed precondition, an undecided part; reproduced only if
    every part is."""
    outcomes = list(outcomes)
    for outcome in (NOT_REPRODUCED, NOT_RUN):
        if outcome in outcomes:
            return outcome
    missing = [outcome.partition(": ")[2] for outcome in outcomes if kind(outcome) == NO_DATA]
    if missing:
        return no_data("; ".join(dict.fromkeys(missing)))
    for outcome in (NOT_TESTABLE, INCONCLUSIVE):
        if outcome in outcomes:
            return outcome
    return REPRODUCED
