"""The run directory: who owns it, what it holds, and writes that never tear.

A workdir belongs to one experiment and one live run:

* `claim(workdir, identity)` takes an exclusive lock for the run's life (the
  `filelock` library: an fcntl lock on `<workdir>/.lock`, released on any exit and by
  the OS when the owner dies, so it is never stale) and checks the workdir's
  identity record (`identity.json`: the task and the shapes and dtypes of the train
  state, written atomically before anything else). A run of another task, model or
  shapes is refused before it writes or deletes anything.
* Every file the framework writes whole (config, identity, final metrics, results,
  figures, caches) goes through `write_atomic`: a temporary file in the same
  directory, flushed and fsynced, then renamed over the target, so a kill or a full
  disk never leaves a half-written file. `metrics.jsonl` is append-only; a line cut by
  a kill is repaired when the file is next opened (`repair_jsonl`).
* A failed write (disk full, permissions) becomes `WriteError`: one line naming the
  path and the cause.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any, Iterator

import filelock

from research.errors import ConfigError

IDENTITY = "identity.json"
LOCK = ".lock"


class WriteError(RuntimeError):
  """A write the run needs failed (disk full, permissions): names the path and cause."""


class WorkdirInUse(ConfigError):
  """Another live run holds the workdir."""


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


def describe_os_error(e: OSError, path: str = "") -> str:
  where = path or getattr(e, "filename", "") or "?"
  return f"{e.strerror or type(e).__name__} ({where})"


def write_atomic(path: str, data: str | bytes) -> None:
  """Writes `data` to `path` all at once: readers see the old file or the new one."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    raise WriteError(f"could not write {path}: {describe_os_error(e, path)}; the previous "
                     f"version (if any) is intact. Free space or fix permissions and rerun") from e
  finally:
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


def save_figure(fig, path: str, dpi: int = 120) -> None:
  """A matplotlib figure written atomically (PNG)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  write_atomic(path, buf.getvalue())


def repair_jsonl(path: str) -> int:
  """Cuts a torn last line (no trailing newline: a write killed mid-line) from a JSON
  lines file so that the next row starts on a line of its own. Returns the bytes cut."""
  if not os.path.exists(path):
    return 0
  with open(path, "rb+") as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
      return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return 0
    # Find the start of the last (torn) line.
    pos = size - 1
    block = 4096
    while pos > 0:
      start = max(0, pos - block)
      f.seek(start)
      chunk = f.read(pos - start)
      i = chunk.rfind(b"\n")
      if i >= 0:
        pos = start + i + 1
        break
      pos = start
    f.truncate(pos)
    return size - pos


# ----------------------------------------------------------------------------
# Ownership: one experiment, one live run.
# ----------------------------------------------------------------------------
def path_str(path) -> str:
  """A tree path as "a/b/0/c", the same for dict keys, attributes and indices (a
  checkpoint's metadata stores named tuples as dicts)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def state_signature(abstract_state: Any) -> dict[str, list]:
  """{path: [shape, dtype]} of every leaf of an abstract train state."""
  import jax  # Light at this point: the trainer has it loaded.
  flat = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  return {path_str(p): [list(x.shape), str(x.dtype)] for p, x in flat}


def read_identity(workdir: str) -> dict | None:
  path = os.path.join(workdir, IDENTITY)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} cannot be read ({e}); the workdir's identity is damaged: use "
                      f"a new --workdir") from e


def check_identity(workdir: str, identity: dict) -> None:
  """Refuses a workdir that holds another experiment (task, or state shapes)."""
  old = read_identity(workdir)
  if old is None:  # A workdir from before identities: its config.json names the task.
    try:
      with open(os.path.join(workdir, "config.json")) as f:
        old = {"task": json.load(f).get("task")}
    except (OSError, ValueError, AttributeError):
      return
  if old.get("task") != identity.get("task"):
    raise ConfigError(f"workdir {workdir} holds a {old.get('task')!r} run; this is a "
                      f"{identity.get('task')!r} run. Use a new --workdir (nothing was changed)")
  a, b = old.get("state"), identity.get("state")
  if a is not None and b is not None and a != b:
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = ", ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in diff[:3])
    raise ConfigError(f"workdir {workdir} holds a run whose state has other shapes ({shown}); "
                      f"resuming would mix two experiments. Use a new --workdir, or the "
                      f"config the run was written with (nothing was changed)")


def write_identity(workdir: str, identity: dict) -> None:
  if read_identity(workdir) is None:
    write_atomic(os.path.join(workdir, IDENTITY), json.dumps(identity, indent=1, sort_keys=True))


def acquire(workdir: str) -> filelock.FileLock:
  """The workdir's lock, held by this process until `.release()` (one live run per
  workdir). Taken just before a run's first write, so a refused run writes nothing."""
  lock = filelock.FileLock(os.path.join(workdir, LOCK))
  try:
    lock.acquire(timeout=0)
  except filelock.Timeout:
    raise WorkdirInUse(f"workdir {workdir} is in use by another live run (lock "
                       f"{os.path.join(workdir, LOCK)}); wait for it to finish or stop it, "
                       f"or use another --workdir") from None
  return lock


def fail_if_in_use(workdir: str) -> None:
  """Refuses at once (before compiling anything) a workdir a live run holds."""
  if os.path.exists(os.path.join(workdir, LOCK)):
    acquire(workdir).release()


@contextlib.contextmanager
def claim(workdir: str, *, enabled: bool = True) -> Iterator[None]:
  """Holds the workdir's lock while the block runs."""
  lock = acquire(workdir) if enabled else None
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
