"""File names that come from configs are resolved inside the workdir, never outside."""
from __future__ import annotations

import os

from research.config import ConfigError


def within(workdir: str, name: str) -> str:
  """`workdir/name`, refusing absolute paths, `~`, `..` and empty names."""
  root = os.path.abspath(workdir)
  if not name or os.path.isabs(name) or name.startswith("~"):
    raise ConfigError(f"file name {name!r} must be relative to the workdir {root}")
  path = os.path.abspath(os.path.join(root, name))
  if os.path.commonpath([root, path]) != root:
    raise ConfigError(f"file name {name!r} escapes the workdir {root}; use a name inside it")
  return path
