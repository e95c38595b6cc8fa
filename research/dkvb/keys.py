"""Key initialisation for the discrete key-value bottleneck, then frozen forever.

EMA (VQ-VAE style, as the released code does it): per head, every key moves to
the exponential moving average of the queries assigned to it,

  N_j <- γ N_j + (1-γ) n_j,   S_j <- γ S_j + (1-γ) Σ_{q→j} q,
  key_j = S_j / Ñ_j,  Ñ_j = (N_j + ε) / (Σ N + J ε) · Σ N   (Laplace smoothing),

and keys whose usage N_j falls below `dead_fraction · batch / J` are replaced by
random query vectors of the current batch (during initialisation only). The
data is unlabelled and, in the paper, from a different dataset than the task.
k-means (Lloyd) is the alternative.

Everything runs in one jitted `lax.scan`; the nearest-key search is the tiled
`models.kv_bottleneck.nearest_keys`, so 256 heads × 4096 keys × 14 dims runs in
bounded memory, and the per-key counts and sums are scatter-adds
(`segment_sum`), not a (heads, batch, keys) one-hot. At that size the search is
~70 % of a step (`research/dkvb/bench.py`).

Step count: the paper and its released code run 10 epochs of EMA updates over
the unlabelled data (`init_epochs=10`, a DataLoader with batch 256 and no
drop_last: 196 batches per epoch of CIFAR100's 50k images, i.e. 1960 updates,
one of 80 images per epoch). Here every update sees a full batch and the
partial one is dropped: `ema_num_steps(50000, 256, 10) == 1950`.
"""
from __future__ import annotations

import functools

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from models.kv_bottleneck import nearest_keys
from research import compiling

Array = jax.Array


class EMAState(NamedTuple):
  codebook: Array  # (C, J, d)
  cluster_size: Array  # (C, J) EMA usage N
  embed_sum: Array  # (C, J, d) EMA sum S
  num_replaced: Array  # () dead keys replaced so far


def ema_state(codebook: Array) -> EMAState:
  """Start with usage 1 and S = key, so an unassigned key stays where it is
  until its usage decays below the dead threshold."""
  c, j, _ = codebook.shape
  return EMAState(codebook, jnp.ones((c, j), codebook.dtype), codebook,
                  jnp.zeros((), jnp.int32))


def assignment_stats(queries: Array, codebook: Array, chunk_size: int) -> tuple[Array, Array]:
  """Per-key counts (C, J) and sums (C, J, d) of queries (B, C, d) at their nearest key."""
  c, j, d = codebook.shape
  idx, _ = nearest_keys(queries, codebook, k=1, chunk_size=chunk_size)
  idx = idx[..., 0]  # (B, C)
  flat = (jnp.arange(c)[None, :] * j + idx).reshape(-1)
  counts = jax.ops.segment_sum(jnp.ones_like(flat, queries.dtype), flat, c * j)
  sums = jax.ops.segment_sum(queries.reshape(-1, d), flat, c * j)
  return counts.reshape(c, j), sums.reshape(c, j, d)


def ema_step(state: EMAState, queries: Array, rng: Array, *, decay: float = 0.95,
             eps: float = 1e-5, dead_fraction: float = 0.1, replace_dead: bool = True,
             chunk_size: int = 1024) -> EMAState:
  """One EMA update of all codebooks with a batch of queries (B, C, d)."""
  batch = queries.shape[0]
  c, j, _ = state.codebook.shape
  counts, sums = assignment_stats(queries, state.codebook, chunk_size)
  size = decay * state.cluster_size + (1 - decay) * counts
  embed_sum = decay * state.embed_sum + (1 - decay) * sums
  total = size.sum(-1, keepdims=True)
  smoothed = (size + eps) / (total + j * eps) * total
  codebook = embed_sum / smoothed[..., None]
  replaced = state.num_replaced
  if replace_dead:
    dead = size < dead_fraction * batch / j  # (C, J)
    pick = jax.random.randint(rng, (c, j), 0, batch)
    samples = queries[pick, jnp.arange(c)[:, None]]  # (C, J, d)
    codebook = jnp.where(dead[..., None], samples, codebook)
    embed_sum = jnp.where(dead[..., None], samples, embed_sum)
    size = jnp.where(dead, 1.0, size)
    replaced = replaced + dead.sum().astype(jnp.int32)
  return EMAState(codebook, size, embed_sum, replaced)


