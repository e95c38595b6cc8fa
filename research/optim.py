"""Optimizers from config: `config.optimizer` names an optax optimizer and its
hyper-parameters; `config.schedule` a learning-rate schedule."""
from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")


def make_schedule(config):
  s, lr, steps = config.schedule, config.optimizer.learning_rate, config.train.num_steps
  warmup = s.get("warmup_steps", 0)
  if s.name == "constant":
    return optax.constant_schedule(lr) if not warmup else optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  if s.name == "cosine":
    return optax.cosine_decay_schedule(lr, steps, alpha=s.get("final_fraction", 0.0))
  if s.name == "linear":
    return optax.linear_schedule(lr, lr * s.get("final_fraction", 0.0), steps)
  if s.name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), steps,
                                              end_value=lr * s.get("final_fraction", 0.0))
  raise ValueError(f"config.schedule.name={s.name!r} unknown; use one of {SCHEDULES}")


def make_optimizer(config) -> optax.GradientTransformation:
  o = config.optimizer
  lr = make_schedule(config)
  if o.name == "adam":
    tx = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.name == "adamw":
    tx = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  elif o.name == "sgd":
    tx = optax.sgd(lr, momentum=o.get("momentum", 0.0) or None)
  else:
    raise ValueError(f"config.optimizer.name={o.name!r} unknown; use one of {OPTIMIZERS}")
  if o.get("grad_clip", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  return tx
