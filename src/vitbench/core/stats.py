"""How far to trust a score: confidence intervals, paired tests between models, sample sizes.

All on one test split, so no retraining is needed:

- `accuracy_interval`: Wilson score interval of a proportion (good coverage even at 0% or 100%
  and on small test sets, where the normal approximation fails).
- `bootstrap_interval`: percentile bootstrap over the test images (seeded) of any metric of
  (y_true, y_pred); `f1_macro_interval` uses it with a vectorised macro F1.
- `mcnemar_exact`: McNemar's exact test of two models' correctness on the same images: under
  "equally accurate", each image one model gets right and the other wrong goes either way with
  probability 1/2, so the smaller discordant count is Binomial(b + c, 1/2).
- `mcnemar_sample_size`: test images needed to detect an accuracy difference with McNemar's test
  (Connor 1987, "Sample size for testing differences in proportions for the paired-sample
  design", Biometrics 43:207-211)::

      n = (z_{1-alpha/2} * sqrt(psi) + z_{1-beta} * sqrt(psi - delta^2))^2 / delta^2

  where psi is the share of discordant images (one model right, the other wrong) and delta the
  accuracy difference.
- `mean_interval`: mean, standard deviation and Student-t interval over repeated runs (seeds).
- `chance_p`: one-sided exact binomial p of an accuracy against the majority-class rate; a model
  with `chance_p >= ALPHA` is "at chance" (`at_chance`) and never decides a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
ALPHA = 0.05       # significance level of the paired tests
POWER = 0.8        # power the sample-size estimate aims for


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def accuracy_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of `correct` / `total`."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"accuracy interval of {correct} correct out of {total}: need 0 <= correct <= total, total > 0")
    ci = stats.binomtest(int(correct), int(total)).proportion_ci(confidence, method="wilson")
    return Interval(float(ci.low), float(ci.high))


def bootstrap_interval(statistic: Callable[..., np.ndarray], y_true: np.ndarray, y_pred: np.ndarray,
                       seed: int, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """Percentile bootstrap interval of `statistic(y_true, y_pred, axis=-1)` (vectorised over
    resamples), resampling test images with replacement; the same seed gives the same interval."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0 or y_true.shape != y_pred.shape:
        raise ValueError(f"bootstrap needs matching, non-empty labels: {y_true.shape} vs {y_pred.shape}")
    if len(y_true) == 1:                     # nothing to resample
        value = float(statistic(y_true[None], y_pred[None])[0])
        return Interval(value, value)
    result = stats.bootstrap((y_true, y_pred), statistic, paired=True, vectorized=True,
                             n_resamples=resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high))


def macro_f1(num_classes: int) -> Callable[..., np.ndarray]:
    """Macro F1 over all `num_classes` (0 for a class never predicted nor present, as
    scikit-learn's `f1_score(average="macro", labels=range(k), zero_division=0)`), vectorised
    over the leading axes of `[..., n]` label arrays."""

    def f1(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray:
        scores = []
        for c in range(num_classes):
            is_true, is_pred = y_true == c, y_pred == c
            tp = (is_true & is_pred).sum(axis=axis)
            den = is_true.sum(axis=axis) + is_pred.sum(axis=axis)
            scores.append(np.divide(2.0 * tp, den, out=np.zeros(np.shape(den)), where=den > 0))
        return np.mean(scores, axis=0)

    return f1


def f1_macro_interval(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, seed: int) -> Interval:
    """Bootstrap interval of the macro F1 over the test images."""
    return bootstrap_interval(macro_f1(num_classes), y_true, y_pred, seed)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of model A against model B on the same images."""

    only_a: int        # images A gets right and B wrong
    only_b: int        # images B gets right and A wrong
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Two-sided exact McNemar test from per-image correctness (booleans, same image order)."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"McNemar needs the same images for both models: {correct_a.shape} vs {correct_b.shape}")
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return McNemar(only_a, only_b, float(p))


def mcnemar_sample_size(discordant: float, difference: float, alpha: float = ALPHA,
                        power: float = POWER) -> int:
    """Images needed for McNemar's test to detect an accuracy `difference` (a fraction, e.g.
    0.05) with the given power, when a share `discordant` of images is right for exactly one
    model (Connor 1987). `discordant` is raised to |difference| when lower (it cannot be less)."""
    delta = abs(float(difference))
    if not 0 < delta < 1:
        raise ValueError(f"difference must be a non-zero fraction, got {difference}")
    psi = min(max(float(discordant), delta), 1.0)
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = (z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta ** 2)) ** 2 / delta ** 2
    return int(math.ceil(n))


@dataclass(frozen=True)
class Spread:
    """A metric over repeated runs."""

    n: int
    mean: float
    std: float                 # sample standard deviation (ddof=1); 0 for a single run
    low: float | None          # Student-t interval of the mean; None for a single run
    high: float | None


def mean_interval(values: list[float], confidence: float = CONFIDENCE,
                  bounds: tuple[float, float] | None = None) -> Spread:
    """Mean, standard deviation and t interval of the mean of `values`; the interval is clipped
    to `bounds` (e.g. (0, 1) for accuracies) when given."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    mean = float(x.mean())
    if x.size == 1:
        return Spread(1, mean, 0.0, None, None)
    std = float(x.std(ddof=1))
    if std == 0:
        return Spread(int(x.size), mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=std / math.sqrt(x.size))
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Spread(int(x.size), mean, std, float(low), float(high))


def majority_rate(labels: list[str] | np.ndarray) -> float:
    """The accuracy of always answering the most frequent label (the chance level of a test split)."""
    values = np.asarray(labels)
    if values.size == 0:
        raise ValueError("no labels: the chance level of an empty test split is undefined")
    _, counts = np.unique(values, return_counts=True)
    return float(counts.max() / values.size)


def chance_p(correct: int, total: int, chance: float) -> float:
    """One-sided exact binomial p of `correct` out of `total` under "no better than `chance`"
    (the majority-class rate of the test split). Unrounded: tiny p-values are kept as they are."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"chance test of {correct} correct out of {total}: need 0 <= correct <= total, total > 0")
    if not 0 < chance < 1:
        return 1.0 if chance >= 1 else 0.0
    return float(stats.binomtest(int(correct), int(total), float(chance), alternative="greater").pvalue)


def at_chance(p: float | None, alpha: float = ALPHA) -> bool:
    """Whether a model's `chance_p` leaves it indistinguishable from guessing the majority class."""
    return p is None or p >= alpha
