"""Statistics of per-user metric values: the mean with a percentile bootstrap interval over users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Interval:
    """A mean and its bootstrap interval; n is the number of users it rests on."""

    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 strata: Optional[np.ndarray] = None) -> Interval:
    """Percentile bootstrap interval of the mean, resampling users with replacement.

    `values` holds one number per user. `strata` (same length) resamples within each group
    separately (e.g. one group per seed, whose worlds have different users), keeping group sizes.
    One value, or all values equal, gives a zero-width interval.
    Shapes: values (N,), strata (N,) or None -> Interval.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D array, got shape {values.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(values))] if strata is None else [np.flatnonzero(strata == s) for s in np.unique(strata)]
    means = np.zeros(n_boot)
    for idx in groups:
        draws = rng.integers(0, len(idx), (n_boot, len(idx)))
        means += values[idx][draws].sum(1)
    means /= len(values)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(values.mean()), float(lo), float(hi), len(values))


def hierarchical_bootstrap_ci(values, strata, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Seed-aware percentile bootstrap of the mean: resample the seeds, then the users within each seed.

    ``values`` holds one number per (seed, user) (e.g. a paired difference between two methods), ``strata``
    the seed of each. Each replicate draws S seeds with replacement from the S seeds present; every drawn
    seed (a seed drawn twice gets two independent draws) resamples its own users with replacement and
    contributes its mean; the replicate is the mean of those S seed means. So the interval carries the
    variation between seeds (different worlds, splits and training runs), which a bootstrap over users
    within seeds (``bootstrap_ci(strata=...)``) leaves out. The point estimate is the mean of the per-seed
    means (the pooled mean when the seeds have equally many users).

    One seed: exactly ``bootstrap_ci(values)`` (same draws). Seeds whose means disagree in sign give an
    interval that spans 0 however many users each has.
    Shapes: values (N,), strata (N,) -> Interval (n = N).
    """
    values = np.asarray(values, np.float64)
    strata = np.asarray(strata)
    if values.ndim != 1 or len(values) == 0 or strata.shape != values.shape:
        raise ValueError(f"hierarchical_bootstrap_ci needs non-empty 1-D values and strata of the same shape, got "
                         f"{values.shape} and {strata.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    S = len(groups)
    # slot k of replicate b resamples the users of seed g: user_means[g, k, b]
    user_means = np.zeros((S, S, n_boot))
    for k in range(S):
        for g, idx in enumerate(groups):
            draws = rng.integers(0, len(idx), (n_boot, len(idx)))
            user_means[g, k] = values[idx][draws].sum(1) / len(idx)
    if S == 1:
        means = user_means[0, 0]
    else:
        picked = np.random.default_rng([seed, 1]).integers(0, S, (n_boot, S))  # the seeds of each replicate
        means = user_means[picked, np.arange(S)[None, :], np.arange(n_boot)[:, None]].mean(1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    point = float(np.mean([values[idx].mean() for idx in groups]))
    return Interval(point, float(lo), float(hi), len(values))


def per_seed_means(values, strata) -> dict:
    """{seed: mean of its values}, in seed order. Shapes: values (N,), strata (N,)."""
    values, strata = np.asarray(values, np.float64), np.asarray(strata)
    return {int(s): float(values[strata == s].mean()) for s in np.unique(strata)}
