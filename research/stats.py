"""One convention for every spread the project reports.

A reported number is a mean over n independent units (seeds, sequences, queries)
with its standard error: the sample standard deviation (ddof = 1) over √n. Tables
print `mean ± se (n=...)`. For an accuracy over n sequences each right or wrong,
this is the binomial standard error up to the factor √(n / (n - 1)).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
  """(mean, standard error of the mean, n); the error is nan for n < 2."""
  v = np.asarray(list(values), np.float64)
  n = int(v.size)
  if n == 0:
    return float("nan"), float("nan"), 0
  se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
  return float(v.mean()), se, n


def mean_se_along(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
  """Per-position means and standard errors over `axis` (e.g. an accuracy curve's
  per-sequence rows): (mean, se, n)."""
  v = np.asarray(values, np.float64)
  n = v.shape[axis]
  se = v.std(axis=axis, ddof=1) / math.sqrt(n) if n > 1 else np.full(
      np.delete(v.shape, axis), np.nan)
  return v.mean(axis=axis), se, n


def fmt(mean: float, se: float, n: int | None = None, digits: int = 3, scale: float = 1.0) -> str:
  """`mean ± se` (and `(n=...)` when n is given)."""
  text = f"{scale * mean:.{digits}f}"
  if se == se:  # Not nan.
    text += f" ± {scale * se:.{digits}f}"
  return text + (f" (n={n})" if n is not None else "")
