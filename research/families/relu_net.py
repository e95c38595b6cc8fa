"""2-layer ReLU networks in context (Garg et al. 2022): f(x) = Σ_i a_i relu(w_i·x)
with `hidden` units, w_i ~ N(0, I_d), a_i ~ N(0, 2/hidden), so Var f(x) = d.
Classes (`num_classes` ≥ 2): that many outputs (a ∈ R^{hidden×C}), label = argmax.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.families import functions


def defaults() -> dict:
  return dict(functions.common_defaults(dim=8),
              hidden=100)               # Hidden ReLU units (Garg: 100).


def draw(key, dim, active_dim, outputs, section):
  del active_dim
  k_w, k_a = jax.random.split(key)
  w = jax.random.normal(k_w, (dim, section.hidden))
  a = jax.random.normal(k_a, (section.hidden, outputs)) * jnp.sqrt(2.0 / section.hidden)
  return {"w": w, "a": a}


def apply(net, x):
  return jax.nn.relu(x @ net["w"]) @ net["a"]


def y_var(dim, section):
  del section
  return dim


def validate(section, require):
  require(section.hidden >= 1, f"config.families.relu_net.hidden={section.hidden} must be >= 1")


build = functions.register("relu_net", defaults=defaults, draw=draw, apply=apply, y_var=y_var,
                           validate=validate)
