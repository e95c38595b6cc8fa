"""Optimizers and learning-rate schedules by name (`config.optimizer`, `config.schedule`).

An optimizer is one registered function `(optimizer config, learning rate or
schedule) -> optax.GradientTransformation` that declares its own hyper-parameters
and their defaults; the config's optimizer section holds every registered
optimizer's keys (`research.config.optimizer_section`), so switching with
`--config.optimizer.name=...` needs no other edit. Gradient clipping and weight
decay are shared keys applied around any optimizer.
"""
from __future__ import annotations

import optax

from models.registry import Registry

OPTIMIZERS = Registry("optimizer", ("research.optimizers",), config_key="config.optimizer.name")
SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")

# Keys every optimizer section has, with their meaning.
SHARED_KEYS = {
    "learning_rate": 1e-3,   # Peak learning rate (the schedule scales it).
    "grad_clip": 0.0,        # > 0: clip the global gradient norm to this first.
    "weight_decay": 0.0,     # Decoupled weight decay (AdamW-style) where the optimizer has it.
}


def make_schedule(config):
  s, lr, steps = config.schedule, config.optimizer.learning_rate, config.train.num_steps
  warmup, final = s.warmup_steps, lr * s.final_fraction
  if s.name == "constant":
    return optax.constant_schedule(lr) if not warmup else optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  if s.name == "cosine":
    return optax.cosine_decay_schedule(lr, steps, alpha=s.final_fraction)
  if s.name == "linear":
    return optax.linear_schedule(lr, final, steps)
  if s.name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), steps, end_value=final)
  raise ValueError(f"config.schedule.name={s.name!r} unknown; use one of {SCHEDULES}")


def make_optimizer(config) -> optax.GradientTransformation:
  o = config.optimizer
  tx = OPTIMIZERS.get(o.name).obj(o, make_schedule(config))
  if o.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  return tx
