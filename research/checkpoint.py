"""Checkpoints with orbax: train state plus a JSON record of the data position.

The state is restored straight onto the current mesh from sharded abstract
targets, so a run may resume on another device count. Before anything is
restored, the checkpoint's own metadata (shapes and dtypes of every leaf) is
compared with the target: a checkpoint of another model is refused outright (never
decided by matching words in an error message). A checkpoint that cannot be read
(corrupt, half-written) is reported in one line and the previous one is tried;
nothing is ever deleted by a failed restore. When none can be read the run stops
unless told to start over, and then the unreadable ones are moved aside, not
deleted (orbax would otherwise refuse to save below their step numbers).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from research.errors import ConfigError
from research.workdir import WriteError, describe_os_error, path_str

try:  # The metadata store of orbax's own default jax.Array handler (orbax does not export it).
  from orbax.checkpoint._src.metadata import array_metadata_store
except ImportError:  # Another orbax layout: its default handler is kept.
  array_metadata_store = None

DIRNAME = "checkpoints"


class CheckpointMismatch(ConfigError):
  """The workdir's checkpoints belong to a state of other shapes (another experiment)."""


class CheckpointsUnreadable(ConfigError):
  """Checkpoints exist but none can be read."""


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), DIRNAME)


@functools.cache  # Once per process: the handler is registered globally.
def _save_whole_shards_on_cpu() -> None:
  """On CPU, jax.Arrays are saved without orbax's replica-parallel writes. Those split a
  replicated array's write among its replicas by slicing it on each device, one compiled
  slice program per array shape (82 programs, 1.75 s of a tiny GPICL run's first save on 8
  CPU devices; every new process pays them again: they compile under the persistent cache's
  threshold). On a CPU every device is host memory, so the split buys nothing; one replica
  writes each shard, as orbax does by default on GPUs. Same files, same restore. Other
  backends keep orbax's default."""
  if jax.default_backend() != "cpu" or array_metadata_store is None:
    return
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          use_replica_parallel=False, array_metadata_store=array_metadata_store.Store()),
      override=True)


def manager(workdir: str, *, max_to_keep: int, async_save: bool = True,
            create: bool = True) -> ocp.CheckpointManager:
  _save_whole_shards_on_cpu()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=create, enable_async_checkpointing=async_save)
  # Handlers named up front: a fresh manager can then read a checkpoint's metadata.
  handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory(workdir), options=options, item_handlers=handlers)


# TensorStore reports a failed write as `... "<file>": ... <reason> [os_error_code=...]`, the
# file in the last quotes before the reason, often nested in other errors (`Error opening
# "zarr" driver: Error writing "<array>/.zarray" in OCDBT database at local file "<dir>":
# ...`, seen in CI); re.S in case a message spans lines.
_TS_WRITE = re.compile(r'"([^"]+)"[^"]*?:\s*([^:\[\]"]+?)\s*\[os_error_code', re.S)
_TS_ERRNO = re.compile(r"\[os_error_code='?(\d+)")


def _write_error(e: BaseException, mngr) -> WriteError:
  """One line: the file that could not be written and why."""
  cause = e
  while cause is not None and not isinstance(cause, OSError):
    cause = cause.__cause__ or cause.__context__
  if cause is not None:
    what = describe_os_error(cause)
  else:
    what = _tensorstore_write_error(str(e)) or _one_line(e)
  return WriteError(f"saving a checkpoint in {mngr.directory} failed: {what}; the previous "
                    f"checkpoints are intact and the rerun resumes from the newest")


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict, *, force=False) -> bool:
  """Saves (asynchronously) `state` and the JSON `meta` at `step`."""
  try:
    return mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
  except Exception as e:  # An earlier async save may surface here too.
    raise _write_error(e, mngr) from e


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for pending asynchronous saves; a failed one becomes a `WriteError`."""
  try:
    mngr.wait_until_finished()
  except Exception as e:
    raise _write_error(e, mngr) from e


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (restore targets)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def _tensorstore_write_error(text: str) -> str | None:
  """"<reason> (<file>)" from a TensorStore write error, or None if it names no OS error."""
  m = _TS_WRITE.search(text)
  if m:
    return f"{m.group(2).strip()} ({m.group(1)})"
  m = _TS_ERRNO.search(text)
  return f"{os.strerror(int(m.group(1)))} ({_one_line_text(text)})" if m else None


def _one_line_text(text: str, keep: int = 240) -> str:
  """The message on one line; a long one keeps its start and its end, where nested errors
  put the innermost reason."""
  text = " ".join(text.split())
  return text if len(text) <= keep else f"{text[:keep // 2]} ... {text[-keep // 2:]}"


def _one_line(e: BaseException) -> str:
  return f"{type(e).__name__}: {_one_line_text(str(e))}"


def stored_signature(mngr: ocp.CheckpointManager, step: int) -> dict[str, list] | None:
  """{path: [shape, dtype]} the checkpoint at `step` says it holds; None if unreadable."""
  try:
    tree = mngr.item_metadata(step)["state"]
    tree = getattr(tree, "tree", tree)
  except Exception:  # Missing or damaged metadata.
    return None
  flat = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))[0]
  out = {path_str(p): [list(x.shape), str(x.dtype)] for p, x in flat if hasattr(x, "shape")}
  return out or None


def check_compatible(stored: dict, expected: dict, where: str) -> None:
  if stored != expected:
    diff = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
    shown = ", ".join(f"{k}: stored {stored.get(k)} vs {expected.get(k)}" for k in diff[:3])
    raise CheckpointMismatch(
        f"{where} holds a state of other shapes ({shown}); resume with the config it was "
        f"written with, or use a new --workdir (nothing was changed)")


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
  """(state, meta) of the newest readable checkpoint (at most `step`), or (None, None)
  when the directory holds none. Raises `CheckpointMismatch` for another model's
  checkpoints and `CheckpointsUnreadable` when there are checkpoints but none can be
  read."""
  from research.workdir import state_signature
  expected = state_signature(abstract_state)
  steps = sorted((s for s in mngr.all_steps() if step is None or s <= step), reverse=True)
  unreadable = []
  for s in steps:
    stored = stored_signature(mngr, s)
    if stored is not None:
      check_compatible(stored, expected, f"checkpoint {s} in {mngr.directory}")
    try:
      out = mngr.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      return out["state"], dict(out["meta"])
    except Exception as e:  # Corrupt or half-written: say so in one line, try the previous.
      unreadable.append(s)
      logging.warning("checkpoint %d in %s could not be read (%s); trying an earlier one",
                      s, mngr.directory, _one_line(e))
  if unreadable:
    raise CheckpointsUnreadable(
        f"no checkpoint in {mngr.directory} can be read (steps {unreadable}); nothing was "
        f"changed. To start over, rerun with --config.train.restart_if_unreadable=True (they "
        f"are moved aside, not deleted)")
  return None, None


def set_aside(workdir: str) -> str:
  """Moves the unreadable checkpoints out of the way (never deletes them)."""
  src = directory(workdir)
  dst = f"{src}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
  os.rename(src, dst)
  return dst
