"""Lasso on the context (values): min_w 1/(2t) Σ_{i<t} (y_i - w·x_i)² + α |w|_1, no
intercept (scikit-learn's Lasso(alpha, fit_intercept=False) objective), α = 0.01,
solved per prefix by 300 steps of FISTA (accelerated proximal gradient) with the step
1/λ_max(XᵀX / t) from 30 power iterations."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import classical

ALPHA = 0.01
STEPS = 300


def lasso_fit(x, y, mask, alpha: float = ALPHA, steps: int = STEPS):
  n = jnp.maximum(mask.sum(), 1.0)
  xm = x * mask[:, None]
  gram, xty = xm.T @ xm / n, xm.T @ (y * mask) / n
  v = jnp.ones((x.shape[1],)) / jnp.sqrt(x.shape[1])
  for _ in range(30):  # Power iteration for the Lipschitz constant.
    v = gram @ v
    v = v / jnp.maximum(jnp.linalg.norm(v), 1e-12)
  step = 1.0 / jnp.maximum(v @ gram @ v, 1e-6)
  soft = lambda z, t: jnp.sign(z) * jnp.maximum(jnp.abs(z) - t, 0.0)

  def body(_, carry):
    w, z, tk = carry
    w_new = soft(z - step * (gram @ z - xty), step * alpha)
    t_new = (1 + jnp.sqrt(1 + 4 * tk * tk)) / 2
    return w_new, w_new + (tk - 1) / t_new * (w_new - w), t_new

  w0 = jnp.zeros((x.shape[1],))
  return jax.lax.fori_loop(0, steps, body, (w0, w0, jnp.ones(())))[0]


@classical.CLASSICAL.register("lasso", targets=("values",))
def lasso(x, y, *, num_classes: int):
  del num_classes
  m = classical.before_mask(x.shape[0])
  return jax.vmap(lambda mask_t, x_t: x_t @ lasso_fit(x, y, mask_t))(m, x)
