"""Discrete key-value bottleneck (Träuble et al., 2023), as Flax modules and pure functions.

f = decoder ∘ values ∘ keys ∘ heads(encoder(x)):
  * heads: the (frozen) embedding is split into C heads of dimension d_key, by a
    fixed random projection (Gaussian C×D×d_key, unit-norm columns, never
    trained), by chunking, by identity (C = 1) or by a learned projection;
  * keys: per head a codebook of J keys; the nearest (top-k) key is selected;
  * values: per head and key a learnable vector of size d_v;
  * decoder: non-parametric voting (mean of the fetched values over heads and k
    = logits), or a linear / MLP decoder on the concatenated values.

Keys, the fixed projection and the per-head "used" mask are *not* parameters:
they live in the `keys` variable collection, so an optimizer built on
`variables["params"]` never sees them. Only values (and an optional learned
decoder or projection) train.

The nearest-key search is chunked over keys (a loop with a running best), so
the paper's full size (256 heads × 4096 keys × 14 dims, batch 256) needs memory
B×C×chunk rather than B×C×J. The top-1 search (every lookup and every EMA
key-init step) also loops over groups of heads, so that each distance tile
stays in cache; see `nearest_keys`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers

Array = jax.Array

KEYS = "keys"  # Variable collection of the frozen state (projection, codebook, used).


# ----------------------------------------------------------------------------
# Pure functions.
# ----------------------------------------------------------------------------
def random_projection(rng: Array, num_heads: int, dim_in: int, dim_key: int) -> Array:
  """Gaussian (C, D, d_key) tensor whose columns (over D) have unit norm."""
  w = jax.random.normal(rng, (num_heads, dim_in, dim_key), jnp.float32)
  return w / jnp.linalg.norm(w, axis=1, keepdims=True)


def split_heads(x: Array, projection: Array | None, mode: str, num_heads: int,
                dim_key: int) -> Array:
  """Embedding (..., D) -> per-head queries (..., C, d_key)."""
  if mode in ("random", "learned"):
    return jnp.einsum("...d,cdk->...ck", x, projection)
  if mode == "chunk":
    if x.shape[-1] != num_heads * dim_key:
      raise ValueError(f"chunk heads need D = C*d_key, got D={x.shape[-1]}, "
                       f"C={num_heads}, d_key={dim_key}")
    return x.reshape(x.shape[:-1] + (num_heads, dim_key))
  if mode == "identity":
    if num_heads != 1 or x.shape[-1] != dim_key:
      raise ValueError("identity heads need C = 1 and d_key = D")
    return x[..., None, :]
  raise ValueError(f"unknown projection mode {mode!r}")


# Bytes of one distance tile (batch × heads × keys, float32) of the top-1 search.
# On CPU a tile that fits in L2/L3 is written once and read from cache by the
# min and index passes; the untiled search wrote and re-read B×C×J floats (1 GiB
# per step at the paper's size) through main memory and was 2-3x slower
# (`research/dkvb/bench.py`). Accelerators prefer few large tiles.
CPU_TILE_BYTES = 4 << 20
ACCELERATOR_TILE_BYTES = 1 << 30
SUB_BLOCK = 16  # Keys per block of the two-level argmin in `_top1_tile`.


def _chunk_topk(q: Array, keys_chunk: Array, valid: Array | None, k: int):
  """Top-k smallest squared distances of head-major q (C, B, d) to keys (C, j, d).

  Returns (distances, indices), each (C, B, k).
  """
  d2 = (jnp.sum(q * q, -1)[..., None]
        - 2.0 * jnp.einsum("cbd,cjd->cbj", q, keys_chunk)
        + jnp.sum(keys_chunk * keys_chunk, -1)[:, None, :])
  if valid is not None:
    d2 = jnp.where(valid[:, None, :], d2, jnp.inf)
  neg, idx = jax.lax.top_k(-d2, k)
  return -neg, idx


def _top1_tile(q_aug: Array, keys_chunk: Array, valid: Array | None) -> tuple[Array, Array]:
  """Nearest key of a tile: q_aug (h, B, d+1) = [q, 1], keys (h, j, d), j % SUB_BLOCK == 0.

  Returns (min over keys of |k|² - 2 q·k, its first index), each (h, B).
  One matmul gives |k|² - 2 q·k (keys augmented with |k|², queries with 1);
  |q|² is added by the caller. The (h, j, B) layout makes both reductions run
  over a major axis (element-wise vector min, no horizontal reduction). The
  argmin is two-level and exactly the first minimal index: the min of every block
  of SUB_BLOCK keys (one pass over the tile), the first block holding the
  overall min, then the first index inside that block. XLA:CPU's variadic
  argmin reduction was ~7x slower, a full second pass (where d == min) ~1.2x.
  """
  h, j, _ = keys_chunk.shape
  sq = jnp.sum(keys_chunk * keys_chunk, -1, keepdims=True)
  k_aug = jnp.concatenate([-2.0 * keys_chunk, sq], -1)
  d2 = jnp.einsum("hjd,hbd->hjb", k_aug, q_aug)
  if valid is not None:
    d2 = jnp.where(valid[:, :, None], d2, jnp.inf)
  blocks = d2.reshape(h, j // SUB_BLOCK, SUB_BLOCK, -1)
  block_min = jnp.min(blocks, axis=2)  # (h, j / SUB_BLOCK, B)
  best = jnp.min(block_min, axis=1)  # (h, B)
  blk = _first_hit(block_min == best[:, None, :])
  inner = jnp.take_along_axis(blocks, blk[:, None, None, :], axis=1)[:, 0]  # (h, SUB_BLOCK, B)
  return best, blk * SUB_BLOCK + _first_hit(inner == best[:, None, :])


def _first_hit(hit: Array) -> Array:
  """First True index along axis 1 of (h, n, B) (n - 1 if none): a min over an
  iota, which XLA:CPU vectorises, unlike its variadic argmax/argmin reductions."""
  n = hit.shape[1]
  iota = jax.lax.broadcasted_iota(jnp.int32, hit.shape, 1)
  return jnp.minimum(jnp.min(jnp.where(hit, iota, n), axis=1), n - 1)


def _head_group(num_heads: int, batch: int, chunk: int, tile_bytes: int) -> int:
  """Largest divisor g of num_heads with a (batch, g, chunk) float32 tile ≤ tile_bytes."""
  fits = [g for g in range(1, num_heads + 1)
          if num_heads % g == 0 and batch * g * chunk * 4 <= tile_bytes]
  return max(fits, default=1)


def _nearest_key(queries: Array, keys: Array, valid: Array | None, chunk_size: int,
                 tile_bytes: int | None) -> tuple[Array, Array]:
  """Top-1 search tiled over groups of heads and chunks of keys; see `nearest_keys`."""
  num_heads, num_keys, dim = keys.shape
  batch = queries.shape[0]
  round_up = lambda n, m: -(-n // m) * m
  chunk = round_up(min(chunk_size, num_keys), SUB_BLOCK)
  n_chunks = -(-num_keys // chunk)
  pad = n_chunks * chunk - num_keys
  if pad:  # Padded keys are never selected.
    keys = jnp.pad(keys, ((0, 0), (0, pad), (0, 0)))
    valid = jnp.pad(jnp.ones((num_heads, num_keys), bool) if valid is None else valid,
                    ((0, 0), (0, pad)))
  if tile_bytes is None:
    tile_bytes = CPU_TILE_BYTES if jax.default_backend() == "cpu" else ACCELERATOR_TILE_BYTES
  heads = _head_group(num_heads, batch, chunk, tile_bytes)
  groups = num_heads // heads
  q = jnp.swapaxes(queries, 0, 1)  # (C, B, d)
  q_aug = jnp.concatenate([q, jnp.ones(q.shape[:-1] + (1,), q.dtype)], -1)
  by_group = lambda a: None if a is None else a.reshape((groups, heads) + a.shape[1:])

  def search_group(args):
    q_g, keys_g, valid_g = args

    def chunk_step(i, carry):
      best_d, best_i = carry
      kc = jax.lax.dynamic_slice_in_dim(keys_g, i * chunk, chunk, axis=1)
      vc = None if valid_g is None else jax.lax.dynamic_slice_in_dim(valid_g, i * chunk, chunk, 1)
      d, idx = _top1_tile(q_g, kc, vc)
      better = d < best_d  # Strictly: ties keep the earlier (lower) index, like argmin.
      return jnp.where(better, d, best_d), jnp.where(better, idx + i * chunk, best_i)

    init = (jnp.full((heads, batch), jnp.inf, queries.dtype),
            jnp.zeros((heads, batch), jnp.int32))
    if n_chunks == 1:
      return chunk_step(0, init)
    return jax.lax.fori_loop(0, n_chunks, chunk_step, init)

  args = (by_group(q_aug), by_group(keys), by_group(valid))
  if groups == 1:
    best_d, best_i = jax.tree.map(lambda a: a[None], search_group(
        jax.tree.map(lambda a: a[0], args)))
  else:
    best_d, best_i = jax.lax.map(search_group, args)
  best_d = best_d.reshape(num_heads, batch) + jnp.sum(q * q, -1)
  best_i = best_i.reshape(num_heads, batch)
  return best_i.T[..., None], best_d.T[..., None]


def nearest_keys(queries: Array, keys: Array, *, k: int = 1, mask: Array | None = None,
                 chunk_size: int = 1024, tile_bytes: int | None = None) -> tuple[Array, Array]:
  """Top-k nearest keys per head, chunked over keys.

  Args:
    queries: (B, C, d_key).
    keys: (C, J, d_key) codebooks.
    k: number of keys fetched per head.
    mask: optional (C, J) bool; only True keys may be selected. A head whose
      mask is all False falls back to all its keys.
    chunk_size: keys processed at once; peak memory is O(B·C·chunk_size).
    tile_bytes: top-1 only: heads are searched in groups whose distance tile
      (B × heads × chunk floats) fits this many bytes; default by backend
      (`CPU_TILE_BYTES`, `ACCELERATOR_TILE_BYTES`).

  Returns:
    (indices (B, C, k) int32, squared distances (B, C, k)), nearest first; ties
    go to the lower index.
  """
  num_heads, num_keys, dim = keys.shape
  if mask is not None:
    mask = mask | ~jnp.any(mask, axis=-1, keepdims=True)
  if k == 1:
    return _nearest_key(queries, keys, mask, chunk_size, tile_bytes)
  q = jnp.swapaxes(queries, 0, 1)  # (C, B, d): heads as the leading batch dim of the matmul.
  out = lambda d, i: (jnp.swapaxes(i, 0, 1).astype(jnp.int32), jnp.swapaxes(d, 0, 1))
  if num_keys <= chunk_size:
    d, i = _chunk_topk(q, keys, mask, k)
    return out(d, i)
  n_chunks = -(-num_keys // chunk_size)
  pad = n_chunks * chunk_size - num_keys
  keys_p = jnp.pad(keys, ((0, 0), (0, pad), (0, 0)))
  keys_c = keys_p.reshape(num_heads, n_chunks, chunk_size, dim).transpose(1, 0, 2, 3)
  valid_c = None  # No mask and no padding: skip the masking pass over the distances.
  if mask is not None or pad:
    valid = jnp.ones((num_heads, num_keys), bool) if mask is None else mask
    valid_p = jnp.pad(valid, ((0, 0), (0, pad)))
    valid_c = valid_p.reshape(num_heads, n_chunks, chunk_size).transpose(1, 0, 2)
  batch = queries.shape[0]
  init = (jnp.full((num_heads, batch, k), jnp.inf, queries.dtype),
          jnp.zeros((num_heads, batch, k), jnp.int32))

  def body(carry, xs):
    best_d, best_i = carry
    kc, vc, offset = xs
    d, i = _chunk_topk(q, kc, vc, min(k, chunk_size))
    all_d = jnp.concatenate([best_d, d], -1)
    all_i = jnp.concatenate([best_i, i.astype(jnp.int32) + offset], -1)
    neg, pos = jax.lax.top_k(-all_d, k)
    return (-neg, jnp.take_along_axis(all_i, pos, -1)), None

  offsets = jnp.arange(n_chunks, dtype=jnp.int32) * chunk_size
  (best_d, best_i), _ = jax.lax.scan(body, init, (keys_c, valid_c, offsets))
  return out(best_d, best_i)


def gather_values(values: Array, indices: Array) -> Array:
  """values (C, J, d_v), indices (B, C, k) -> fetched values (B, C, k, d_v)."""
  heads = jnp.arange(values.shape[0])[None, :, None]
  return values[heads, indices]


def mark_used(used: Array, indices: Array) -> Array:
  """OR into the (C, J) used mask every key selected in `indices` (B, C, k)."""
  num_heads = used.shape[0]
  heads = jnp.broadcast_to(jnp.arange(num_heads)[None, :, None], indices.shape)
  return used.at[heads.reshape(-1), indices.reshape(-1)].set(True)


# ----------------------------------------------------------------------------
# Module.
# ----------------------------------------------------------------------------
class KeyValueBottleneck(nn.Module):
  """Heads -> frozen keys -> learnable values -> decoder.

  Variables:
    params/values (C, J, d_v): the only parameters of the voting variant.
    params/decoder*: for `decoder="linear" | "mlp"`.
    params/projection: for `projection="learned"`.
    keys/codebook (C, J, d_key), keys/used (C, J) bool, keys/projection
      (C, D, d_key) for `projection="random"`: frozen state, set by key
      initialisation (`research.dkvb.keys`) and by `mark_used`.
  """
  dim_in: int
  num_heads: int
  num_keys: int
  dim_key: int
  dim_value: int
  num_classes: int | None = None
  projection: str = "random"  # random | chunk | identity | learned
  top_k: int = 1
  decoder: str = "vote"  # vote | linear | mlp
  decoder_hidden: int = 128
  value_init: str = "zeros"  # zeros | normal
  value_init_scale: float = 1e-3
  key_chunk: int = 1024

  def setup(self):
    c, j, d = self.num_heads, self.num_keys, self.dim_key
    self.codebook = self.variable(
        KEYS, "codebook", lambda: jax.random.uniform(self.make_rng("keys"), (c, j, d)))
    self.used = self.variable(KEYS, "used", lambda: jnp.zeros((c, j), bool))
    if self.projection == "random":
      self.proj = self.variable(KEYS, "projection", lambda: random_projection(
          self.make_rng("keys"), c, self.dim_in, d)).value
    elif self.projection == "learned":
      self.proj = self.param("projection", nn.with_logical_partitioning(
          lambda r, s: random_projection(r, s[0], s[1], s[2]),
          ("codebook_heads", "embed", "key_dim")),
                             (c, self.dim_in, d))
    else:
      self.proj = None
    init = (nn.initializers.zeros if self.value_init == "zeros"
            else nn.initializers.normal(self.value_init_scale))
    self.values = self.param("values", nn.with_logical_partitioning(
        init, ("codebook_heads", "keys", "values")), (c, j, self.dim_value))
    out = self.num_classes or self.dim_value
    dense = lambda n, axes, name: layers.dense(n, axes, name=name)
    if self.decoder == "linear":
      self.dec = [dense(out, ("embed", "classes"), "decoder")]
    elif self.decoder == "mlp":
      self.dec = [dense(self.decoder_hidden, ("embed", "mlp"), "decoder_hidden"),
                  dense(out, ("mlp", "classes"), "decoder")]
    elif self.decoder != "vote":
      raise ValueError(f"unknown decoder {self.decoder!r}")

  def queries(self, x: Array) -> Array:
    """Embedding (B, D) -> per-head queries (B, C, d_key)."""
    return split_heads(x, self.proj, self.projection, self.num_heads, self.dim_key)

  def lookup(self, x: Array, restrict_to_used: bool = False) -> tuple[Array, Array]:
    """Embedding (B, D) -> (key indices (B, C, k), squared distances)."""
    return nearest_keys(self.queries(x), jax.lax.stop_gradient(self.codebook.value),
                        k=self.top_k, mask=self.used.value if restrict_to_used else None,
                        chunk_size=self.key_chunk)

  def read(self, indices: Array) -> Array:
    """Key indices (B, C, k) -> logits (B, num_classes or d_v)."""
    fetched = gather_values(self.values, indices)  # (B, C, k, d_v)
    if self.decoder == "vote":
      return jnp.mean(fetched, axis=(1, 2))
    h = fetched.mean(axis=2).reshape(fetched.shape[0], -1)
    for i, layer in enumerate(self.dec):
      h = layer(h)
      if i < len(self.dec) - 1:
        h = nn.relu(h)
    return h

  def init_all(self, x: Array) -> Array:
    """Creates every variable without the nearest-key search (a cheap init program)."""
    self.queries(x)
    return self.read(jnp.zeros((x.shape[0], self.num_heads, self.top_k), jnp.int32))

  def __call__(self, x: Array, restrict_to_used: bool = False) -> tuple[Array, Array]:
    """Embedding (B, D) -> (logits, key indices). Set `restrict_to_used` at eval."""
    idx, _ = self.lookup(x, restrict_to_used)
    return self.read(idx), idx


def init_bottleneck(model: KeyValueBottleneck, rng: Array) -> dict[str, Any]:
  """Plain-pytree variables {"params": ..., "keys": ...} (logical boxes removed).

  Initialised through `init_all`, which skips the nearest-key search (a much
  smaller program to compile)."""
  r_p, r_k = jax.random.split(rng)
  variables = model.init({"params": r_p, "keys": r_k},
                         jnp.zeros((1, model.dim_in), jnp.float32), method=model.init_all)
  return nn.meta.unbox(variables)


# ----------------------------------------------------------------------------
# Baseline probes on the same frozen embedding.
# ----------------------------------------------------------------------------
class LinearProbe(nn.Module):
  num_classes: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return layers.dense(self.num_classes, ("input", "classes"), use_bias=self.use_bias)(x)


class MLPProbe(nn.Module):
  num_classes: int
  hidden: int = 128

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = nn.relu(layers.dense(self.hidden, ("input", "mlp"))(x))
    return layers.dense(self.num_classes, ("mlp", "classes"))(h)


# ----------------------------------------------------------------------------
# A small frozen encoder, pretrained in-framework (research/dkvb/pretrain.py).
# ----------------------------------------------------------------------------
class MLPAutoEncoder(nn.Module):
  """x -> ReLU MLP -> linear `dim`-d embedding -> ReLU MLP -> reconstruction of x.

  After pretraining only `encode` is used, as DKVB's frozen encoder.
  """
  dim_in: int
  dim: int = 32
  hidden: int = 256

  def setup(self):
    dense = lambda n, axes, name: layers.dense(n, axes, name=name)
    self.enc_hidden = dense(self.hidden, ("input", "mlp"), "enc_hidden")
    self.enc_out = dense(self.dim, ("mlp", "embed"), "enc_out")
    self.dec_hidden = dense(self.hidden, ("embed", "mlp"), "dec_hidden")
    self.dec_out = dense(self.dim_in, ("mlp", "input"), "dec_out")

  def encode(self, x: Array) -> Array:
    return self.enc_out(nn.relu(self.enc_hidden(x)))

  def __call__(self, x: Array) -> Array:
    return self.dec_out(nn.relu(self.dec_hidden(self.encode(x))))
