"""Classical learners on exactly the sequences an in-context learner sees.

Each entry is one file that registers a causal predictor under a name:

    @CLASSICAL.register("knn1", targets=("classes", "values"))
    def knn1(x, y, *, num_classes): ...   # x [L, D], y [L] -> [L, C] scores or [L] values

where position t's prediction uses only the examples before it ((x_i, y_i), i < t)
and x_t, as every GPICL learner's. Integer `y` are class labels (scores over
`num_classes`; position 0, no context, scores all zero); real `y` are values
(`num_classes` = 1; no context predicts 0). `predict` maps one over a batch of
sequences; `score` turns predictions into accuracy or normalised squared error.

Registered (hyper-parameters are scikit-learn's defaults unless said; each has a
parity test against scikit-learn, tests/test_classical.py):
  knn1            1-nearest neighbour (Euclidean)
  knn_sqrt        k-nearest neighbours with k = ⌊√t⌋ (majority vote / mean)
  logistic        multinomial logistic regression, L2, C = 1 (classes)
  ridge           ridge regression, α = 1 (classes: one-vs-all ±1 targets, as RidgeClassifier)
  least_squares   minimum-norm least squares, no intercept (values)
  lasso           Lasso, α = 0.01, no intercept (values)
  sgd             GPICL's online-Adam SGD learner (models/learned_algorithms.py), untrained
Bayes-optimal predictors need the prior, so the task families provide them
(`research.families.EvalSet.oracles`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from models.registry import Registry

CLASSICAL = Registry("classical learner", ("research.classical",),
                     config_key="config.eval.classical")


def supports(name: str, target: str) -> bool:
  return target in CLASSICAL.get(name).meta.get("targets", ())


def predict(fn, x, y, *, num_classes: int, batch_size: int = 32):
  """`fn(x_i, y_i, num_classes=...)` over sequences (x [n, L, D], y [n, L]), a few at a
  time (bounded memory: an oracle over a pool of 2^15 tasks holds [L, 2^15] each)."""
  one = lambda xy: fn(xy[0], xy[1], num_classes=num_classes)
  return jax.lax.map(one, (x, y), batch_size=min(batch_size, x.shape[0]))


@functools.cache
def predict_fn(name: str, num_classes: int):
  """`predict` of the registered learner `name`, jitted once per process: later runs of
  the same shapes in one process (a sweep, a notebook) neither trace nor compile it again."""
  fn = CLASSICAL.get(name).obj
  return jax.jit(lambda x, y: predict(fn, x, y, num_classes=num_classes))


def score(pred, y, y_var=1.0):
  """Per-position score [n, L]: accuracy (labels) or squared error / y_var (values)."""
  if jnp.issubdtype(y.dtype, jnp.floating):
    pred = pred[..., 0] if pred.ndim == y.ndim + 1 else pred
    return jnp.square(pred - y) / y_var
  return (jnp.argmax(pred, -1) == y).astype(jnp.float32)


def before_mask(length: int):
  """[L, L] float: row t marks the examples i < t a prediction at t may use."""
  i = jnp.arange(length)
  return (i[None, :] < i[:, None]).astype(jnp.float32)


def is_values(y) -> bool:
  return jnp.issubdtype(y.dtype, jnp.floating)
