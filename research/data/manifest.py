"""Checksum manifests for prepared data directories.

`write(directory)` records the SHA-256 and size of every file in
`MANIFEST.json`; `verify(directory, prepare_cmd)` recomputes them on load and
fails with the file that changed and the command that prepares the data again.
"""
from __future__ import annotations

import hashlib
import json
import os

from research.config import ConfigError

NAME = "MANIFEST.json"


class DataError(ConfigError):
  """Missing, changed or corrupt prepared data."""


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _files(directory: str):
  for root, _, files in os.walk(directory):
    for f in sorted(files):
      if f != NAME:
        path = os.path.join(root, f)
        yield os.path.relpath(path, directory), path


def write(directory: str) -> dict:
  entries = {rel: {"sha256": _sha256(p), "bytes": os.path.getsize(p)}
             for rel, p in sorted(_files(directory))}
  tmp = os.path.join(directory, NAME + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"files": entries}, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(directory, NAME))
  return entries


def verify(directory: str, prepare_cmd: str) -> None:
  """Raises DataError naming the problem and `prepare_cmd` as the fix."""
  if not os.path.isdir(directory):
    raise DataError(f"prepared data not found at {directory}; prepare it with: {prepare_cmd}")
  path = os.path.join(directory, NAME)
  if not os.path.exists(path):
    raise DataError(f"{directory} has no {NAME} (an interrupted or foreign preparation); "
                    f"prepare it again with: {prepare_cmd}")
  with open(path) as f:
    expected = json.load(f)["files"]
  for rel, want in expected.items():
    p = os.path.join(directory, rel)
    if not os.path.exists(p):
      raise DataError(f"{p} is missing from the prepared data; prepare it again with: {prepare_cmd}")
    if os.path.getsize(p) != want["bytes"] or _sha256(p) != want["sha256"]:
      raise DataError(f"{p} does not match its checksum in {NAME} (changed or corrupt); "
                      f"prepare it again with: {prepare_cmd}")
