"""The config schema: sections every trainer config shares, declared once, and the
checks that run before anything compiles.

Each task declares its full default config in one function (registered with the
task in `research.experiment.EXPERIMENTS` as `defaults`; e.g.
`research/gpicl/defaults.py`), built on `trainer_sections` below, with a comment per
key. Configs in `experiments/` start from it and change a few keys. Experiment code
reads `config.x`, never `config.get("x", default)`: every key is declared, so a
locked config accepts `--config.x=...` for any of them and rejects typos.

Resuming: a workdir's `config.json` written before a key existed resumes if the
new config keeps the key's declared default (the behaviour the old run had);
`check_resume_compatible` fills missing keys from the task's declarations.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from typing import Any

import ml_collections
from ml_collections import config_dict

from research import optim
from research.errors import ConfigError, check_positive, check_range, require

# Keys that may change when resuming a run (they change neither the state's shapes
# nor the batches): train longer, log or checkpoint differently, use another mesh.
RESUMABLE_CHANGES = ("train.num_steps", "train.log_every", "train.eval_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "train.steps_per_call",
                     "train.progress", "train.tensorboard", "train.restart_if_unreadable",
                     "mesh", "sharding", "peak_flops", "eval.")


def load_module(path: str, prefix: str = "_config"):
  """Imports a Python file by path (a config or sweep file under experiments/, which the
  library never imports by name), as `{prefix}_{file stem}`."""
  stem = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"{prefix}_{stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def experiments_file(*parts: str) -> str:
  """The path of a file under the repository's experiments/ folder."""
  return os.path.join(os.path.dirname(__file__), "..", "experiments", *parts)


def optimizer_section(name: str = "adam", **values) -> ml_collections.ConfigDict:
  """`name`, the shared keys, and every registered optimizer's hyper-parameters."""
  keys = dict(optim.SHARED_KEYS)
  for entry in optim.OPTIMIZERS.entries():
    for k, v in entry.hparams.items():
      if keys.setdefault(k, v) != v:
        raise ValueError(f"optimizer {entry.name!r} declares {k}={v}, another {keys[k]}")
  unknown = set(values) - set(keys)
  if unknown:
    raise ValueError(f"optimizer_section: unknown keys {sorted(unknown)}")
  return ml_collections.ConfigDict(dict(name=name, **{**keys, **values}))


