"""The run directory: checks before a run writes anything, and atomic writes.

Every file the framework writes whole (config.json, final_metrics.json, results,
figures) goes through `write_atomic`: a temporary file in the same directory,
flushed and fsynced, then renamed over the target, so a kill or a full disk never
leaves a half-written file behind.
"""
from __future__ import annotations

import os
import tempfile

from research.errors import ConfigError


def check_workdir(workdir: str) -> None:
  """The workdir exists (created if needed) and can be written; nothing is left in it."""
  if not workdir:
    raise ConfigError("--workdir is required: the run's checkpoints and metrics go there")
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write_test", dir=workdir)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir {workdir!r} cannot be written ({e.strerror}); "
                      f"choose a writable --workdir") from e


def write_atomic(path: str, data: str | bytes) -> None:
  """Writes `data` to `path` all at once: readers see the old file or the new one."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
  try:
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_figure(fig, path: str, dpi: int = 120) -> None:
  """A matplotlib figure written atomically (PNG)."""
  import io
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  write_atomic(path, buf.getvalue())
