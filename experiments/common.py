"""Helpers shared by experiment configs (configs import only ml_collections)."""
from __future__ import annotations

import ast

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses the `:arg` of `--config path.py:arg` into typed options.

  `"tiny"` sets a flag; `"num_tasks=4096,layout=paper"` sets values (Python
  literals, else strings). Only names given in `defaults` are accepted, so a typo
  fails loudly instead of being ignored.
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, eq, value = part.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"config arg {key!r} unknown; this config accepts {sorted(defaults)}")
    if not eq:
      out[key] = True
      continue
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return ml_collections.ConfigDict(out)


def family_train(c, *, num_steps: int, batch_size: int, num_seeds: int, tiny: bool,
                 tiny_steps: int = 0, tiny_classical=("knn1",)) -> None:
  """The train and eval settings shared by the task-family reproductions (Garg,
  Raventós, Chan): seeds vmapped in one step, 10 updates per call, and their `:tiny`
  form (2 seeds, 8 sequences, one cheap classical learner)."""
  c.train.update(num_steps=num_steps, batch_size=batch_size, num_seeds=num_seeds,
                 steps_per_call=10, log_every=100, eval_every=1000, checkpoint_every=1000,
                 tensorboard=False)
  if tiny:
    tiny_train(c, num_steps=tiny_steps or 4, batch_size=8)
    c.train.num_seeds = 2
    c.eval.num_sequences = 8
    c.eval.classical = tuple(tiny_classical)


def tiny_train(c, *, num_steps: int, batch_size: int, log_every: int = 2,
               eval_every: int = 3) -> None:
  """The train settings of every config's `:tiny` variant (tests)."""
  c.train.update(num_steps=num_steps, batch_size=batch_size, log_every=log_every,
                 eval_every=eval_every, checkpoint_every=eval_every, tensorboard=False,
                 progress=False)
