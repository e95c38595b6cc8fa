"""Metrics: `metrics.jsonl` (the source of truth for notebooks), TensorBoard, console.

Only process 0 writes. Every row is one JSON object with `step`, `kind` (train,
eval, final, ...) and scalar metrics, so a notebook reads a run with
`read_metrics(workdir)` and never parses logs.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Iterable, Mapping

import jax
import numpy as np

from research import workdir as workdir_lib


def _scalar(v: Any) -> Any:
  if isinstance(v, (str, bool)) or v is None:
    return v
  if isinstance(v, (list, tuple)):
    return [_scalar(x) for x in v]
  a = np.asarray(v)
  if a.ndim:
    return [_scalar(x) for x in a.tolist()]
  x = a.item()
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)  # JSON has no NaN/Inf; keep them visible as strings.
  return x


class MetricWriter:
  """Appends rows to `workdir/metrics.jsonl` and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.workdir = workdir
    self.active = jax.process_index() == 0
    self._tb = None
    self._file = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      self.path = os.path.join(workdir, "metrics.jsonl")
      cut = workdir_lib.repair_jsonl(self.path)  # A row torn by a kill: never glued to.
      if cut:
        logging.warning("removed a torn last line (%d bytes) from %s", cut, self.path)
      self._file = open(self.path, "a", buffering=1)
      if tensorboard:
        from tensorboardX import SummaryWriter  # Imported lazily: slow import.
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any], kind: str = "train") -> None:
    if not self.active:
      return
    row = {"step": int(step), "kind": kind}
    row.update({k: _scalar(v) for k, v in metrics.items()})
    try:
      self._file.write(json.dumps(row) + "\n")
    except OSError as e:
      raise workdir_lib.WriteError(
          f"could not append to {self.path}: {workdir_lib.describe_os_error(e, self.path)}; "
          f"the checkpoints are intact and the rerun resumes (a torn row is repaired)") from e
    if self._tb is not None:
      for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
          self._tb.add_scalar(f"{kind}/{k}", v, int(step))

  def close(self) -> None:
    if self._file is not None:
      try:
        self._file.close()
      except OSError:  # A full disk: already reported by the write that failed.
        pass
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str, kind: str | None = None) -> list[dict[str, Any]]:
  """All rows of `workdir/metrics.jsonl`, optionally of one kind.

  A resumed run may repeat steps that were logged after its last checkpoint;
  the later row wins, so the result matches an uninterrupted run.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows: dict[tuple[str, int], dict[str, Any]] = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut by a kill mid-write: the step is re-logged on resume.
      if kind is None or row.get("kind") == kind:
        rows[(row.get("kind"), row["step"])] = row
  return sorted(rows.values(), key=lambda r: (r["step"], str(r.get("kind"))))


def series(rows: Iterable[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one metric across rows that have it."""
  pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r[key], (int, float))]
  if not pts:
    return np.zeros((0,)), np.zeros((0,))
  s, v = zip(*pts)
  return np.asarray(s), np.asarray(v, dtype=np.float64)