def trainer_sections(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the sections every trainer config shares (values are the defaults)."""
  c.seed = 0                       # Seed of the initialisation and of every batch.
  # FLOP/s per device for MFU; None = measure a matmul peak once per process.
  c.peak_flops = config_dict.placeholder(float)
  c.optimizer = optimizer_section()
  c.schedule = ml_collections.ConfigDict(dict(
      name="constant",             # One of research.optim.SCHEDULES.
      warmup_steps=0,              # Linear warm-up from 0 (constant, warmup_cosine).
      final_fraction=0.0,          # Final lr as a fraction of the peak (cosine, linear).
  ))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=1000,              # Optimizer updates in all (phases included).
      batch_size=128,              # Global batch (all devices, all processes).
      grad_accum_steps=1,          # The batch in this many sequential micro-batches.
      num_seeds=1,                 # > 1: seeds seed..seed+n-1 trained in one vmapped step.
      steps_per_call=1,            # Updates per jitted call (a scan; logging at multiples).
      log_every=50,                # Train rows in metrics.jsonl every this many steps.
      eval_every=250,              # Evaluation (and at the end, and at phase ends).
      checkpoint_every=500,        # Orbax checkpoint (and at the end and on SIGTERM).
      keep_checkpoints=3,          # Newest checkpoints kept.
      on_nonfinite="skip",         # "skip" a non-finite update, or "halt" at once.
      max_nonfinite_steps=20,      # Consecutive skipped updates before the run halts.
      restart_if_unreadable=False,  # Start over when no checkpoint can be read (else refuse).
      tensorboard=True,            # Also write TensorBoard (tensorboardX).
      progress=True,               # tqdm bar on stdout.
  ))
  c.mesh = (("data", -1), ("model", 1))  # Mesh axes; one -1 takes the remaining devices.
  c.sharding = ml_collections.ConfigDict(dict(
      rules="dp",                  # dp | fsdp | tp | fsdp_tp, or [(logical, mesh axis)].
  ))
  return c


# ----------------------------------------------------------------------------
# Checks every trainer config shares (values; ml_collections checks keys and types).
# ----------------------------------------------------------------------------
def check_common(config) -> None:
  from research import experiment  # The registry of tasks (it imports nothing of ours).
  experiment.EXPERIMENTS.get(config.task)  # Unknown task: one line naming the known ones.
  if "train" not in config:  # A runner that trains nothing (evaluations).
    return
  check_positive(config, "train.num_steps", "train.batch_size", "train.log_every",
                 "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                 "train.grad_accum_steps", "train.num_seeds", "train.steps_per_call",
                 "train.max_nonfinite_steps")
  check_range(config, "seed", 0, 2**31 - 1, integer=True)
  o = config.optimizer
  optim.OPTIMIZERS.get(o.name)
  require(config.schedule.name in optim.SCHEDULES,
          f"config.schedule.name={config.schedule.name!r} unknown; use one of {optim.SCHEDULES}")
  require(isinstance(o.learning_rate, (int, float)) and math.isfinite(o.learning_rate)
          and o.learning_rate > 0,
          f"config.optimizer.learning_rate={o.learning_rate!r} cannot work: it must be a finite "
          f"number > 0")
  check_range(config, "optimizer.grad_clip", 0)
  check_range(config, "optimizer.weight_decay", 0)
  check_range(config, "optimizer.eps", 0)
  for key in ("b1", "b2", "momentum"):
    check_range(config, f"optimizer.{key}", 0, 1, high_open=True)
  check_range(config, "schedule.warmup_steps", 0, integer=True)
  check_range(config, "schedule.final_fraction", 0, 1)
  t = config.train
  require(t.batch_size % t.grad_accum_steps == 0,
          f"config.train.grad_accum_steps={t.grad_accum_steps} must divide "
          f"config.train.batch_size={t.batch_size}")
  require(t.on_nonfinite in ("skip", "halt"),
          f"config.train.on_nonfinite={t.on_nonfinite!r}; use 'skip' or 'halt'")


def to_json(config) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def _flatten(d: Any, prefix: str = "") -> dict:
  out = {}
  if isinstance(d, dict) and d:
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
  else:
    out[prefix[:-1]] = d
  return out


def declared_defaults(saved: dict) -> dict:
  """Flat {key: declared default} for the task of a saved config: the task's own
  defaults, and for sections that name a registered entry (GPICL's `model.name`),
  that entry's defaults (`named_sections`: {section: saved section -> {key: default}})."""
  from research import experiment
  entry = experiment.EXPERIMENTS.get(saved.get("task", ""))
  out = _flatten(json.loads(to_json(entry.defaults())))
  for section, defaults_of in entry.meta.get("named_sections", {}).items():
    values = defaults_of(saved.get(section, {}))
    out = {k: v for k, v in out.items() if not k.startswith(section + ".")}
    out.update({f"{section}.{k}": v for k, v in _flatten(values).items()})
  return out


def check_resume_compatible(saved_json: str, config) -> None:
  """Refuses to resume a workdir written by a config that changes the state."""
  try:
    saved = json.loads(saved_json)
  except json.JSONDecodeError as e:
    raise ConfigError(f"config.json in the workdir is not valid JSON ({e.msg} at line {e.lineno}); "
                      f"it was cut by a crash: delete it to let the checkpoints decide, or use "
                      f"a new --workdir") from e
  old = _flatten(saved)
  new = _flatten(json.loads(to_json(config)))
  if saved.get("task") == config.task:
    for key, default in declared_defaults(saved).items():
      old.setdefault(key, default)  # Keys added since: the old run had their default.
  diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
           and not any(k == r or k.startswith(r if r.endswith(".") else r + ".")
                       for r in RESUMABLE_CHANGES)]
  if diffs:
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs[:5])
    raise ConfigError(
        f"the workdir holds a run with a different config ({shown}); resuming would mix "
        f"two experiments. Use a new --workdir, or rerun with the saved config.json")
