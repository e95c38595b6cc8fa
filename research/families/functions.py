"""Function-class families (Garg et al. 2022): sequences (x_i, f(x_i)) for a random f.

Shared by `linear_regression`, `sparse_linear_regression`, `decision_tree` and
`relu_net`, each one file that registers itself with `register(...)` below and
supplies how a function is drawn (`draw(key, dim, active_dim, outputs, section)`)
and applied (`apply(params, x [L, dim]) -> [L, outputs]`).

Inputs x ~ N(0, I_d) (d = `dim`, zero-padded to data.input_dim). With the input
curriculum (`config.curriculum.dim_start`, Garg's "dims" curriculum) only the first
d_t coordinates are non-zero. Targets: f(x) + N(0, noise_std²) for
`num_classes` = 0, else the label argmax of `num_classes` outputs of f (a
classification version of the class, e.g. multi-class linear classification).

Tasks: a fresh function for every sequence (`num_tasks` = 0, Garg), or a pool of
`num_tasks` functions, function i a pure function of (task_seed, i) (Raventós et
al. 2023's finite task diversity).

Evaluation sets (fixed keys), for a family registered as NAME:
  NAME          fresh functions from the prior (for a pool: tasks never trained on)
  NAME/pool     tasks of the training pool (num_tasks > 0)
  NAME/skewed   x ~ N(0, Σ), Σ with a random eigenbasis and eigenvalues ∝ 1/i², trace d
  NAME/scaled   x scaled by `shift_scale`
the last two only when listed in `eval_shifts`. Squared errors are divided by the
prior variance of the target on that set (1.0 = predicting 0).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research import families as families_lib
from research.errors import ConfigError, require

SHIFTS = ("skewed", "scaled")


def common_defaults(dim: int = 8) -> dict:
  """The keys every function-class family has."""
  return dict(
      dim=dim,                  # Input dimension d (zero-padded to data.input_dim).
      num_classes=0,            # 0: real-valued targets (regression); k >= 2: label = argmax of k outputs.
      noise_std=0.0,            # Std of Gaussian noise added to real-valued targets.
      num_tasks=0,              # 0: a fresh function per sequence; k > 0: a pool of k functions.
      task_seed=0,              # Pool function i is a pure function of (task_seed, i).
      eval_shifts=(),           # Extra evaluation sets with shifted inputs: of ("skewed", "scaled").
      shift_scale=2.0,          # Input scale of the "scaled" evaluation set.
  )


def skewed_inputs(key, n: int, length: int, dim: int):
  """x ~ N(0, Σ): per sequence a random orthogonal eigenbasis, eigenvalues ∝ 1/i², trace d."""
  k_rot, k_x = jax.random.split(key)
  eig = 1.0 / jnp.arange(1, dim + 1, dtype=jnp.float32) ** 2
  eig = eig * dim / eig.sum()
  q = jax.vmap(lambda k: jnp.linalg.qr(jax.random.normal(k, (dim, dim)))[0])(
      jax.random.split(k_rot, n))
  z = jax.random.normal(k_x, (n, length, dim)) * jnp.sqrt(eig)
  return jnp.einsum("nld,ned->nle", z, q)


def register(name: str, *, defaults: Callable[[], dict], draw, apply, y_var,
             oracles=None, validate=None):
  """Registers function-class family `name`.

  draw(key, dim, active_dim, outputs, section) -> params of one function;
  apply(params, x [L, dim]) -> [L, outputs]; y_var(dim, section) -> prior variance of
  a real target (dim may be traced); oracles(section, pool) -> {name: (arrays, x, y)
  -> predictions} for real targets (Bayes-optimal predictors), optional;
  validate(section, require), optional.
  """

  @families_lib.FAMILIES.register(name, defaults=defaults)
  def build(config, spec) -> families_lib.Family:
    s = families_lib.section(config, name)
    _check(config, s, name)
    if validate is not None:
      validate(s, require)
    dim, outputs = s.dim, max(s.num_classes, 1)
    values = s.num_classes == 0
    length, input_dim = config.data.seq_len, config.data.input_dim

    def task_of_id(i, active=dim):
      return draw(jax.random.fold_in(jax.random.key(s.task_seed), i), dim, active, outputs, s)

    def make(key, n, x, active, pool_tasks: bool, num_tasks: int):
      k_task, k_noise = jax.random.split(key)
      if pool_tasks:
        ids = jax.random.randint(k_task, (n,), 0, num_tasks)
        params = jax.vmap(lambda i: task_of_id(i, active))(ids)
      else:
        params = jax.vmap(lambda k: draw(k, dim, active, outputs, s))(jax.random.split(k_task, n))
      out = jax.vmap(apply)(params, x)
      if values:
        y = out[..., 0] + s.noise_std * jax.random.normal(k_noise, out.shape[:-1])
      else:
        y = jnp.argmax(out, -1).astype(jnp.int32)
      pad = jnp.pad(x, ((0, 0), (0, 0), (0, input_dim - dim)))
      return {"x": pad.astype(jnp.float32), "y": y}

    def sample(pool, key, n, step, active_dim=None):
      del pool, step
      k_x, k_rest = jax.random.split(key)
      active = dim if active_dim is None else active_dim(dim)
      x = jax.random.normal(k_x, (n, length, dim)) * (jnp.arange(dim) < active)
      batch = make(k_rest, n, x, active, s.num_tasks > 0, s.num_tasks)
      if values:
        batch["y_var"] = jnp.full((n,), y_var(active, s), jnp.float32)
      return batch

    def eval_sets(seed: int) -> dict:
      base_var = float(y_var(dim, s))
      pool = (jax.vmap(task_of_id)(jnp.arange(s.num_tasks)) if s.num_tasks and oracles
              else ())
      orc = oracles(s, pool) if (oracles is not None and values) else {}
      chance = 1.0 if values else 1.0 / outputs

      def one(kind, shift=""):
        def fn(arrays, key, n):
          del arrays
          k_x, k_rest = jax.random.split(key)
          if shift == "skewed":
            x = skewed_inputs(k_x, n, length, dim)
          else:
            x = jax.random.normal(k_x, (n, length, dim))
            x = x * (s.shift_scale if shift == "scaled" else 1.0)
          return make(k_rest, n, x, dim, kind == "pool", s.num_tasks)
        set_name = name + (f"/{kind}" if kind == "pool" else "") + (f"/{shift}" if shift else "")
        scale = s.shift_scale ** 2 if shift == "scaled" else 1.0
        return set_name, families_lib.EvalSet(
            fn, families_lib.set_key(seed, set_name), arrays=pool, chance=chance,
            oracles=orc, y_var=base_var * scale)

      sets = dict([one("prior")])
      if s.num_tasks:
        sets.update([one("pool")])
      for shift in s.eval_shifts:
        sets.update([one("prior", shift)])
      return sets

    return families_lib.Family(name, "values" if values else "classes", outputs, sample,
                               eval_sets=eval_sets, dim=dim,
                               info={"num_tasks": s.num_tasks or "fresh"})

  return build


def _check(config, s, name: str) -> None:
  where = f"config.families.{name}"
  require(isinstance(s.dim, int) and 1 <= s.dim <= config.data.input_dim,
          f"{where}.dim={s.dim} must be an integer in [1, data.input_dim={config.data.input_dim}]")
  require(s.num_classes == 0 or 2 <= s.num_classes,
          f"{where}.num_classes={s.num_classes}: 0 (real targets) or at least 2 classes")
  require(s.num_tasks >= 0, f"{where}.num_tasks={s.num_tasks} must be >= 0 (0 = fresh tasks)")
  require(s.noise_std >= 0, f"{where}.noise_std={s.noise_std} must be >= 0")
  unknown = sorted(set(s.eval_shifts) - set(SHIFTS))
  require(not unknown, f"{where}.eval_shifts has unknown shifts {unknown}; use some of {SHIFTS}")
