"""What a paper plugs into the one trainer (`research/train.py`), and the registry of tasks.

An `Experiment` is a handful of pure functions. Batches are a pure function of a
key, which the trainer derives from (seed, step): a resumed run sees exactly the
batches an uninterrupted run would, with no iterator state to save.

Two data pipelines, one per experiment:
  device  `sample_batch(frozen, key, step)` runs inside the jitted step (the data pools
          are arrays in `frozen`): no host work at all per step.
  host    `host_batch(key, start, stop, step)` returns this process's rows of the global
          batch as NumPy; the trainer assembles the global array with
          `jax.make_array_from_process_local_data` and passes it to the step (grain
          prefetches it in a background thread). The multi-host path: each process
          loads only its own rows.

`frozen` holds every array the step reads but never trains (a frozen LLM, data
pools, DKVB's frozen keys). It is an argument of the jitted step, so it is neither
baked into the executable as constants nor donated, optimised or checkpointed; it
keeps the shardings it was placed with. With `config.train.num_seeds` = S > 1 the
trainer vmaps the step over S replicas; arrays that differ per replica (DKVB's
per-seed class order) go in `frozen["per_seed"]` with a leading axis S, and every
function that takes `frozen` sees its replica's slice.

Phases (DKVB's class-incremental stages): `phases` lists the steps at which a new
phase starts. The trainer evaluates at the end of every phase and, where
`reset_optimizer` says so, re-initialises the optimizer state at its start. Steps
for which `active(frozen, step)` is false change nothing (padded schedules).

Tasks register themselves:

    @EXPERIMENTS.register("gpicl", defaults=defaults.get_config)
    def build(config, mesh) -> Experiment: ...          # trained by the trainer

    @EXPERIMENTS.register("icl_eval", defaults=..., runner=True)
    def run(config, workdir) -> dict: ...               # a protocol of its own

A runner is for protocols that are not one training run: evaluations of frozen
models (ICL, MEND) and streams of several trainer runs (DKVB's models); its
`validate(config)` (registered with it) runs before anything is written.
`research.train.run(config, workdir)` dispatches on `config.task`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from models.registry import Registry

EXPERIMENTS = Registry("experiment", ("research",), config_key="config.task")


@dataclasses.dataclass(frozen=True)
class Experiment:
  # key -> params, parameters boxed with logical axis names (nn.Partitioned).
  init_params: Callable[[jax.Array], Any]
  # (frozen, key, step) -> global batch (a pytree whose leaves have a leading batch
  # dim); `step` (traced int32) lets a curriculum or a phase change the data.
  sample_batch: Callable[[Any, jax.Array, jax.Array], Any]
  # (params, frozen, batch, key) -> (scalar loss, {name: scalar}); differentiated
  # w.r.t. params only.
  loss_fn: Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict]]
  # (params, frozen, step) -> {name: scalar or list}; runs on every process, returns
  # host values.
  evaluate: Callable[[Any, Any, int], dict]
  # (params, frozen, workdir, final eval metrics) -> printable summary; may add keys to
  # `final` and write figures (process 0).
  report: Callable[[Any, Any, str, dict], str] | None = None
  # Free-form facts for the run log (state size, parameter count, ...).
  info: dict = dataclasses.field(default_factory=dict)
  # Placed global arrays the step reads and never trains (see the module docstring).
  frozen: Any = None
  # (key, start, stop, step) -> rows [start, stop) of the global batch (NumPy), or
  # None for the device pipeline. Same key and step as `sample_batch` gets; rows must
  # not depend on the process count, so 1 and N processes train on the same batch.
  host_batch: Callable[[jax.Array, int, int, int], Any] | None = None
  # Steps at which phases 1, 2, ... start (phase 0 starts at 0); evaluation at the end
  # of each, and the optimizer state re-initialised at its start if `reset_optimizer`.
  phases: tuple[int, ...] = ()
  reset_optimizer: bool = False
  # (frozen, step) -> bool: false for steps that train nothing (None: always true).
  active: Callable[[Any, jax.Array], jax.Array] | None = None
  # Objects for the runs API and notebooks (the Flax module, tokenizers, ...); not logged.
  objects: dict = dataclasses.field(default_factory=dict)
