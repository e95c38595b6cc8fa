"""Sparse linear regression in context (Garg et al. 2022): y = w·x with only
`sparsity` of the d coordinates of w non-zero (chosen uniformly; values N(0, 1)).
Lasso (research/classical/lasso.py) is the classical learner that uses the
sparsity; least squares ignores it. Classes (`num_classes` ≥ 2): argmax of W x for a
W whose rows share one random support.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.families import functions


def defaults() -> dict:
  return dict(functions.common_defaults(dim=10),
              sparsity=3)               # Non-zero coordinates of w (Garg: 3 of 20).


def draw(key, dim, active_dim, outputs, section):
  k_support, k_w = jax.random.split(key)
  # The `sparsity` active coordinates with the smallest random keys form the support.
  rank = jax.random.uniform(k_support, (dim,)) + (jnp.arange(dim) >= active_dim)
  keep = jnp.argsort(jnp.argsort(rank)) < section.sparsity
  return jax.random.normal(k_w, (dim, outputs)) * keep[:, None]


def apply(w, x):
  return x @ w


def y_var(dim, section):
  del dim
  return section.sparsity


def validate(section, require):
  require(1 <= section.sparsity <= section.dim,
          f"config.families.sparse_linear_regression.sparsity={section.sparsity} must be in "
          f"[1, dim={section.dim}]")


build = functions.register("sparse_linear_regression", defaults=defaults, draw=draw,
                           apply=apply, y_var=y_var, validate=validate)
