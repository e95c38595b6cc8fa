"""Linear learners fitted on the context, one fit per prefix: ridge regression (and
its classifier) and minimum-norm least squares.

Position t's fit uses the examples i < t: rows i ≥ t are zeroed, which changes
neither a least-squares nor a ridge solution. `ridge_predictions` (no intercept) is
also the Bayes-optimal predictor of linear regression under a Gaussian prior
(λ = noise variance / prior variance; λ = 0: the minimum-norm interpolant), which
the linear-regression family uses as its oracle.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import classical


def ridge_predictions(x, y, lam: float):
  """x [L, d], y [L] (or [L, k]) -> causal predictions [L] ([L, k]) of ridge without
  intercept: w_t = argmin Σ_{i<t} (y_i - w·x_i)² + λ|w|²; λ = 0: min-norm least squares."""
  m = classical.before_mask(x.shape[0])

  def at(mask_t, x_t):
    xm = x * mask_t[:, None]
    ym = y * (mask_t if y.ndim == 1 else mask_t[:, None])
    if lam == 0:
      w = jnp.linalg.lstsq(xm, ym)[0]
    else:
      w = jnp.linalg.solve(xm.T @ xm + lam * jnp.eye(x.shape[1]), xm.T @ ym)
    return x_t @ w

  return jax.vmap(at)(m, x)


def ridge_intercept_predictions(x, y, alpha: float):
  """scikit-learn's Ridge(alpha) with an intercept, per prefix: centre x and y over the
  examples before t, solve, predict x_t."""
  m = classical.before_mask(x.shape[0])

  def at(mask_t, x_t):
    n = jnp.maximum(mask_t.sum(), 1.0)
    x_mean = (x * mask_t[:, None]).sum(0) / n
    y_mean = (y * mask_t[:, None]).sum(0) / n
    xc = (x - x_mean) * mask_t[:, None]
    yc = (y - y_mean) * mask_t[:, None]
    w = jnp.linalg.solve(xc.T @ xc + alpha * jnp.eye(x.shape[1]), xc.T @ yc)
    return (x_t - x_mean) @ w + y_mean

  return jax.vmap(at)(m, x)


@classical.CLASSICAL.register("ridge", targets=("classes", "values"))
def ridge(x, y, *, num_classes: int, alpha: float = 1.0):
  if classical.is_values(y):
    return ridge_intercept_predictions(x, y[:, None], alpha)[:, 0]
  targets = 2.0 * jax.nn.one_hot(y, num_classes) - 1.0  # RidgeClassifier's ±1 coding.
  scores = ridge_intercept_predictions(x, targets, alpha)
  return scores * (jnp.arange(x.shape[0]) > 0)[:, None]  # No context: no prediction.


@classical.CLASSICAL.register("least_squares", targets=("values",))
def least_squares(x, y, *, num_classes: int):
  del num_classes
  return ridge_predictions(x, y, 0.0)
