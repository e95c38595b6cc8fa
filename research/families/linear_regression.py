"""Linear regression in context (Garg et al. 2022; Raventós et al. 2023).

y = w·x + ε with w ~ N(0, I_d), x ~ N(0, I_d), ε ~ N(0, noise_std²); a fresh w for
every sequence (Garg), or a pool of `num_tasks` = 2^k weight vectors (Raventós:
below a critical pool size the model follows the pool's posterior mean, above it
ridge regression). With `num_classes` = C ≥ 2: multi-class linear classification,
label = argmax of W x for W ∈ R^{d×C}, W ~ N(0, 1).

Bayes-optimal predictors (real targets), next to the classical learners:
  bayes_ridge  the posterior mean under the Gaussian prior: ridge regression with
               λ = noise_std² (the minimum-norm least-squares fit when noiseless);
  bayes_pool   with a pool: the posterior mean over the pool's weight vectors
               (Raventós's dMMSE), weights ∝ exp(-Σ_{i<t} (y_i - w_k·x_i)² / 2σ²).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.classical import linear
from research.families import functions


def defaults() -> dict:
  return functions.common_defaults(dim=8)


def draw(key, dim, active_dim, outputs, section):
  del active_dim, section  # Inactive coordinates of x are 0: their weights do nothing.
  return jax.random.normal(key, (dim, outputs))


def apply(w, x):
  return x @ w


def y_var(dim, section):
  del section
  return dim  # Var(w·x) = E||x||² over the active coordinates.


def pool_posterior_mean(pool_w, x, y, noise_std: float):
  """dMMSE: the posterior mean prediction under a uniform prior over the pool's
  weight vectors (pool_w [K, d, 1]), causal: position t uses examples < t."""
  sigma2 = max(noise_std, 1e-3) ** 2
  preds = x[:, : pool_w.shape[1]] @ pool_w[..., 0].T                 # [L, K]
  sq = jnp.square(y[:, None] - preds)
  before = jnp.cumsum(sq, axis=0) - sq                                # Σ_{i<t}
  weights = jax.nn.softmax(-before / (2.0 * sigma2), axis=-1)
  return (weights * preds).sum(-1)


def oracles(section, pool):
  dim, noise = section.dim, section.noise_std
  out = {"bayes_ridge": lambda arrays, x, y: linear.ridge_predictions(
      x[:, :dim], y, noise ** 2)}
  if section.num_tasks:
    out["bayes_pool"] = lambda arrays, x, y: pool_posterior_mean(arrays, x, y, noise)
  return out


build = functions.register("linear_regression", defaults=defaults, draw=draw, apply=apply,
                           y_var=y_var, oracles=oracles)
