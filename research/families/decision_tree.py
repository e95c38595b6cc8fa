"""Decision trees in context (Garg et al. 2022): a full binary tree of `depth`
levels; each internal node tests the sign of one input coordinate (uniform over the
active ones), each leaf holds a value ~ N(0, 1) (or `num_classes` values: the label
is their argmax, a uniformly random class per leaf).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.families import functions


def defaults() -> dict:
  return dict(functions.common_defaults(dim=8),
              depth=4)                  # Levels of tests (Garg: 4, so 16 leaves).


def draw(key, dim, active_dim, outputs, section):
  del dim
  k_feat, k_leaf = jax.random.split(key)
  nodes, leaves = 2 ** section.depth - 1, 2 ** section.depth
  feature = jax.random.randint(k_feat, (nodes,), 0, active_dim)
  return {"feature": feature, "leaf": jax.random.normal(k_leaf, (leaves, outputs))}


def apply(tree, x):
  depth = (tree["feature"].shape[0] + 1).bit_length() - 1

  def one(xi):
    node = jnp.zeros((), jnp.int32)
    for _ in range(depth):  # Left child 2i+1 if x[f] <= 0, right child 2i+2.
      node = 2 * node + 1 + (xi[tree["feature"][node]] > 0).astype(jnp.int32)
    return tree["leaf"][node - (2 ** depth - 1)]

  return jax.vmap(one)(x)


def y_var(dim, section):
  del dim, section
  return 1.0


def validate(section, require):
  require(1 <= section.depth <= 8,
          f"config.families.decision_tree.depth={section.depth} must be in [1, 8]")


build = functions.register("decision_tree", defaults=defaults, draw=draw, apply=apply,
                           y_var=y_var, validate=validate)
