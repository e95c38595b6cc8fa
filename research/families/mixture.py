"""A mixture of task families in fixed proportions (`config.families.mixture`).

Each training batch holds round(weight · batch) sequences of every component (the
last component takes the rounding remainder), each sampled by its own family from its
own key; components are "name" or "name@dataset" (`projection@mnist1d`: the GPICL
tasks on another dataset). All components must share one kind of target and the
sequence shape (data.seq_len, data.input_dim). The evaluation sets are every
component's (names must not clash).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research import families as families_lib
from research.errors import ConfigError, require


def defaults() -> dict:
  return dict(
      components=("projection",),  # Families mixed: "name" or "name@dataset".
      weights=(1.0,),               # Their shares of every batch (normalised).
  )


def counts(weights, n: int) -> list[int]:
  total = float(sum(weights))
  out = [int(round(w / total * n)) for w in weights[:-1]]
  return out + [n - sum(out)]


@families_lib.FAMILIES.register("mixture", defaults=defaults)
def build(config, spec) -> families_lib.Family:
  del spec
  s = config.families.mixture
  where = "config.families.mixture"
  require(len(s.components) >= 1 and len(s.components) == len(s.weights),
          f"{where}: components {tuple(s.components)} and weights {tuple(s.weights)} must be "
          f"non-empty and of the same length")
  require(all(w > 0 for w in s.weights), f"{where}.weights={tuple(s.weights)} must be > 0")
  require(not any(c.partition("@")[0] == "mixture" for c in s.components),
          f"{where}.components cannot contain a mixture")
  parts = [families_lib.build(config, c) for c in s.components]
  targets = {p.target for p in parts}
  require(len(targets) == 1, f"{where}.components mix targets {sorted(targets)}; a mixture "
          f"needs one kind of target (class labels or real values)")
  sizes = counts(list(s.weights), config.train.batch_size)
  require(min(sizes) > 0, f"{where}.weights={tuple(s.weights)} leave a component with no "
          f"sequence in a batch of {config.train.batch_size}")
  length = config.data.seq_len

  def sample(pool, key, n, step, active_dim=None):
    rows = counts(list(s.weights), n)
    out = []
    for i, (part, m) in enumerate(zip(parts, rows)):
      if m:
        b = part.sample(pool[i], jax.random.fold_in(key, i), m, step, active_dim)
        out.append(families_lib.complete(b, m, length))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *out)

  def eval_sets(seed: int) -> dict:
    sets = {}
    for part in parts:
      for name, es in part.eval_sets(seed).items():
        if name in sets:
          raise ConfigError(f"{where}: two components have an evaluation set {name!r}; mix "
                            f"families whose sets differ")
        sets[name] = es
    return sets

  return families_lib.Family("mixture", parts[0].target, max(p.num_outputs for p in parts),
                             sample, pool=tuple(p.pool for p in parts), eval_sets=eval_sets,
                             info={"components": dict(zip(s.components, sizes))})
