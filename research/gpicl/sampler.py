"""The GPICL task family: tasks made from a dataset by random projections and
label permutations (Kirsch et al. 2022, Sec. 3).

A task is (A, b, ρ): A ∈ R^{d×d} with entries ~ N(0, σ²), σ = 1/√d by default,
an optional bias b ~ N(0, bias_std²), and a label permutation ρ applied with
probability `permute_prob`. Task `i` is a pure function of (task_seed, i): no
task is ever stored, so the pool size (`num_tasks`, 2^0 … 2^25) is just the
range ids are drawn from. Unseen tasks use ids ≥ UNSEEN_OFFSET = 2^30, disjoint
from every training pool. Each sequence draws fresh base examples every step.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MAX_TASKS = 2**25
UNSEEN_OFFSET = 2**30  # > MAX_TASKS: unseen ids never collide with training ids.


class Task(NamedTuple):
  proj: jax.Array   # [d, d]
  bias: jax.Array   # [d]
  perm: jax.Array   # [C] int32: label c becomes perm[c]


def task_from_id(task_seed, task_id, dim: int, num_classes: int, *, proj_std=None,
                 bias_std: float = 0.0, permute_prob: float = 1.0) -> Task:
  """The task with integer id `task_id` (deterministic)."""
  key = jax.random.fold_in(jax.random.key(task_seed), task_id)
  k_proj, k_bias, k_perm, k_coin = jax.random.split(key, 4)
  std = dim**-0.5 if proj_std is None else proj_std
  proj = std * jax.random.normal(k_proj, (dim, dim))
  bias = bias_std * jax.random.normal(k_bias, (dim,))
  perm = jax.random.permutation(k_perm, num_classes).astype(jnp.int32)
  keep = jax.random.uniform(k_coin) < permute_prob
  perm = jnp.where(keep, perm, jnp.arange(num_classes, dtype=jnp.int32))
  return Task(proj, bias, perm)


def identity_task(dim: int, num_classes: int) -> Task:
  """The unprojected base data, labels unchanged."""
  return Task(jnp.eye(dim), jnp.zeros((dim,)), jnp.arange(num_classes, dtype=jnp.int32))


def sample_task_ids(key, batch: int, num_tasks, bias_fraction: float = 0.0,
                    bias_num_tasks: int = 1):
  """Training ids in [0, num_tasks); a `bias_fraction` of sequences use task 0.

  `num_tasks` may be a traced int (a curriculum over the pool size).

  Returns (ids [B] int32, biased [B] bool). The biased distribution is the
  paper's plateau intervention: a fixed task fills part of every batch. With
  `bias_num_tasks` = k > 1 the biased sequences draw from the k tasks 0..k-1
  instead (an extension: a model can memorise one task without reading its
  context, but must read the context to tell k tasks apart).
  """
  k_id, k_bias = jax.random.split(key)
  ids = jax.random.randint(k_id, (batch,), 0, num_tasks, dtype=jnp.int32)
  biased = jax.random.uniform(k_bias, (batch,)) < bias_fraction
  if bias_num_tasks == 1:  # The paper's task 0 (and the same keys as before the option).
    return jnp.where(biased, 0, ids), biased
  small = jax.random.randint(jax.random.fold_in(key, 1), (batch,), 0, bias_num_tasks,
                             dtype=jnp.int32)
  return jnp.where(biased, small, ids), biased


def sample_unseen_ids(key, batch: int):
  """Ids ≥ UNSEEN_OFFSET: tasks no training run can have sampled."""
  return UNSEEN_OFFSET + jax.random.randint(key, (batch,), 0, 2**30 - 1, dtype=jnp.int32)


def distinct_ints(key, n, k: int):
  """k distinct ints drawn uniformly from [0, n), in uniformly random order.

  Floyd's algorithm: for j = n-k .. n-1 draw t in [0, j] and keep t, or j if t was
  already kept. Nothing of size n is built (`jax.random.choice(replace=False)`
  permutes all n per call), so the cost is O(k²) compares whatever the pool size;
  `n` may be traced but must be >= k. Floyd's set is uniform but its order is not
  (late j land late), hence the shuffle of the k.
  """
  k_draw, k_order = jax.random.split(key)
  tops = n - k + 1 + jnp.arange(k, dtype=jnp.int32)  # t_i is uniform in [0, tops_i).
  draws = jax.random.randint(k_draw, (k,), 0, tops, dtype=jnp.int32)

  def add(i, chosen):
    t = draws[i]
    return chosen.at[i].set(jnp.where(jnp.any(chosen == t), tops[i] - 1, t))

  chosen = jax.lax.fori_loop(0, k, add, jnp.full((k,), -1, jnp.int32))
  return jax.random.permutation(k_order, chosen)


def _class_tables(y_pool, num_classes: int):
  """Pool rows grouped by class: (order, start of each class in it, count per class).

  O(n log n), but it depends on the pool only: under `vmap` over sequences it is
  built once per batch, not once per sequence.
  """
  order = jnp.argsort(y_pool, stable=True).astype(jnp.int32)
  counts = jnp.zeros((num_classes,), jnp.int32).at[y_pool].add(1)
  return order, jnp.cumsum(counts) - counts, counts


def sample_examples(key, x_pool, y_pool, seq_len: int, classes=None, num_classes: int = 0):
  """`seq_len` fresh base examples: without replacement when the pool allows.

  Every ordered choice of `seq_len` distinct rows is equally likely, and the
  per-sequence cost does not grow with the pool (`distinct_ints`).
  `classes` (optional, int, may be traced): draw only from a random subset of
  that many of the pool's `num_classes` classes (a curriculum; the subset's
  examples must number at least `seq_len`), uniformly over the subset's rows.
  """
  n = x_pool.shape[0]
  if classes is None:
    if n < seq_len:
      idx = jax.random.randint(key, (seq_len,), 0, n, dtype=jnp.int32)
    else:
      idx = distinct_ints(key, n, seq_len)
    return x_pool[idx], y_pool[idx]
  k_classes, k_idx = jax.random.split(key)
  order, starts, counts = _class_tables(y_pool, num_classes)
  rank = jax.random.permutation(k_classes, num_classes)  # Class c is kept iff rank[c] < classes.
  kept = jnp.where(rank < classes, counts, 0)
  kept_end = jnp.cumsum(kept)
  # Number the kept classes' rows 0..m-1 (class by class), draw from that range,
  # and map each number back to its class and row.
  v = distinct_ints(k_idx, kept_end[-1], seq_len)
  c = jnp.searchsorted(kept_end, v, side="right")
  idx = order[starts[c] + v - (kept_end[c] - kept[c])]
  return x_pool[idx], y_pool[idx]


def apply_task(task: Task, x, y):
  return x @ task.proj + task.bias, task.perm[y]


def make_sequences(key, ids, x_pool, y_pool, seq_len: int, num_classes: int, *,
                   task_seed=0, proj_std=None, bias_std=0.0, permute_prob=1.0, proj_ids=None,
                   classes=None):
  """One sequence per id: fresh examples from the pool, transformed by task `id`.

  `proj_ids` (optional, [B]) takes the projection and bias from another task
  than the permutation: sequences that share a projection differ only in their
  labels, so nothing but the context tells them apart. `classes`: see
  `sample_examples`.
  """
  dim = x_pool.shape[1]
  kw = dict(proj_std=proj_std, bias_std=bias_std, permute_prob=permute_prob)

  def one(k, task_id, proj_id):
    x, y = sample_examples(k, x_pool, y_pool, seq_len, classes, num_classes)
    task = task_from_id(task_seed, task_id, dim, num_classes, **kw)
    if proj_ids is not None:
      proj = task_from_id(task_seed, proj_id, dim, num_classes, **kw)
      task = Task(proj.proj, proj.bias, task.perm)
    return apply_task(task, x, y)

  keys = jax.random.split(key, ids.shape[0])
  return jax.vmap(one)(keys, ids, ids if proj_ids is None else proj_ids)


def make_grouped_sequences(key, ids, per_task: int, x_pool, y_pool, seq_len: int,
                           num_classes: int, *, task_seed=0, proj_std=None, bias_std=0.0,
                           permute_prob=1.0, classes=None):
  """`per_task` sequences for each of the G ids (the paper's 16 tasks × 32
  sequences per batch): each task's d×d projection is built once, not once per
  sequence, which is what makes 32×32×3 inputs affordable. Returns [G·per_task, L, ·].
  """
  dim, groups = x_pool.shape[1], ids.shape[0]
  tasks = jax.vmap(lambda i: task_from_id(task_seed, i, dim, num_classes, proj_std=proj_std,
                                          bias_std=bias_std, permute_prob=permute_prob))(ids)
  keys = jax.random.split(key, groups * per_task).reshape(groups, per_task)
  x, y = jax.vmap(jax.vmap(
      lambda k: sample_examples(k, x_pool, y_pool, seq_len, classes, num_classes)))(keys)
  x = jnp.einsum("gsld,gde->gsle", x, tasks.proj) + tasks.bias[:, None, None, :]
  y = jax.vmap(lambda perm, labels: perm[labels])(tasks.perm, y)
  return x.reshape(groups * per_task, seq_len, dim), y.reshape(groups * per_task, seq_len)


def make_identity_sequences(key, batch: int, x_pool, y_pool, seq_len: int):
  """Unprojected, unpermuted sequences of the base data."""
  keys = jax.random.split(key, batch)
  return jax.vmap(lambda k: sample_examples(k, x_pool, y_pool, seq_len))(keys)
