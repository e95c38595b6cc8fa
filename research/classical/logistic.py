"""Multinomial logistic regression on the context (classes): scikit-learn's
LogisticRegression() objective, 1/2 |W|² + C Σ_{i<t} CE(W x_i + b, y_i) with C = 1 and
an unpenalised intercept, fitted for every prefix.

Solver: the prefixes are fitted in order, each warm-started from the previous one's
solution (one example more changes it little), by `STEPS` steps of accelerated
gradient descent (FISTA momentum) with step 1/L, L = 1 + C/2 · λ_max([X 1]ᵀ[X 1])
(a softmax cross-entropy's curvature is at most 1/2), λ_max bounded above by
Gershgorin's theorem on the Gram matrix [X 1][X 1]ᵀ (a bound that is never too
small, so the steps never diverge). The parity test (tests/test_classical.py) checks its predictions
against scikit-learn's lbfgs fits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import classical

C = 1.0
STEPS = 60


def _fit(xt, onehot, mask, w):
  """One prefix: `STEPS` accelerated steps from w ([D+1, K], bias last). Classes absent
  from the prefix take no part (scikit-learn fits the classes it is given)."""
  xm = xt * mask[:, None]
  # The intercept's feature at the inputs' scale (a preconditioner: the optimum is the
  # same, the unpenalised direction converges as fast as the others).
  scale = jnp.sqrt((xm[:, :-1] ** 2).sum() / jnp.maximum(mask.sum(), 1.0)) + 1e-6
  xt = xt.at[:, -1].multiply(scale)
  xm = xt * mask[:, None]
  absent = ((onehot * mask[:, None]).sum(0) == 0) * -1e9
  lip = 1.0 + 0.5 * C * jnp.abs(xm @ xm.T).sum(1).max()
  reg = jnp.ones((xt.shape[1], 1)).at[-1].set(0.0)  # No penalty on the intercept.

  def grad(w):
    p = jax.nn.softmax(xt @ w + absent)
    return reg * w + C * xm.T @ ((p - onehot) * mask[:, None])

  def body(_, carry):
    w, z, tk = carry
    w_new = z - grad(z) / lip
    t_new = (1 + jnp.sqrt(1 + 4 * tk * tk)) / 2
    return w_new, w_new + (tk - 1) / t_new * (w_new - w), t_new

  w = w.at[-1].divide(scale)
  w = jax.lax.fori_loop(0, STEPS, body, (w, w, jnp.ones(())))[0]
  return w.at[-1].multiply(scale)


@classical.CLASSICAL.register("logistic", targets=("classes",))
def logistic(x, y, *, num_classes: int):
  length = x.shape[0]
  xt = jnp.concatenate([x, jnp.ones((length, 1), x.dtype)], -1)
  onehot = jax.nn.one_hot(y, num_classes)
  m = classical.before_mask(length)

  def step(w, t):
    w = _fit(xt, onehot, m[t], w)
    seen = (onehot * m[t][:, None]).sum(0) > 0
    return w, jnp.where(seen, xt[t] @ w, -1e9)  # Only classes of the context are predicted.

  _, scores = jax.lax.scan(step, jnp.zeros((xt.shape[1], num_classes)), jnp.arange(length))
  return scores * (jnp.arange(length) > 0)[:, None]  # No context: no prediction.
