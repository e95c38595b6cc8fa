"""Registries: one per extension point, filled by the files that define the entries.

A new learner, experiment, evaluation method, encoder, dataset or optimizer is one
new file that registers itself with a decorator, plus its name in a config:

    @registry.LEARNERS.register("linear_transformer", sizes={...}, needs={...})
    class LinearTransformer(nn.Module): ...

Nothing else lists the names. A lookup of a name not yet registered first imports
`<package>.<name>` (the big_vision convention: `config.model.name="vit"` loads
`models/vit.py`), then every module of the registry's packages, so an entry is
found wherever in those packages its file lives; `names()` imports them all.

This module sits in the lowest layer (`models/`) so that model files can register
themselves without importing the library above them; the library's registries
(experiments, evaluation methods, ...) are instances of the same class.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable


class ConfigError(ValueError):
  """A config value, file or path that cannot work; the message says how to fix it.

  Defined here, in the lowest layer, so that a registry's "no entry of that name"
  is the same kind of error as every other bad config value (`research.errors`).
  """


class UnknownName(ConfigError, LookupError):
  """A registry has no entry of that name (a bad config value, not a bug)."""

  def __str__(self) -> str:  # LookupError quotes its message; print it plainly.
    return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  obj: Any            # The registered class or function.
  meta: dict          # Whatever the entry declares: sizes, config defaults, needs, ...
  module: str         # Where it was registered (for error messages and docs).

  def __getattr__(self, key):  # entry.sizes reads entry.meta["sizes"].
    try:
      return self.meta[key]
    except KeyError:
      raise AttributeError(f"{self.name!r} declares no {key!r}") from None


class Registry:
  """Name -> Entry for one extension point; entries register themselves on import."""

  def __init__(self, kind: str, packages: tuple[str, ...], config_key: str = ""):
    self.kind = kind
    self.packages = packages
    self.config_key = config_key  # The config key that names an entry, for errors.
    self._entries: dict[str, Entry] = {}
    self._discovered = False

  def register(self, name: str, **meta) -> Callable[[Any], Any]:
    def add(obj):
      old = self._entries.get(name)
      module = getattr(obj, "__module__", "?")
      if old is not None and old.module != module:
        raise ValueError(f"{self.kind} {name!r} registered twice: in {old.module} and {module}")
      self._entries[name] = Entry(name, obj, dict(meta), module)
      return obj
    return add

  def get(self, name: str) -> Entry:
    if name not in self._entries:
      for package in self.packages:  # Fast path: the file named after the entry.
        if hasattr(importlib.import_module(package), "__path__") and name.isidentifier():
          try:
            importlib.import_module(f"{package}.{name}")
          except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
              raise
        if name in self._entries:
          break
      else:
        self.discover()
    if name not in self._entries:
      key = f"{self.config_key}={name!r}" if self.config_key else repr(name)
      raise UnknownName(f"{key}: no {self.kind} of that name; known: {', '.join(self.names())}")
    return self._entries[name]

  def names(self) -> list[str]:
    self.discover()
    return sorted(self._entries)

  def entries(self) -> list[Entry]:
    return [self._entries[n] for n in self.names()]

  def discover(self) -> None:
    """Imports every module of the registry's packages (once)."""
    if self._discovered:
      return
    for package in self.packages:
      pkg = importlib.import_module(package)
      for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
          importlib.import_module(info.name)
    self._discovered = True

  def __contains__(self, name: str) -> bool:
    try:
      self.get(name)
    except UnknownName:
      return False
    return True


# GPICL learners (models/*.py). An entry is a Flax module class following the
# sequence interface (research/gpicl/learners.py); its meta declares
#   sizes: {"tiny"|"small"|"paper": {field: value}}, the config sizes;
#   needs: {field: quantity}, fields the experiment fills (e.g. max_len <- seq_len);
#   config defaults are the module's own dataclass field defaults.
LEARNERS = Registry("GPICL learner", ("models",), config_key="config.model.name")
