"""Checkpoints with orbax: train state plus a JSON record of the data position.

The state is restored straight onto the current mesh from sharded abstract
targets, so a run may resume on another device count. A latest checkpoint that
fails to restore (corrupt, half-written) is reported and the previous one used;
nothing is deleted by a failed restore.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from research.errors import ConfigError


def manager(workdir: str, *, max_to_keep: int, async_save: bool = True,
            create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=create, enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict, *, force=False) -> bool:
  """Saves (asynchronously) `state` and the JSON `meta` at `step`."""
  return mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (restore targets)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
  """Returns (state, meta) of the newest restorable checkpoint (at most `step`), or
  (None, None)."""
  for step in sorted((s for s in mngr.all_steps() if step is None or s <= step), reverse=True):
    try:
      out = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      return out["state"], dict(out["meta"])
    except Exception as e:  # Corrupt or incompatible: say so, try the previous one.
      logging.warning("checkpoint at step %d in %s could not be restored (%s: %s); "
                      "trying an earlier one", step, mngr.directory, type(e).__name__, e)
      if _shape_mismatch(e):
        raise CheckpointMismatch(
            f"checkpoint at step {step} in {mngr.directory} does not match this config's "
            f"state ({e}); resume with the config it was written with (see config.json in the "
            f"workdir) or start a new --workdir") from e
  return None, None


class CheckpointMismatch(ConfigError):
  pass


def _shape_mismatch(e: Exception) -> bool:
  msg = str(e).lower()
  return "shape" in msg and ("mismatch" in msg or "does not match" in msg or "incompatible" in msg)
