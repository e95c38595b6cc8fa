"""What a paper plugs into the one trainer (`research/train.py`).

An `Experiment` is a handful of pure functions. Batches are a pure function of a
key, which the trainer derives from (seed, step): a resumed run sees exactly the
batches an uninterrupted run would, with no iterator state to save. Data lives
on device (GPICL's base sets, DKVB's frozen embeddings, MEND's token arrays are
all small), so sampling happens inside the jitted step.
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
  # key -> global batch (a pytree whose leaves have a leading batch dimension).
  sample_batch: Callable[[jax.Array], Any]
  # (params, batch, key) -> (scalar loss, {name: scalar}) — differentiated w.r.t. params.
  loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
  # (params, step) -> {name: scalar or list}; runs on every process, returns host values.
  evaluate: Callable[[Any, int], dict]
  # (params, workdir, final eval metrics) -> printable summary; writes figures (process 0).
  report: Callable[[Any, str, dict], str] | None = None
  # Free-form facts for the run log (state size, parameter count, ...).
  info: dict = dataclasses.field(default_factory=dict)


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
