"""Meshes and logical-axis sharding rules.

Parameters carry logical axis names (`nn.with_logical_partitioning`); the config
maps each name to mesh axes (`config.sharding.rules`). Data parallel, FSDP and
tensor parallel are then rule sets, not code changes:

  DP:   ("batch", "data")                      params replicated
  FSDP: ("batch", "data"), ("embed", "data")   params and Adam moments sharded
  TP:   ("batch", "data"), ("mlp", "model"), ("heads", "model"), ("vocab", "model")

The mapping itself is flax's (`nn.logical_to_mesh_sharding`; activations use
`nn.with_logical_constraint` inside `activation_rules`). What this module adds,
before anything compiles: a logical name must either have a rule or be one of the
`KNOWN_AXES` the models use (those without a rule are replicated; any other name
is a typo and fails), rules may only name mesh axes that exist, and every sharded
dimension must divide by its mesh axes.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from research.errors import ConfigError

RULE_SETS = {
    "dp": (("batch", "data"),),
    "fsdp": (("batch", "data"), ("embed", "data")),
    "tp": (("batch", "data"), ("mlp", "model"), ("heads", "model"), ("vocab", "model"),
           ("kv_heads", "model"), ("codebook_heads", "model")),
    "fsdp_tp": (("batch", "data"), ("embed", "data"), ("mlp", "model"), ("heads", "model"),
                ("vocab", "model"), ("kv_heads", "model"), ("codebook_heads", "model")),
}
# The logical names models use; replicated unless a rule maps them to a mesh axis.
KNOWN_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "kv_heads", "vocab",
              "classes", "input", "keys", "values", "state", "layers", "key_dim",
              "codebook_heads", "seeds")


class ShardingError(ConfigError):
  """A mesh or sharding rule that cannot work; raised before compiling."""


def make_mesh(axes: Sequence[tuple[str, int]], devices=None) -> Mesh:
  """Mesh from `[(name, size), ...]`; one size may be -1 (all remaining devices)."""
  devices = jax.devices() if devices is None else devices
  names = tuple(str(n) for n, _ in axes)
  sizes = [int(s) for _, s in axes]
  n = len(devices)
  if sizes.count(-1) > 1:
    raise ShardingError(f"config.mesh {list(axes)} has more than one -1; at most one axis may fill the rest")
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes):
    raise ShardingError(f"config.mesh {list(axes)}: axis sizes must be positive or -1")
  if -1 in sizes:
    if n % known:
      raise ShardingError(
          f"config.mesh {list(axes)} does not fit {n} devices: {known} does not divide {n}; "
          f"choose sizes whose product divides {n}")
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) < n and jax.process_count() == 1:
    devices = devices[:math.prod(sizes)]  # A small model on the first few devices.
  elif math.prod(sizes) != n:
    raise ShardingError(
        f"config.mesh {list(axes)} needs {math.prod(sizes)} devices but {n} are available; "
        f"use -1 for one axis (e.g. --config.mesh='((\"data\", -1), (\"model\", 1))')")
  return jax.make_mesh(tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names),
                       devices=devices)


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
  """`"fsdp"` (a named set) or an explicit list of (logical, mesh axis|None)."""
  if isinstance(rules, str):
    if rules not in RULE_SETS:
      raise ShardingError(f"config.sharding.rules={rules!r} is not a known rule set; "
                          f"use one of {sorted(RULE_SETS)} or a list of (logical, mesh_axis) pairs")
    rules = RULE_SETS[rules]
  return tuple((str(k), (tuple(v) if isinstance(v, list) else v)) for k, v in rules)


def _check_rules(rules, mesh: Mesh) -> None:
  for name, target in rules:
    for t in (target if isinstance(target, tuple) else (target,)):
      if t is not None and t not in mesh.axis_names:
        raise ShardingError(f"sharding rule ({name!r}, {target!r}) names mesh axis {t!r}, "
                            f"but the mesh has {mesh.axis_names}; fix config.sharding.rules or "
                            f"config.mesh")


def logical_to_mesh_spec(logical: P, shape, rules, mesh: Mesh, where: str = "?") -> P:
  """Maps one logical PartitionSpec to a mesh PartitionSpec (flax's mapping), checking
  that every name is known and every sharded dimension divides by its mesh axes."""
  _check_rules(rules, mesh)
  ruled = {name for name, _ in rules}
  for name in tuple(logical):
    if name is not None and name not in ruled and name not in KNOWN_AXES:
      raise ShardingError(
          f"logical axis {name!r} (in {where}) has no sharding rule; add ({name!r}, None) "
          f"to config.sharding.rules to replicate it, or map it to a mesh axis")
  spec = nn.logical_to_mesh_axes(tuple(logical), rules)
  for dim, axes in enumerate(tuple(spec)):
    axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    size = math.prod(mesh.shape[a] for a in axes)
    if axes and shape is not None and shape[dim] % size:
      raise ShardingError(
          f"{where}: dimension {dim} (logical {tuple(logical)[dim]!r}, size {shape[dim]}) does "
          f"not divide by mesh axes {axes} of size {size}; change the model size, the mesh, or "
          f"the rule for {tuple(logical)[dim]!r}")
  return spec


def tree_shardings(abstract_boxed: Any, rules, mesh: Mesh) -> Any:
  """NamedShardings for a tree whose leaves may be `nn.Partitioned` boxes.

  Returns a tree matching `nn.unbox(abstract_boxed)`.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  shapes = nn.unbox(abstract_boxed)
  is_spec = lambda x: isinstance(x, P)
  paths_specs = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)[0]
  leaves = jax.tree.leaves(shapes)
  if len(paths_specs) != len(leaves):
    raise ShardingError("internal: partition specs and state leaves do not line up")
  for (path, spec), leaf in zip(paths_specs, leaves):
    logical_to_mesh_spec(spec if is_spec(spec) else P(), leaf.shape, rules, mesh,
                         jax.tree_util.keystr(path))
  specs = jax.tree.map(lambda s: s if is_spec(s) else P(), specs, is_leaf=is_spec)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def with_leading_axis(s: NamedSharding, k: int = 1) -> NamedSharding:
  """The same sharding for an array with `k` more (replicated) leading dimensions:
  the seed axis of vmapped replicas, the step axis of stacked host batches."""
  return NamedSharding(s.mesh, P(*((None,) * k), *s.spec)) if k else s


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules):
  """While tracing a step: `models.layers.constrain(x, logical_axes)` in models maps
  activations' logical axes by the same rules (outside it, constraints are no-ops)."""
  from models import layers
  token = layers.ACTIVATION_SHARDING.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    layers.ACTIVATION_SHARDING.reset(token)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Shards the leading (batch) dimension as the "batch" rule says."""
  return NamedSharding(mesh, logical_to_mesh_spec(P("batch"), None, rules, mesh, "batch"))


def process_rows(batch_sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
  """[start, stop) of the global batch rows held by this process's devices."""
  index = batch_sharding.addressable_devices_indices_map((global_batch,))
  starts = [idx[0].start or 0 for idx in index.values()]
  stops = [global_batch if idx[0].stop is None else idx[0].stop for idx in index.values()]
  start, stop = min(starts), max(stops)
  held = sum(b - a for a, b in {(a, b) for a, b in zip(starts, stops)})
  if held != stop - start:  # make_array_from_process_local_data needs one block.
    raise ShardingError(f"this process's devices hold non-contiguous batch rows "
                        f"{sorted(set(zip(starts, stops)))}; order the mesh devices by process")
  return start, stop


def put_boxed(tree: Any, rules, mesh: Mesh) -> Any:
  """A host tree whose leaves may be `nn.Partitioned` (identical on every process) as
  global arrays sharded by the logical rules: e.g. a frozen LLM, FSDP-sharded."""
  return jax.tree.map(put_global, nn.unbox(tree), tree_shardings(tree, rules, mesh))


def batch_axis_size(mesh: Mesh, rules) -> int:
  target = batch_sharding(mesh, rules).spec[0]
  axes = () if target is None else (target if isinstance(target, tuple) else (target,))
  return math.prod(mesh.shape[a] for a in axes)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array (identical on every process) as a global array with `sharding`:
  each process places only the shards its devices hold."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_replicated(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array (identical on every process) as a replicated global array."""
  return put_global(x, replicated(mesh))


def to_host(tree: Any) -> Any:
  """Fetches fully replicated (or fully addressable) arrays to NumPy on every process."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(fetch, tree)


def bytes_per_device(tree: Any) -> int:
  """Largest per-device footprint of a sharded tree (bytes)."""
  per = {}
  for x in jax.tree.leaves(tree):
    for s in x.addressable_shards:
      per[s.device] = per.get(s.device, 0) + s.data.nbytes
  return max(per.values()) if per else 0
