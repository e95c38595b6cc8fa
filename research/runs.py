"""Finished (or running) trainer runs as objects.

    run = runs.load("runs/gpicl_digits")
    run.config        # the resolved config (locked ConfigDict)
    run.params        # the restored parameters (newest readable checkpoint)
    run.experiment    # the task's Experiment (evaluation sets are built lazily)
    run.final         # final_metrics.json, or None while it trains
    run.metrics("eval")

Each paper's open evaluation takes a run and your data: GPICL
`research.gpicl.evaluation.icl_curve(run, x, y)`, DKVB
`research.dkvb.evaluation.accuracy(run, x, y)`, ICL / MEND any task in MetaICL format
(`research/icl/`). With `train.num_seeds` > 1, `run.replica(i)` is seed i's run.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from research import checkpoint
from research import config as config_lib
from research import metrics as metrics_lib
from research import optim
from research import sharding
from research.errors import ConfigError


@dataclasses.dataclass
class Run:
  workdir: str
  config: ml_collections.ConfigDict
  params: Any
  experiment: Any
  step: int
  final: dict | None
  seed_index: int | None = None  # Which replica, for runs with train.num_seeds > 1.

  def metrics(self, kind: str | None = None) -> list[dict]:
    path = self.workdir
    if self.seed_index is not None:
      path = os.path.join(path, f"seed_{self.config.seed + self.seed_index}")
    return metrics_lib.read_metrics(path, kind)

  @property
  def num_seeds(self) -> int:
    return self.config.train.num_seeds if self.seed_index is None else 1

  def replica(self, i: int) -> "Run":
    """Seed `config.seed + i` of a run that trained several seeds in one step."""
    if self.config.train.num_seeds == 1:
      if i:
        raise ConfigError(f"{self.workdir} trained one seed; replica {i} does not exist")
      return self
    final = (self.final or {}).get("per_seed", [None] * (i + 1))[i] if self.final else None
    return dataclasses.replace(self, params=jax.tree.map(lambda x: x[i], self.params),
                               final=final, seed_index=i)

  @property
  def frozen(self):
    from research import train  # The trainer's view of one replica's frozen arrays.
    frozen = self.experiment.frozen or {}
    if self.seed_index is None:
      return frozen
    return train.replica_frozen(frozen, self.seed_index, self.config.train.num_seeds)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote, with keys added since filled by their declared
  defaults (what the run did), locked."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{path} does not exist: {workdir} is not a trainer run directory")
  with open(path) as f:
    try:
      saved = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path} is not valid JSON ({e.msg}); the run's config is damaged") from e
  for key, value in config_lib.declared_defaults(saved).items():
    node = saved
    *parents, last = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    if isinstance(node, dict):
      node.setdefault(last, value)
  config = ml_collections.ConfigDict(saved)
  return config.lock()


def load(workdir: str, *, mesh=None, step: int | None = None) -> Run:
  """The run in `workdir`: config, restored parameters and experiment."""
  from research import train  # The trainer's own state layout and init.
  config = read_config(workdir)
  mesh = mesh or sharding.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config.sharding.rules)
  exp = train.build_experiment(config, mesh)
  tx = optim.make_optimizer(config)
  seeds = [config.seed + s for s in range(config.train.num_seeds)]
  init_keys, _ = train.replica_keys(seeds)
  state_sharding, init_fn = train.state_init(exp, tx, rules, mesh, len(seeds))
  abstract = checkpoint.abstract_like(jax.eval_shape(init_fn, init_keys), state_sharding)
  mngr = checkpoint.manager(workdir, max_to_keep=config.train.keep_checkpoints, create=False)
  try:
    state, meta = checkpoint.restore_latest(mngr, abstract, step=step)
  finally:
    mngr.close()
  if state is None:
    raise ConfigError(f"{workdir} holds no readable checkpoint; train it first")
  final = None
  final_path = os.path.join(workdir, train.FINAL_METRICS)
  if os.path.exists(final_path):
    with open(final_path) as f:
      final = json.load(f)
  return Run(workdir, config, state["params"], exp, int(meta["step"]), final)
