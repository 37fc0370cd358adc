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
