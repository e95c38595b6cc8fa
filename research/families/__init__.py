"""Task families: what an in-context learner is meta-trained and evaluated on.

A family turns a key into sequences of (input, target) pairs, inside the jitted
train step (the learned_optimization convention: a pure `sample(key)`, many
sequences vmapped at once). Each is one file that registers itself here with its
config defaults (one comment per key) and a builder:

    @FAMILIES.register("linear_regression", defaults=defaults)
    def build(config, spec) -> Family: ...

and is selected by name: `--config.data.family=linear_regression` (the GPICL
trainer experiment, `research/gpicl/experiment.py`), with its keys under
`config.families.<name>` (every registered family's section is declared in every
GPICL config, as every optimizer's hyper-parameters are). `mixture` combines
families in fixed proportions. Registered families:

  projection                GPICL: a dataset under random projections and label
                            permutations (research/gpicl/projection.py)
  linear_regression         Garg et al. 2022 / Raventós et al. 2023: y = w·x (+ noise),
                            fresh w per sequence or a finite pool of 2^k tasks
  sparse_linear_regression  Garg: w with k non-zero coordinates
  decision_tree             Garg: depth-4 trees splitting on signs of coordinates
  relu_net                  Garg: 2-layer ReLU networks
  bursty                    Chan et al. 2022: bursty, Zipf-distributed class sequences
                            from an image set, with in-weights / in-context probes
  clusters                  Gaussian class clusters in a random low-dimensional subspace
  mixture                   several of the above in fixed proportions

Targets are class labels (int32, accuracy, cross-entropy) or real values (float32,
squared error divided by the target's prior variance, the papers' "normalised"
error). The function-class families give either (`num_classes` = 0: values; ≥ 2:
the label is the argmax of that many function outputs).

Every sequence batch is a dict with
  x       [n, L, data.input_dim] float32 (zero-padded)
  y       [n, L] int32 labels or float32 values
  mask    [n, L] float32, 1 where the position counts in the loss (Chan: the query)
  biased  [n] bool, sequences of GPICL's biased task 0 (false elsewhere)
  y_var   [n] float32, the normaliser of a real target's squared error (1 for labels)
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from models.registry import Registry
from research.errors import ConfigError

# The GPICL projection family registers from the GPICL package (it wraps that
# paper's sampler); every other family lives in this package.
FAMILIES = Registry("task family", ("research.families", "research.gpicl.projection"),
                    config_key="config.data.family")

TARGETS = ("classes", "values")


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """A fixed evaluation set: `sample(arrays, key, n)` at the set's own fixed key.

  `oracles`: Bayes-optimal predictors that know the prior (name -> (arrays, x [L, D],
  y [L]) -> predictions [L, C] scores or [L] values, causal like every learner)."""
  sample: Callable[[Any, jax.Array, int], dict]
  key: jax.Array
  arrays: Any = ()
  chance: float = 0.0            # Accuracy of guessing (classes); 1.0 = predicting 0 (values).
  oracles: dict = dataclasses.field(default_factory=dict)
  y_var: float = 1.0             # Normaliser of the squared error (values).


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  target: str                    # "classes" or "values".
  num_outputs: int               # Labels are < this (classes); 1 for values.
  # (pool, key, n, step, active_dim) -> batch dict (module docstring). `active_dim`:
  # None, or dim -> traced int, the input-dimension curriculum (coordinates beyond it 0).
  sample: Callable[..., dict]
  pool: Any = ()                 # Arrays `sample` reads (placed once, never trained).
  eval_sets: Callable[[int], dict[str, EvalSet]] = lambda seed: {}  # seed -> sets (lazy).
  dim: int = 0                   # Input dimension of the function classes (0: a dataset's).
  info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Spec:
  """A family as a config names it: "name" or "name@dataset" (a dataset override for
  families built on a dataset, e.g. `projection@mnist1d` in a mixture)."""
  name: str
  dataset: str = ""

  @classmethod
  def parse(cls, text: str) -> "Spec":
    name, _, dataset = text.partition("@")
    return cls(name.strip(), dataset.strip())

  def __str__(self) -> str:
    return f"{self.name}@{self.dataset}" if self.dataset else self.name


def config_section() -> ml_collections.ConfigDict:
  """`config.families`: each registered family's declared keys (defaults)."""
  out = ml_collections.ConfigDict()
  for entry in FAMILIES.entries():
    keys = entry.meta.get("defaults", dict)()
    if keys:
      out[entry.name] = ml_collections.ConfigDict(keys)
  return out


def build(config, text: str) -> Family:
  """The family `text` ("name" or "name@dataset") of a GPICL config."""
  spec = Spec.parse(text)
  entry = FAMILIES.get(spec.name)
  if spec.dataset and not entry.meta.get("has_dataset"):
    raise ConfigError(f"family {spec.name!r} is not built on a dataset; drop '@{spec.dataset}' "
                      f"from {text!r}")
  family = entry.obj(config, spec)
  if family.target not in TARGETS:
    raise ValueError(f"family {spec} declares target {family.target!r}; use one of {TARGETS}")
  return family


def complete(batch: dict, n: int, length: int) -> dict:
  """Fills the optional batch keys with their defaults (all positions count, no bias)."""
  out = dict(batch)
  out.setdefault("mask", jnp.ones((n, length), jnp.float32))
  out.setdefault("biased", jnp.zeros((n,), bool))
  out.setdefault("y_var", jnp.ones((n,), jnp.float32))
  return out


def set_key(seed: int, name: str) -> jax.Array:
  """The fixed key of evaluation set `name` (stable across runs and processes)."""
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def section(config, name: str):
  """`config.families.<name>` (a family with no keys has no section)."""
  return config.families[name] if name in config.families else ml_collections.ConfigDict()
