"""Option scoring: the log-likelihood of continuations ("options") after a context,
with the shared prefix encoded once into the KV cache.

`Scorer` owns the jitted scoring functions of one LM:

  * `score_full(rows)`: every (context, option) row encoded from scratch;
  * `prefill(ids | embeds)` + `score_with_prefix(prefix, rows)`: a shared prefix
    (demonstrations, a soft prompt, MEND's distilled vectors) goes through the LM
    once into a batch-1 cache, right-padded to a length bucket (padded slots are
    masked and positions skip them); the cache is repeated over a chunk of rows and
    only those rows run. Both paths give the same numbers (tested to 2e-5).

A row is `(context_ids, option_ids)` with a non-empty context; option token j is
predicted by the hidden state of the token before it, and the LM head runs only
at those positions (the vocabulary projection is 20-30 % of a small LM).

Every call is an ahead-of-time compiled executable, so its FLOPs come from XLA's
cost analysis of exactly what ran (`research.flops.compiled_flops`); `Scorer.meter`
accumulates FLOPs and wall time (compilation excluded). XLA counts a while loop's
body once, so for `nn.scan`-stacked models (`models.llm.CausalLM`) the adapter adds
the other num_layers - 1 blocks analytically (`scan_flops_correction`); a test checks
the total grows linearly in the depth.

Scoring is model-agnostic through a small adapter (`LMAdapter`): hidden states, a
head, token embeddings and a KV cache. `CausalLMAdapter` wraps `models.llm.CausalLM`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import llm
from research import flops as flops_lib

Ids = Sequence[int]


# --------------------------------------------------------------------------------------
# Model adapter.
# --------------------------------------------------------------------------------------

class LMAdapter(Protocol):
  """What the scorer needs from a causal LM (all pure functions of params)."""

  def hidden(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None,
             cache=None) -> tuple[jax.Array, Any]:
    """Final hidden states [b, t, d] and the updated cache (or None)."""

  def logits(self, params, hidden: jax.Array) -> jax.Array:
    """Next-token logits [..., vocab] from hidden states [..., d]."""

  def embed(self, params, input_ids: jax.Array) -> jax.Array:
    """Token embeddings [b, t, d]."""

  def init_cache(self, batch: int, max_len: int) -> Any: ...

  def expand_cache(self, cache: Any, n: int) -> Any: ...


class CausalLMAdapter:
  """`models.llm.CausalLM` behind `LMAdapter`."""

  def __init__(self, model: llm.CausalLM):
    self.model = model
    self.config = model.config

  def hidden(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None,
             cache=None):
    out = self.model.apply(params, input_ids, inputs_embeds=inputs_embeds,
                           attention_mask=attention_mask, cache=cache,
                           method=llm.CausalLM.hidden)
    return out if cache is not None else (out, None)

  def logits(self, params, hidden):
    return self.model.apply(params, hidden, method=llm.CausalLM.head)

  def embed(self, params, input_ids):
    return self.model.apply(params, input_ids, method=llm.CausalLM.embed)

  def init_cache(self, batch, max_len):
    return llm.init_cache(self.config, batch, max_len)

  def expand_cache(self, cache, n):
    return llm.expand_cache(cache, n)

  def layer_flops(self, batch: int, t: int, s: int) -> float:
    """Matmul FLOPs of one block for `batch` rows of t tokens attending s slots."""
    c = self.config
    proj = 2 * t * c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    mlp = 2 * t * c.d_model * c.mlp_dim * (3 if c.arch == "llama" else 2)
    attn = 2 * 2 * t * s * c.num_heads * c.head_dim
    return float(batch * (proj + mlp + attn))

  def scan_flops_correction(self, batch: int, t: int, s: int) -> float:
    """XLA's cost analysis counts the body of `nn.scan`'s while loop once; the
    other num_layers - 1 blocks are added analytically."""
    return (self.config.num_layers - 1) * self.layer_flops(batch, t, s)


# --------------------------------------------------------------------------------------
# The scorer.
# --------------------------------------------------------------------------------------

def bucket(n: int, quantum: int) -> int:
  """Round a length up so that few distinct shapes get compiled."""
  n = max(n, 1)
  if n <= 4 * quantum:
    return -(-n // quantum) * quantum
  p = 1 << (n - 1).bit_length()  # Powers of two (and 3/4 of them) above 4 quanta.
  return 3 * p // 4 if n <= 3 * p // 4 else p


@dataclasses.dataclass
class Meter:
  """FLOPs (XLA cost analysis of each executable that ran) and wall seconds."""
  flops: float = 0.0
  seconds: float = 0.0
  calls: int = 0

  def reset(self):
    self.flops, self.seconds, self.calls = 0.0, 0.0, 0


@dataclasses.dataclass(frozen=True)
class Prefix:
  """A prefix held in a batch-1 KV cache, `length` real slots."""
  cache: Any
  length: int
  cache_len: int
  rows_len: int  # Row length (tokens) the cache leaves room for.


def option_nll(adapter, params, hidden, ids, ctx_len, opt_len, max_opt):
  """(summed NLL, mean NLL per option token) of each row's option.

  Row r holds context tokens [0, ctx_len) then option tokens [ctx_len, ctx_len +
  opt_len); option token j is predicted by the hidden state at ctx_len + j - 1.
  """
  t = ids.shape[1]
  j = jnp.arange(max_opt)
  pred_at = jnp.clip(ctx_len[:, None] - 1 + j, 0, t - 1)  # [b, max_opt]
  tgt = jnp.take_along_axis(ids, jnp.clip(pred_at + 1, 0, t - 1), axis=1)
  h = jnp.take_along_axis(hidden, pred_at[..., None], axis=1)  # [b, max_opt, d]
  logp = jax.nn.log_softmax(adapter.logits(params, h), axis=-1)
  tok = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
  mask = j[None, :] < opt_len[:, None]
  total = -(tok * mask).sum(1)
  return total, total / jnp.maximum(opt_len, 1)


class Scorer:
  """Jitted option scoring for one LM (params frozen: they are only ever inputs).

  rows: a list of (context_ids, option_ids); context non-empty. Scores are NLLs
  (lower is better): the mean over option tokens by default, `reduce="sum"` the total.
  """

  def __init__(self, adapter: LMAdapter, params, *, batch_rows: int = 8,
               length_quantum: int = 16):
    self.adapter = adapter
    self.params = nn.unbox(params)
    self.batch_rows = batch_rows
    self.quantum = length_quantum
    self.meter = Meter()
    self._compiled: dict[tuple, Any] = {}
    self._flops: dict[tuple, float] = {}

    def full(params, ids, mask, ctx_len, opt_len, *, max_opt):
      hidden, _ = adapter.hidden(params, input_ids=ids, attention_mask=mask)
      return option_nll(adapter, params, hidden, ids, ctx_len, opt_len, max_opt)

    def prefill_ids(params, cache, ids, mask):
      return adapter.hidden(params, input_ids=ids, attention_mask=mask, cache=cache)[1]

    def prefill_embeds(params, cache, embeds):
      return adapter.hidden(params, inputs_embeds=embeds, cache=cache)[1]

    def cached(params, cache, ids, mask, ctx_len, opt_len, *, max_opt):
      cache = adapter.expand_cache(cache, ids.shape[0])
      hidden, _ = adapter.hidden(params, input_ids=ids, attention_mask=mask, cache=cache)
      return option_nll(adapter, params, hidden, ids, ctx_len, opt_len, max_opt)

    self._fns = {"full": full, "prefill_ids": prefill_ids, "prefill_embeds": prefill_embeds,
                 "cached": cached}

  # -- compilation and metering -----------------------------------------------------
  def _correction(self, batch: int, t: int, s: int) -> float:
    fn = getattr(self.adapter, "scan_flops_correction", None)
    return float(fn(batch, t, s)) if fn else 0.0

  def _run(self, name: str, static: dict, *args, shape_flops: tuple[int, int, int] = (0, 0, 0)):
    key = (name, tuple(sorted(static.items())),
           tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args)))
    if key not in self._compiled:
      fn = jax.jit(lambda *a: self._fns[name](*a, **static))
      compiled = fn.lower(self.params, *args).compile()
      self._compiled[key] = compiled
      self._flops[key] = flops_lib.compiled_flops(compiled) + self._correction(*shape_flops)
    start = time.perf_counter()
    out = jax.block_until_ready(self._compiled[key](self.params, *args))
    self.meter.seconds += time.perf_counter() - start
    self.meter.flops += self._flops[key]
    self.meter.calls += 1
    return out

  def _pack(self, rows: Sequence[tuple[Ids, Ids]], length: int | None = None):
    """Right-padded [n, T] ids, mask, context and option lengths, in chunks."""
    for ctx, _ in rows:
      if not len(ctx):
        raise ValueError("every row needs at least one context token")
    t = length or bucket(max(len(c) + len(o) for c, o in rows), self.quantum)
    max_opt = bucket(max(len(o) for _, o in rows), 4)
    b = self.batch_rows
    n = -(-len(rows) // b) * b
    ids = np.zeros((n, t), np.int32)
    mask = np.zeros((n, t), np.int32)
    ctx_len = np.ones((n,), np.int32)  # Padding rows: one context token, no option.
    opt_len = np.zeros((n,), np.int32)
    mask[:, 0] = 1
    for i, (c, o) in enumerate(rows):
      seq = list(c) + list(o)
      if len(seq) > t:
        raise ValueError(f"row of {len(seq)} tokens exceeds the row length {t}")
      ids[i, :len(seq)] = seq
      mask[i, :len(seq)] = 1
      ctx_len[i], opt_len[i] = len(c), len(o)
    for s in range(0, n, b):
      yield (jnp.asarray(ids[s:s + b]), jnp.asarray(mask[s:s + b]),
             jnp.asarray(ctx_len[s:s + b]), jnp.asarray(opt_len[s:s + b])), max_opt

  @staticmethod
  def _reduce(out, n: int, reduce: str) -> np.ndarray:
    if reduce not in ("sum", "mean"):
      raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    i = 0 if reduce == "sum" else 1
    return np.concatenate([np.asarray(o[i]) for o in out])[:n]

  # -- public API -------------------------------------------------------------------
  def score_full(self, rows: Sequence[tuple[Ids, Ids]], reduce: str = "mean") -> np.ndarray:
    """Option NLL per row, each row encoded from scratch."""
    out = [self._run("full", {"max_opt": m}, *chunk,
                     shape_flops=(chunk[0].shape[0], chunk[0].shape[1], chunk[0].shape[1]))
           for chunk, m in self._pack(rows)]
    return self._reduce(out, len(rows), reduce)

  def prefill(self, prefix_ids: Ids | None = None, prefix_embeds=None, *,
              rows_len: int) -> Prefix:
    """Encodes a prefix once into a batch-1 cache with room for rows of `rows_len`."""
    if (prefix_ids is None) == (prefix_embeds is None):
      raise ValueError("pass exactly one of prefix_ids and prefix_embeds")
    if prefix_ids is not None:
      n = len(prefix_ids)
      p = bucket(n, self.quantum)
      cache = self.adapter.init_cache(1, p + rows_len)
      ids = np.zeros((1, p), np.int32)
      ids[0, :n] = prefix_ids
      mask = (np.arange(p) < n).astype(np.int32)[None]
      cache = self._run("prefill_ids", {}, cache, jnp.asarray(ids), jnp.asarray(mask),
                        shape_flops=(1, p, p + rows_len))
    else:
      # Through the host: vectors computed on a mesh (a run's distiller) come in with
      # its sharding; the scorer's executables run on the default device.
      embeds = jnp.asarray(np.asarray(prefix_embeds))
      embeds = embeds[None] if embeds.ndim == 2 else embeds
      n = p = embeds.shape[1]
      cache = self.adapter.init_cache(1, p + rows_len)
      cache = self._run("prefill_embeds", {}, cache, embeds, shape_flops=(1, p, p + rows_len))
    return Prefix(cache, n, p + rows_len, rows_len)

  def score_with_prefix(self, prefix: Prefix, rows: Sequence[tuple[Ids, Ids]],
                        reduce: str = "mean") -> np.ndarray:
    """Option NLL per row, every row attending to the cached prefix."""
    out = [self._run("cached", {"max_opt": m}, prefix.cache, *chunk,
                     shape_flops=(chunk[0].shape[0], chunk[0].shape[1], prefix.cache_len))
           for chunk, m in self._pack(rows, prefix.rows_len)]
    return self._reduce(out, len(rows), reduce)

  def rows_len(self, rows: Sequence[tuple[Ids, Ids]]) -> int:
    return bucket(max(len(c) + len(o) for c, o in rows), self.quantum)

  def score_options(self, context: Ids, options: Sequence[Ids], reduce: str = "mean"
                    ) -> np.ndarray:
    """NLL of each option after one context: all but the context's last token go
    through the LM once (the cache), the options are scored against it."""
    if len(context) < 2:
      return self.score_full([(list(context), list(o)) for o in options], reduce)
    rows = [(list(context[-1:]), list(o)) for o in options]
    prefix = self.prefill(list(context[:-1]), rows_len=self.rows_len(rows))
    return self.score_with_prefix(prefix, rows, reduce)
