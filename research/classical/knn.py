"""k-nearest neighbours on the context: k = 1 and k = ⌊√t⌋ after t examples.

Classes: majority vote (ties go to the nearest neighbour's label among the tied);
values: the neighbours' mean (scikit-learn's KNeighborsRegressor, uniform weights).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import classical


def _knn(x, y, k_of_t, num_classes):
  length = x.shape[0]
  sq = jnp.sum(x * x, -1)
  dist = sq[:, None] + sq[None, :] - 2.0 * x @ x.T              # [t, i]
  allowed = classical.before_mask(length) > 0
  dist = jnp.where(allowed, dist, jnp.inf)
  rank = jnp.argsort(jnp.argsort(dist, axis=1, stable=True), axis=1)
  t = jnp.arange(length)
  k = k_of_t(t)
  chosen = (rank < k[:, None]) & allowed                        # [t, i]
  if classical.is_values(y):
    count = jnp.maximum(chosen.sum(1), 1)
    return (chosen * y[None, :]).sum(1) / count
  onehot = jax.nn.one_hot(y, num_classes)
  votes = chosen.astype(jnp.float32) @ onehot
  nearest = ((rank == 0) & allowed).astype(jnp.float32) @ onehot
  return votes + 0.5 * nearest  # A vote count never ties with +0.5; the nearest breaks ties.


@classical.CLASSICAL.register("knn1", targets=("classes", "values"))
def knn1(x, y, *, num_classes: int):
  return _knn(x, y, lambda t: jnp.ones_like(t), num_classes)


@classical.CLASSICAL.register("knn_sqrt", targets=("classes", "values"))
def knn_sqrt(x, y, *, num_classes: int):
  return _knn(x, y, lambda t: jnp.maximum(jnp.floor(jnp.sqrt(t.astype(jnp.float32))), 1)
              .astype(jnp.int32), num_classes)
