"""The registry of ICL / MEND evaluation methods, and what a method is given.

A method is one file that registers a `Method` subclass and declares its needs:

    @METHODS.register("icl", needs=("demonstrations",), seed_dependent=True, run="never")
    class ICL(Method):
      def score(self, task, seed): ...     # -> (option NLLs per query, info)

  needs           what it reads from a `Task`: "demonstrations" (the seed's K
                  demonstrations), "pool" (the task's labelled rows, e.g. to retrieve
                  from), "meta_train" (the partition's meta-train tasks, to train on);
  seed_dependent  whether its score depends on the demonstration seed (if not, the
                  loop scores it once and its spread has n = 1);
  run             "never", "optional" or "required": a trained artifact (a trainer run
                  directory). A method that evaluates runs is registered under the name
                  of the trainer task that produces them ("prompt_tuning",
                  "mend_finetune"), so a run is evaluated by the method of its task;
  sections        optional: () -> {section name: ConfigDict} of settings it reads from the
                  evaluation config (every evaluation config holds every registered
                  method's sections, as the optimizer section holds every optimizer's keys).

`config.methods` lists what an evaluation runs, each entry `NAME` (a registered
method) or `LABEL=RUN_DIR` (a trained run, evaluated by the method of its task and
reported as LABEL; `LABEL=RUN_DIR@STEP` names one of its checkpoints, for methods that
read one — MEND's distiller): e.g. ("zero_shot", "icl", "mend=runs/mend/ft_300",
"hypertuning=runs/mend/ht_300"). The loop in `evaluation.py` looks every entry up
here; nothing else lists method names. Files anywhere under `research/` register
(ICL's baselines in `research/icl/methods/`, MEND's distiller in `research/mend/`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from models.registry import Registry
from research import runs
from research.errors import ConfigError
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import prompts

METHODS = Registry("evaluation method", ("research",), config_key="config.methods")
NEEDS = ("demonstrations", "pool", "meta_train")
RUN_MODES = ("never", "optional", "required")


# --------------------------------------------------------------------------------------
# What a method is given.
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Task:
  """One task to evaluate: its queries and where demonstrations come from."""
  name: str
  queries: list[icl_data.Example]
  is_classification: bool
  # () -> the task's labelled rows (MetaICL's meta-train rows), loaded on first use.
  load_pool: Callable[[], list[icl_data.Example]] = list
  # (k, seed) -> fixed demonstrations (MetaICL's k-shot files), or None: drawn from the pool.
  kshot: Callable[[int, int], list[icl_data.Example]] | None = None

  @functools.cached_property
  def pool(self) -> list[icl_data.Example]:
    return list(self.load_pool())

  def demonstrations(self, k: int, seed: int) -> list[icl_data.Example]:
    """The K demonstrations of `seed` (a pure function of the task, k and seed)."""
    if self.kshot is not None:
      return self.kshot(k, seed)
    if len(self.pool) < k:
      raise ConfigError(f"task {self.name!r}: {len(self.pool)} labelled rows, cannot draw "
                        f"{k} demonstrations; pass more training rows or a smaller k")
    return prompts.sample_demonstrations(self.pool, k, seed)


@dataclasses.dataclass
class Context:
  """Everything an evaluation shares between its methods."""
  lm: Any                      # research.llm.LM
  scorer: Any                  # research.llm.scoring.Scorer (metered)
  prompt: prompts.PromptConfig
  k: int                       # Demonstrations per prompt.
  settings: ml_collections.ConfigDict  # The evaluation config (methods' sections).
  meta_train: dict[str, list[icl_data.Example]]  # The partition's meta-train tasks.
  partition: str = ""
  workdir: str | None = None   # Where methods that train put their runs.
  writer: Any = None           # research.metrics.MetricWriter, or None.


class Method:
  """Scores a task's queries for one demonstration seed.

  Subclasses set up in `__init__` (once per evaluation) and implement `score`. A
  method with a run sets `trained_on` to the partition it was trained on (its
  results belong to that partition only).
  """

  def __init__(self, ctx: Context, run: str | None = None):
    self.ctx = ctx
    self.run = run
    self.trained_on: str | None = None

  def score(self, task: Task, seed: int) -> tuple[list[np.ndarray], dict]:
    """(option NLLs of each query (lowest wins), info: `prefix_tokens`, `demos_kept`)."""
    raise NotImplementedError

  def finish(self, record: dict) -> None:
    """Adds method-specific results (training summary, extra efficiency) to `record`."""


# --------------------------------------------------------------------------------------
# config.methods.
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Spec:
  label: str         # The name results are reported under.
  entry: Any         # The registry entry.
  run: str | None    # A trainer run directory, for LABEL=RUN_DIR.


def check_entry(entry) -> None:
  """A registered method declares valid needs (caught when the method is first used)."""
  bad = set(entry.needs) - set(NEEDS)
  if bad or entry.run not in RUN_MODES or not isinstance(entry.seed_dependent, bool):
    raise ValueError(f"method {entry.name!r} ({entry.module}) declares needs={entry.needs}, "
                     f"run={entry.run!r}, seed_dependent={entry.seed_dependent!r}; needs must "
                     f"be from {NEEDS}, run from {RUN_MODES}")


def parse(specs: Sequence[str]) -> list[Spec]:
  """`config.methods` -> [Spec]; unknown names, missing runs and duplicates fail here."""
  out: list[Spec] = []
  for s in specs:
    label, eq, path = str(s).partition("=")
    label = label.strip()
    if eq:
      path = path.strip()
      path, at, step = path.partition("@")  # RUN_DIR@STEP: that checkpoint, not the newest.
      if at and not step.isdigit():
        raise ConfigError(f"config.methods entry {s!r}: write a checkpoint as RUN_DIR@STEP")
      if not os.path.exists(os.path.join(path, "config.json")):
        raise ConfigError(f"config.methods entry {s!r}: {path} is not a trainer run directory "
                          f"(no config.json); train it first")
      entry = METHODS.get(runs.read_config(path).task)
      check_entry(entry)
      if entry.run == "never":
        raise ConfigError(f"config.methods entry {s!r}: method {entry.name!r} takes no run")
      out.append(Spec(label, entry, path + (f"@{step}" if at else "")))
    else:
      entry = METHODS.get(label)
      check_entry(entry)
      if entry.run == "required":
        raise ConfigError(f"config.methods entry {label!r}: this method evaluates a trained "
                          f"run; write it as LABEL=RUN_DIR (a {label} run directory)")
      out.append(Spec(label, entry, None))
  labels = [x.label for x in out]
  dup = sorted({x for x in labels if labels.count(x) > 1})
  if dup:
    raise ConfigError(f"config.methods names {dup} more than once")
  return out


def sections() -> ml_collections.ConfigDict:
  """Every registered method's config sections, with their defaults."""
  out: dict[str, ml_collections.ConfigDict] = {}
  for entry in METHODS.entries():
    if "sections" not in entry.meta:
      continue
    for name, section in entry.sections().items():
      if name in out and out[name].to_dict() != section.to_dict():
        raise ValueError(f"method {entry.name!r} declares config section {name!r} unlike "
                         f"another method's")
      out[name] = section
  return ml_collections.ConfigDict(out)
