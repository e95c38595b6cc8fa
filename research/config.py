"""Config checks that run before anything compiles.

`ml_collections` already rejects unknown keys and wrong types on a locked config
(`--config.modle.d=3` fails); these checks cover values: sizes, names, the mesh
against the devices, the batch against the data axis, the workdir. Each error
names the key and the fix.
"""
from __future__ import annotations

import json
import os
from typing import Any

from research import optim


class ConfigError(ValueError):
  pass


def require(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def check_positive(config, *keys: str) -> None:
  for key in keys:
    value = config
    for part in key.split("."):
      value = value[part]
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
            f"config.{key} must be a positive integer, got {value!r}; set --config.{key}=N with N > 0")


def check_common(config) -> None:
  """Checks every trainer config shares."""
  from research import experiment  # Cycle: experiment -> train -> config.
  known = sorted({*experiment.REGISTRY, *experiment.RUNNERS})
  require(config.task in known, f"config.task={config.task!r} unknown; use one of {known}")
  for key, value in _flatten(config.model.to_dict(), "model.").items():
    if isinstance(value, int) and not isinstance(value, bool):
      require(value > 0, f"config.{key} must be positive, got {value}; set --config.{key}=N with N > 0")
  check_positive(config, "train.num_steps", "train.batch_size", "train.log_every",
                 "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints")
  require(config.optimizer.name in optim.OPTIMIZERS,
          f"config.optimizer.name={config.optimizer.name!r} unknown; use one of {optim.OPTIMIZERS}")
  require(config.schedule.name in optim.SCHEDULES,
          f"config.schedule.name={config.schedule.name!r} unknown; use one of {optim.SCHEDULES}")
  require(config.optimizer.learning_rate > 0,
          f"config.optimizer.learning_rate must be > 0, got {config.optimizer.learning_rate}")
  require(config.optimizer.eps >= 0, f"config.optimizer.eps must be >= 0, got {config.optimizer.eps}")
  require(config.train.grad_accum_steps >= 1 and config.train.batch_size % config.train.grad_accum_steps == 0,
          f"config.train.grad_accum_steps={config.train.grad_accum_steps} must be >= 1 and divide "
          f"config.train.batch_size={config.train.batch_size}")
  require(config.train.on_nonfinite in ("skip", "halt"),
          f"config.train.on_nonfinite={config.train.on_nonfinite!r}; use 'skip' or 'halt'")


def check_workdir(workdir: str) -> None:
  require(bool(workdir), "--workdir is required: the run's checkpoints and metrics go there")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir {workdir!r} cannot be written ({e.strerror}); "
                      f"choose a writable --workdir") from e


def to_json(config) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


# Keys that may change when resuming a run (they do not change the state's shape
# or the batches): extend training, log or checkpoint differently, use another mesh.
RESUMABLE_CHANGES = ("train.num_steps", "train.log_every", "train.eval_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "mesh", "sharding",
                     "train.progress", "peak_flops", "eval.")


def _flatten(d: Any, prefix: str = "") -> dict:
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
  else:
    out[prefix[:-1]] = d
  return out


# Keys added to configs after runs were written with them, and the value the code
# assumed before: a workdir saved without the key resumes if the config keeps it.
ADDED_KEYS = {
    "data.pipeline": "device",          # GPICL: batches sampled inside the step.
    "tasks.sequences_per_task": 1,      # GPICL: one sequence per sampled task.
    "data.pca_dim": 0,                  # GPICL: no PCA.
    "model.pos_init_std": 0.02,         # GPICL transformer: the positional init it had.
    "model.layout": "paper",            # GPICL LSTMs: they always read the paper's tokens.
    "model.forget_bias": 1.0,           # GPICL LSTMs: Sonnet's forget bias.
    "init_from": "",                    # MEND stage 1: started from the distiller's own init.
    "curriculum.steps": 0, "curriculum.hold_steps": 0,  # GPICL: no curriculum.
    "curriculum.num_tasks_start": 0, "curriculum.classes_start": 0,
    "curriculum.loss_len_start": 0,
}


def check_resume_compatible(saved_json: str, config) -> None:
  """Refuses to resume a workdir written by a config that changes the state."""
  old = _flatten(json.loads(saved_json))
  new = _flatten(json.loads(to_json(config)))
  for key, default in ADDED_KEYS.items():
    if key not in old and key in new:
      old[key] = default
  diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
           and not any(k == r or k.startswith(r if r.endswith(".") else r + ".") for r in RESUMABLE_CHANGES)]
  if diffs:
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs[:5])
    raise ConfigError(
        f"the workdir holds a run with a different config ({shown}); resuming would mix "
        f"two experiments. Use a new --workdir, or rerun with the saved config.json")

