"""GPICL learners by name: `models.registry.LEARNERS`, filled by the model files.

Every learner follows one sequence interface:
`apply(x [B, L, dx], y [B, L]) -> logits [B, L, C]`, where logits[:, t] depends only
on x[:, :t+1] and y[:, :t]; and `state_size(seq_len)` gives its accessible state.

A learner's config section (`config.model`) is its name plus every constructor
field it has, at the module's own defaults, then its registration's
`config_defaults`, then the chosen size (`sizes["tiny"|"small"|"paper"]`). Fields
listed in `needs` are filled by the experiment (`max_len` <- the sequence length,
`input_dim` <- the input size); `num_classes` always is. Adding a learner is one
file under `models/` that registers itself; nothing here changes.
"""
from __future__ import annotations

import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

from models.registry import LEARNERS
from research.errors import ConfigError

SIZES = ("tiny", "small", "paper")
# Quantities an experiment can give a learner's `needs`.
QUANTITIES = ("seq_len", "input_dim", "num_classes")
_NOT_CONFIG = {"parent", "name", "num_classes"}


def _fields(cls) -> dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_CONFIG}


def _placeholder(cls, name: str):
  """A None default as a typed placeholder, so `--config.model.x=...` can set it."""
  hint = typing.get_type_hints(cls).get(name)
  types = [t for t in typing.get_args(hint) if t is not type(None)] or [int]
  return config_dict.placeholder(types[0])


def config_defaults(name: str) -> dict:
  """The declared defaults of learner `name`'s config keys (no size applied)."""
  entry = LEARNERS.get(name)
  needs = entry.meta.get("needs", {})
  out = {}
  for k, f in _fields(entry.obj).items():
    if k in needs:
      continue
    out[k] = f.default if f.default is not dataclasses.MISSING else None
  out.update(entry.meta.get("config_defaults", {}))
  return out


def learner_config(name: str, size: str = "small", **values) -> ml_collections.ConfigDict:
  """`config.model` for learner `name` at `size`, with `values` (e.g. layout) on top."""
  if size not in SIZES:
    raise ConfigError(f"learner size {size!r}; use one of {SIZES}")
  entry = LEARNERS.get(name)
  out = dict(config_defaults(name), **entry.meta.get("sizes", {}).get(size, {}))
  unknown = set(values) - set(out)
  if unknown:
    raise ConfigError(f"learner {name!r} has no fields {sorted(unknown)}; its fields are "
                      f"{sorted(out)}")
  out.update(values)
  c = ml_collections.ConfigDict({"name": name})
  for k, v in out.items():
    c[k] = _placeholder(entry.obj, k) if v is None else v
  return c


def make_learner(model_config, *, num_classes: int, seq_len: int, input_dim: int):
  """Instantiates `model_config.name` with the config's other fields as arguments."""
  entry = LEARNERS.get(model_config.name)
  given = {"seq_len": seq_len, "input_dim": input_dim, "num_classes": num_classes}
  kwargs = {k: v for k, v in model_config.items() if k != "name" and v is not None}
  for field, quantity in entry.meta.get("needs", {}).items():
    if field in kwargs:
      raise ConfigError(f"config.model.{field} is set by the experiment (from {quantity}); "
                        f"remove it from the config")
    kwargs[field] = given[quantity]
  fields = set(_fields(entry.obj))
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"config.model has keys {unknown} that learner {model_config.name!r} does "
                      f"not take; its fields are {sorted(fields)}")
  return entry.obj(num_classes=num_classes, **kwargs)
