"""Intervals, McNemar's test and the sample-size estimate against scipy (and statsmodels when
installed) on hand-made predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score

from vitbench.core import stats


def wilson(k: int, n: int, z: float = sps.norm.ppf(0.975)) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(45, 60), (0, 60), (60, 60), (1, 3), (17, 20)])
def test_accuracy_interval_is_the_wilson_interval(k: int, n: int) -> None:
    ci = stats.accuracy_interval(k, n)
    low, high = wilson(k, n)
    assert (ci.low, ci.high) == (pytest.approx(max(low, 0.0), abs=1e-12),
                                 pytest.approx(min(high, 1.0), abs=1e-12))
    assert ci.low <= k / n <= ci.high


def test_accuracy_interval_matches_statsmodels() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in ((45, 60), (3, 12), (12, 12)):
        low, high = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
        ci = stats.accuracy_interval(k, n)
        assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))


def test_accuracy_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="7 correct out of 5"):
        stats.accuracy_interval(7, 5)


def hand_made(n: int = 60, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    return y, pred


@pytest.mark.parametrize("k", [3, 5])
def test_vectorised_macro_f1_is_sklearns(k: int) -> None:
    y, pred = hand_made(k=k)
    pred[pred == k - 1] = 0                     # one class never predicted: zero_division=0
    assert stats.macro_f1(k)(y, pred) == pytest.approx(
        f1_score(y, pred, average="macro", labels=list(range(k)), zero_division=0))


@pytest.mark.slow
def test_f1_interval_is_scipys_bootstrap_of_sklearns_f1() -> None:
    y, pred = hand_made()
    ours = stats.f1_macro_interval(y, pred, 4, seed=7)
    theirs = sps.bootstrap(
        (y, pred), lambda t, p: f1_score(t, p, average="macro", labels=list(range(4)), zero_division=0),
        paired=True, vectorized=False, n_resamples=stats.BOOTSTRAP_RESAMPLES, method="percentile",
        rng=np.random.default_rng(7)).confidence_interval
    assert (ours.low, ours.high) == (pytest.approx(theirs.low), pytest.approx(theirs.high))
    point = f1_score(y, pred, average="macro", zero_division=0)
    assert ours.low < point < ours.high
    assert stats.f1_macro_interval(y, pred, 4, seed=7) == ours          # seeded: repeatable


def test_bootstrap_accuracy_interval_is_close_to_wilson_on_a_large_set() -> None:
    y, pred = hand_made(n=400)
    boot = stats.bootstrap_interval(lambda t, p, axis=-1: (t == p).mean(axis=axis), y, pred, seed=1)
    ci = stats.accuracy_interval(int((y == pred).sum()), len(y))
    assert boot.low == pytest.approx(ci.low, abs=0.015)
    assert boot.high == pytest.approx(ci.high, abs=0.015)


def test_bootstrap_of_one_image_is_its_value() -> None:
    ci = stats.f1_macro_interval(np.array([1]), np.array([1]), 2, seed=0)
    assert (ci.low, ci.high) == (0.5, 0.5)        # class 0 absent and never predicted: F1 0


def correctness(only_a: int, only_b: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return np.array(a), np.array(b)


@pytest.mark.parametrize("only_a,only_b", [(9, 2), (2, 9), (5, 5), (0, 6), (1, 0), (30, 12)])
def test_mcnemar_exact_p_value(only_a: int, only_b: int) -> None:
    a, b = correctness(only_a, only_b, both=40, neither=7)
    test = stats.mcnemar_exact(a, b)
    assert (test.only_a, test.only_b) == (only_a, only_b)
    n = only_a + only_b
    expected = min(1.0, 2 * sps.binom.cdf(min(only_a, only_b), n, 0.5))   # the textbook form
    assert test.p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_statsmodels() -> None:
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    for only_a, only_b in ((9, 2), (5, 5), (0, 6)):
        a, b = correctness(only_a, only_b, both=40, neither=7)
        table = [[40, only_a], [only_b, 7]]
        assert stats.mcnemar_exact(a, b).p_value == pytest.approx(
            contingency.mcnemar(table, exact=True).pvalue)


def test_mcnemar_of_identical_models_is_one_and_shapes_must_match() -> None:
    a, _ = correctness(3, 0, 10, 2)
    assert stats.mcnemar_exact(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar_exact(a, a[:-1])


@pytest.mark.parametrize("psi,delta", [(0.2, 0.05), (0.1, 0.08), (0.3, 0.15)])
def test_sample_size_gives_the_promised_power(psi: float, delta: float) -> None:
    """Simulate McNemar's exact test at the estimated size: it rejects about 80% of the time."""
    n = stats.mcnemar_sample_size(psi, delta)
    rng = np.random.default_rng(0)
    p10, p01 = (psi + delta) / 2, (psi - delta) / 2
    counts = rng.multinomial(n, [p10, p01, 1 - psi], size=4000)
    b, c = counts[:, 0], counts[:, 1]
    p = np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5))
    assert np.mean(p < stats.ALPHA) == pytest.approx(stats.POWER, abs=0.05)


def test_sample_size_formula_by_hand() -> None:
    # Connor (1987): psi 0.2, delta 0.05 -> (1.95996*sqrt(.2) + 0.84162*sqrt(.2 - .0025))^2/.0025
    by_hand = (1.959964 * math.sqrt(0.2) + 0.841621 * math.sqrt(0.1975)) ** 2 / 0.0025
    assert stats.mcnemar_sample_size(0.2, 0.05) == math.ceil(by_hand)
    assert stats.mcnemar_sample_size(0.01, 0.05) == stats.mcnemar_sample_size(0.05, 0.05)
    with pytest.raises(ValueError, match="non-zero"):
        stats.mcnemar_sample_size(0.2, 0.0)


def test_mean_interval_over_seeds() -> None:
    values = [0.75, 0.8, 0.7833]
    spread = stats.mean_interval(values)
    low, high = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
    assert spread.n == 3 and spread.std == pytest.approx(np.std(values, ddof=1))
    assert (spread.low, spread.high) == (pytest.approx(low), pytest.approx(high))
    assert stats.mean_interval([0.8]) == stats.Spread(1, 0.8, 0.0, None, None)
    assert stats.mean_interval([0.5, 0.5]).low == 0.5
    wide = stats.mean_interval([0.64, 0.77])                    # two seeds: a t interval of +-0.8
    assert wide.low < 0 and wide.high > 1
    clipped = stats.mean_interval([0.64, 0.77], bounds=(0.0, 1.0))
    assert (clipped.low, clipped.high, clipped.mean) == (0.0, 1.0, wide.mean)
