"""What a paper plugs into the one trainer (`research/train.py`).

An `Experiment` is a handful of pure functions. Batches are a pure function of a
key, which the trainer derives from (seed, step): a resumed run sees exactly the
batches an uninterrupted run would, with no iterator state to save.

Two data pipelines, one per experiment:
  device  `sample_batch(frozen, key, step)` runs inside the jitted step (the data pools
          are small arrays in `frozen`): no host work at all per step.
  host    `host_batch(key, start, stop, step)` returns this process's rows of the global batch as
          NumPy; the trainer assembles the global array with
          `jax.make_array_from_process_local_data` and passes it to the step. This
          is the multi-host path: each process loads only its own rows.

`frozen` holds every array the step reads but never trains (a frozen LLM, data
pools). It is an argument of the jitted step, so it is neither baked into the
executable as constants nor donated, optimised or checkpointed; it keeps the
shardings it was placed with (e.g. a frozen LLM sharded by the logical rules).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import jax

from research.config import ConfigError

# config.task -> module with `build(config, mesh) -> Experiment` (run by the trainer).
REGISTRY = {
    "gpicl": "research.gpicl.experiment",
    "mend_pretrain": "research.mend.experiment", "mend_finetune": "research.mend.experiment",
}
# config.task -> module with `run(config, workdir) -> dict`, for protocols that are
# not one training run (DKVB's class-incremental stages, ICL evaluations).
RUNNERS = {
    "dkvb": "research.dkvb.experiment",
    "icl_eval": "research.icl.experiment",
    "mend_eval": "research.mend.evaluate",
}


@dataclasses.dataclass(frozen=True)
class Experiment:
  # key -> params, parameters boxed with logical axis names (nn.Partitioned).
  init_params: Callable[[jax.Array], Any]
  # (frozen, key, step) -> global batch (a pytree whose leaves have a leading batch
  # dim); `step` (traced int32) lets a curriculum change the data over training.
  sample_batch: Callable[[Any, jax.Array, jax.Array], Any]
  # (params, frozen, batch, key) -> (scalar loss, {name: scalar}); differentiated
  # w.r.t. params only.
  loss_fn: Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict]]
  # (params, step) -> {name: scalar or list}; runs on every process, returns host values.
  evaluate: Callable[[Any, int], dict]
  # (params, workdir, final eval metrics) -> printable summary; writes figures (process 0).
  report: Callable[[Any, str, dict], str] | None = None
  # Free-form facts for the run log (state size, parameter count, ...).
  info: dict = dataclasses.field(default_factory=dict)
  # Placed global arrays the step reads and never trains (see the module docstring).
  frozen: Any = None
  # (key, start, stop, step) -> rows [start, stop) of the global batch (NumPy), or
  # None for the device pipeline. Same key and step as `sample_batch` gets; rows must
  # not depend on the process count, so 1 and N processes train on the same batch.
  host_batch: Callable[[jax.Array, int, int, int], Any] | None = None


def build(config, mesh) -> Experiment:
  """Builds the experiment named by `config.task`."""
  if config.task not in REGISTRY:
    raise ConfigError(f"config.task={config.task!r} is not a trainer experiment; "
                     f"known: {sorted(REGISTRY)}")
  return importlib.import_module(REGISTRY[config.task]).build(config, mesh)


def run(config, workdir: str) -> dict:
  """Runs any experiment config: the trainer for REGISTRY tasks, else its runner."""
  if config.task in RUNNERS:
    return importlib.import_module(RUNNERS[config.task]).run(config, workdir)
  if config.task not in REGISTRY:
    raise ConfigError(f"config.task={config.task!r} unknown; known: {sorted({**REGISTRY, **RUNNERS})}")
  from research import train  # Imported here: train imports this module.
  return train.train_and_evaluate(config, workdir)