DataSource = Array | np.ndarray | Callable[[Array, int], Array]


def _batch(data: DataSource, rng: Array, step_indices: Array | None, batch_size: int) -> Array:
  if callable(data):
    return data(rng, batch_size)
  return jnp.asarray(data)[step_indices]


def ema_num_steps(num_examples: int, batch_size: int, epochs: int) -> int:
  """EMA updates for `epochs` passes over `num_examples` in full batches (≥ 1)."""
  return epochs * max(num_examples // min(batch_size, num_examples), 1)


def _epoch_indices(rng: Array, n: int, num_steps: int, batch_size: int) -> Array:
  """(num_steps, batch) indices: consecutive shuffled epochs, no repeats within one."""
  per_epoch = max(n // batch_size, 1)
  epochs = -(-num_steps // per_epoch)
  perms = jax.vmap(lambda r: jax.random.permutation(r, n)[:per_epoch * batch_size])(
      jax.random.split(rng, epochs))
  return perms.reshape(epochs * per_epoch, batch_size)[:num_steps]


def _project_pool(to_queries: Callable[[Array], Array], pool: Array, batch_size: int) -> Array:
  """to_queries over the whole (N, D) pool, `batch_size` rows at a time -> (N, C, d)."""
  n = pool.shape[0]
  full = n // batch_size * batch_size
  out = jax.lax.map(to_queries, pool[:full].reshape(n // batch_size, batch_size, -1))
  out = out.reshape((full,) + out.shape[2:])
  return out if full == n else jnp.concatenate([out, to_queries(pool[full:])])


def ema_init_keys(rng: Array, data: DataSource, to_queries: Callable[..., Array],
                  codebook: Array, *, num_steps: int, batch_size: int,
                  decay: float = 0.95, eps: float = 1e-5, dead_fraction: float = 0.1,
                  init_from_data: bool = True, chunk_size: int = 1024,
                  query_cache_bytes: int = 1 << 30, return_state: bool = False,
                  query_args: Any = None):
  """EMA key initialisation over unlabelled data.

  Args:
    rng: PRNG key.
    data: an (N, D) array of unlabelled embeddings, or `sample(rng, batch) -> (B, D)`.
    to_queries: embeddings (B, D) -> per-head queries (B, C, d), e.g.
      `functools.partial(model.apply, variables, method=model.queries)`; or, with
      `query_args`, `to_queries(query_args, x)`: the arrays it reads (a seed's
      projection) are then an argument of the compiled program, which is compiled
      once for every seed of the same shapes.
    codebook: (C, J, d) starting keys (e.g. the module's random init).
    num_steps: EMA updates (the paper: 10 epochs, see `ema_num_steps`).
    init_from_data: first set every key to a random query of the first batch,
      so no key starts far from the data.
    query_cache_bytes: when the steps pass over an (N, D) pool more than once
      and its queries (N, C, d) take at most this many bytes, project the pool
      once and reuse the queries every epoch (the projection was ~20 % of a
      step at the paper's size).

  Returns:
    The trained codebook (C, J, d) (and the final `EMAState` if `return_state`).
  """
  sampler = data if callable(data) else None
  n = None if sampler is not None else int(np.shape(data)[0])
  if n is not None and batch_size > n:
    batch_size = n
  r_idx, r_init, r_steps = jax.random.split(rng, 3)
  idx = None if n is None else _epoch_indices(r_idx, n, num_steps, batch_size)
  # An argument, not a closed-over constant: the pool (e.g. 50k × 2048 floats)
  # must not be baked into the compiled program.
  pool = None if sampler is not None else jnp.asarray(data)
  step_rngs = jax.random.split(r_steps, num_steps)
  c, j, d = codebook.shape
  reuse = (n is not None and num_steps * batch_size > n
           and n * c * d * jnp.dtype(codebook.dtype).itemsize <= query_cache_bytes)
  if query_args is None:
    query_args, fn = (), to_queries
    to_queries = lambda args, x: fn(x)
  # The loop's distance matmuls: a toy's key init compiles for longer than it runs.
  flops = 2.0 * num_steps * batch_size * c * j * (d + 1)
  program = _ema_program(to_queries, sampler, num_steps, batch_size, decay, eps, dead_fraction,
                         chunk_size, init_from_data, reuse,
                         flops < compiling.SMALL_LOOP_FLOPS)
  state = program(codebook, pool, idx, step_rngs, r_init, query_args)
  return (state.codebook, state) if return_state else state.codebook


@functools.lru_cache(maxsize=32)
def _ema_program(to_queries, sampler, num_steps, batch_size, decay, eps, dead_fraction,
                 chunk_size, init_from_data, reuse, small):
  """The jitted EMA loop for one set of static settings (reused across seeds)."""
  cfg = dict(decay=decay, eps=eps, dead_fraction=dead_fraction, chunk_size=chunk_size)

  @functools.partial(jax.jit, compiler_options=compiling.run_once() if small else None)
  def run(codebook, pool, idx, step_rngs, r_init, query_args):
    c, j, _ = codebook.shape
    to_q = functools.partial(to_queries, query_args)
    if reuse:
      pool_queries = _project_pool(to_q, pool, batch_size)
      queries = lambda rng, i: pool_queries[i]
    else:
      data = pool if sampler is None else sampler
      queries = lambda rng, i: to_q(_batch(data, rng, i, batch_size))
    if init_from_data:
      q0 = queries(r_init, None if idx is None else idx[0])
      pick = jax.random.randint(r_init, (c, j), 0, q0.shape[0])
      codebook = q0[pick, jnp.arange(c)[:, None]].astype(codebook.dtype)

    def body(state, xs):
      i, r = xs
      r_b, r_s = jax.random.split(r)
      return ema_step(state, queries(r_b, i), r_s, **cfg), None

    xs = (jnp.zeros((num_steps,), jnp.int32) if idx is None else idx, step_rngs)
    state, _ = jax.lax.scan(body, ema_state(codebook), xs)
    return state

  return run


def kmeans_init_keys(rng: Array, data: Array, to_queries: Callable[[Array], Array],
                     num_keys: int, *, num_iters: int = 20, batch_size: int = 1024,
                     max_points: int = 20000, chunk_size: int = 1024) -> Array:
  """Per-head k-means (Lloyd) on up to `max_points` unlabelled embeddings (N, D).

  Starts from random data points; an empty cluster keeps its previous centre.
  Assignment runs in batches of `batch_size` points, chunked over keys.
  """
  data = jnp.asarray(data)
  r_sub, r_init = jax.random.split(rng)
  if data.shape[0] > max_points:
    data = data[jax.random.permutation(r_sub, data.shape[0])[:max_points]]
  n = data.shape[0] // batch_size * batch_size if data.shape[0] >= batch_size else data.shape[0]
  batch_size = min(batch_size, n)
  points = data[:n].reshape(n // batch_size, batch_size, -1)

  @jax.jit
  def run(points, r_init):
    q_first = to_queries(points[0])  # (B, C, d)
    c = q_first.shape[1]
    pick = jax.random.randint(r_init, (c, num_keys), 0, q_first.shape[0])
    codebook = q_first[pick, jnp.arange(c)[:, None]]

    def lloyd(codebook, _):
      def acc(carry, x):
        counts, sums = assignment_stats(to_queries(x), codebook, chunk_size)
        return (carry[0] + counts, carry[1] + sums), None
      zeros = (jnp.zeros(codebook.shape[:2]), jnp.zeros(codebook.shape))
      (counts, sums), _ = jax.lax.scan(acc, zeros, points)
      new = sums / jnp.maximum(counts, 1.0)[..., None]
      return jnp.where((counts > 0)[..., None], new, codebook), None

    codebook, _ = jax.lax.scan(lloyd, codebook, None, length=num_iters)
    return codebook

  return run(points, r_init)
