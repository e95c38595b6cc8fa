"""Gaussian class clusters in a random low-dimensional subspace: the classic synthetic
few-shot classification task (a prototype per class, examples scattered around it).

Per sequence: k classes (uniform in [min_classes, num_classes]) carrying a random
subset of the `num_classes` labels; an intrinsic dimension m (log-uniform in
[dim_min, dim_max]); class centres ~ N(0, s² I_m) with the separation s uniform in
[separation_min, separation_max]; examples centre + N(0, I_m), scaled to unit variance
per coordinate, then embedded in data.input_dim dimensions by a random N(0, 1/D)
matrix (as a GPICL task embeds a z-normalised table). Evaluation set "clusters".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import families as families_lib
from research.errors import require


def defaults() -> dict:
  return dict(
      num_classes=10,           # Label set; each sequence uses a random subset of it.
      min_classes=2,            # Fewest classes in a sequence.
      dim_min=2,                # Intrinsic dimension, log-uniform in [dim_min, dim_max].
      dim_max=16,
      separation_min=0.5,       # Std of the class centres (the noise has std 1), uniform in
      separation_max=3.0,       # [separation_min, separation_max].
  )


@families_lib.FAMILIES.register("clusters", defaults=defaults)
def build(config, spec) -> families_lib.Family:
  del spec
  s = families_lib.section(config, "clusters")
  where = "config.families.clusters"
  big, length = config.data.input_dim, config.data.seq_len
  require(2 <= s.min_classes <= s.num_classes, f"{where}: need 2 <= min_classes="
          f"{s.min_classes} <= num_classes={s.num_classes}")
  require(1 <= s.dim_min <= s.dim_max <= big, f"{where}: need 1 <= dim_min={s.dim_min} <= "
          f"dim_max={s.dim_max} <= data.input_dim={big}")
  require(0 < s.separation_min <= s.separation_max, f"{where}: need 0 < separation_min <= "
          f"separation_max")

  def one(key):
    k_cls, k_lab, k_dim, k_sep, k_mu, k_y, k_x, k_emb = jax.random.split(key, 8)
    k = jax.random.randint(k_cls, (), s.min_classes, s.num_classes + 1)
    labels = jax.random.permutation(k_lab, s.num_classes)         # Labels of classes 0..k-1.
    m = jnp.floor(jnp.exp(jax.random.uniform(k_dim, (), minval=jnp.log(s.dim_min),
                                             maxval=jnp.log(s.dim_max + 1.0)))).astype(jnp.int32)
    active = (jnp.arange(s.dim_max) < m).astype(jnp.float32)
    sep = jax.random.uniform(k_sep, (), minval=s.separation_min, maxval=s.separation_max)
    centres = sep * jax.random.normal(k_mu, (s.num_classes, s.dim_max))
    cls = jax.random.randint(k_y, (length,), 0, k)
    z = (centres[cls] + jax.random.normal(k_x, (length, s.dim_max))) / jnp.sqrt(1 + sep ** 2)
    embed = jax.random.normal(k_emb, (s.dim_max, big)) / jnp.sqrt(big)
    return (z * active) @ embed, labels[cls].astype(jnp.int32)

  def sample(pool, key, n, step, active_dim=None):
    del pool, step, active_dim
    x, y = jax.vmap(one)(jax.random.split(key, n))
    return {"x": x, "y": y}

  def eval_sets(seed: int) -> dict:
    fn = lambda arrays, key, n: sample((), key, n, 0)
    return {"clusters": families_lib.EvalSet(fn, families_lib.set_key(seed, "clusters"),
                                             chance=1.0 / s.num_classes)}

  return families_lib.Family("clusters", "classes", s.num_classes, sample, eval_sets=eval_sets)
