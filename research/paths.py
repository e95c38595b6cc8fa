"""Where files go: names that come from configs resolve inside the workdir, never outside;
this user's caches live under ~/.cache/research unless an environment variable moves them."""
from __future__ import annotations

import os

from research.errors import ConfigError


def within(workdir: str, name: str) -> str:
  """`workdir/name`, refusing absolute paths, `~`, `..` and empty names."""
  root = os.path.abspath(workdir)
  if not name or os.path.isabs(name) or name.startswith("~"):
    raise ConfigError(f"file name {name!r} must be relative to the workdir {root}")
  path = os.path.abspath(os.path.join(root, name))
  if os.path.commonpath([root, path]) != root:
    raise ConfigError(f"file name {name!r} escapes the workdir {root}; use a name inside it")
  return path


def user_cache(env_var: str, name: str) -> str:
  """$`env_var`, else ~/.cache/research/`name`: a cache shared by every run, test and
  notebook of this user."""
  return os.environ.get(env_var, os.path.expanduser(os.path.join("~/.cache/research", name)))
