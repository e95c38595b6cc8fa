"""Step-dependent curricula for GPICL meta-training (`config.curriculum`).

Each curriculum moves one property of the training batches from an easy start to
the paper's setting over `curriculum.steps` train steps and then stays there; all
are off by default (start 0). They are pure functions of the (traced) train step,
so the device pipeline (`sample_batch`) and the host pipeline (`host_batch`) draw
the same batches, and a resumed run sees the batches an uninterrupted one would.

  num_tasks_start  task pool grows geometrically from this to `tasks.num_tasks`
                   (few tasks are memorised quickly; the brief's "memorise first").
  classes_start    each training sequence draws its examples from a random subset
                   of this many classes, growing linearly to all classes. With few
                   classes per sequence, copying the labels seen so far already pays
                   (ln C -> ln k) and matching an input to an earlier one pays more
                   often (burstiness, Chan et al. 2022).
  loss_len_start   the loss counts only the first L_t positions of each sequence,
                   L_t growing linearly from this to `data.seq_len` (Garg et al.'s
                   "points" curriculum).
  dim_start        function-class families (research/families/functions.py): only the
                   first d_t input coordinates are non-zero, d_t growing linearly from
                   this to the family's `dim` (Garg et al.'s "dims" curriculum).
  hold_steps       every curriculum stays at its start for this many steps first.

Evaluation always uses the final setting (all classes, all positions, the whole pool).
"""
from __future__ import annotations

import jax.numpy as jnp

KEYS = ("steps", "hold_steps", "num_tasks_start", "classes_start", "loss_len_start", "dim_start")


def ramp(step, start: int, end: int, steps: int, hold: int = 0, geometric: bool = False):
  """int32 value: `start` up to step `hold`, then to `end` at step `hold + steps`.

  Linear, or linear in log space (`geometric`); rounded, and never past `end`.
  """
  frac = jnp.clip((jnp.asarray(step, jnp.float32) - hold) / max(steps, 1), 0.0, 1.0)
  if geometric:
    value = jnp.exp(jnp.log(float(start)) + frac * (jnp.log(float(end)) - jnp.log(float(start))))
  else:
    value = start + frac * (end - start)
  lo, hi = min(start, end), max(start, end)
  return jnp.clip(jnp.round(value), lo, hi).astype(jnp.int32)


def _get(config, name: str) -> int:
  c = config.get("curriculum")
  return 0 if c is None else c.get(name, 0)


def num_tasks(config, step):
  """Size of the task-id pool at `step` (`tasks.num_tasks` without the curriculum)."""
  start, end = _get(config, "num_tasks_start"), config.tasks.num_tasks
  if not start:
    return end
  return ramp(step, start, end, _get(config, "steps"), _get(config, "hold_steps"), geometric=True)


def classes_per_sequence(config, step, num_classes: int):
  """Classes each training sequence draws from at `step`; None = all (no curriculum)."""
  start = _get(config, "classes_start")
  if not start:
    return None
  return ramp(step, start, num_classes, _get(config, "steps"), _get(config, "hold_steps"))


def loss_len(config, step):
  """Number of leading positions the loss counts at `step` (int32)."""
  start, end = _get(config, "loss_len_start"), config.data.seq_len
  if not start:
    return jnp.asarray(end, jnp.int32)
  return ramp(step, start, end, _get(config, "steps"), _get(config, "hold_steps"))


def active_dim(config, step):
  """None (no curriculum), or dim -> the number of active input coordinates at `step`."""
  start = _get(config, "dim_start")
  if not start:
    return None
  return lambda dim: ramp(step, min(start, dim), dim, _get(config, "steps"),
                          _get(config, "hold_steps"))


def end_step(config) -> int:
  """First step at which every curriculum has reached the paper's setting (0 if none is on)."""
  if not any(_get(config, k) for k in KEYS[2:]):
    return 0
  return _get(config, "hold_steps") + _get(config, "steps")


def validate(config, require) -> None:
  """Checks `config.curriculum` (if present) against the data and task settings."""
  c = config.get("curriculum")
  if c is None:
    return
  unknown = sorted(set(c) - set(KEYS))
  require(not unknown, f"config.curriculum has unknown keys {unknown}; known: {list(KEYS)}")
  for k in KEYS:
    v = c.get(k, 0)
    require(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            f"config.curriculum.{k}={v!r} must be a non-negative integer (0 = off)")
  on = [k for k in KEYS[2:] if c.get(k, 0)]
  require(not on or c.get("steps", 0) > 0,
          f"config.curriculum.{on[0] if on else ''} is set but config.curriculum.steps=0; "
          f"set the number of steps over which it reaches the paper's setting")
  start = c.get("num_tasks_start", 0)
  require(start <= config.tasks.num_tasks,
          f"config.curriculum.num_tasks_start={start} exceeds tasks.num_tasks="
          f"{config.tasks.num_tasks}")
  start = c.get("classes_start", 0)
  require(start <= config.data.num_classes,
          f"config.curriculum.classes_start={start} exceeds data.num_classes="
          f"{config.data.num_classes}")
  start = c.get("loss_len_start", 0)
  require(start <= config.data.seq_len,
          f"config.curriculum.loss_len_start={start} exceeds data.seq_len={config.data.seq_len}")
