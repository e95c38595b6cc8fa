"""The GPICL transformer: a causal, pre-LayerNorm transformer over example tokens.

Kirsch et al. 2022 meta-train a plain transformer on sequences of (input, label)
pairs. The paper's defaults: 4 layers, 8 heads, key/query/value size 32, model
size 256, MLP 4x width, GELU, final LayerNorm, learned positional embeddings.

Two token layouts, chosen by `layout` (see `research/gpicl/README.md`):

* ``"paper"`` — exactly the paper: token t = Linear(x_t ⊕ onehot(y_{t-1})), zero
  label vector at t = 0, causal attention, the output at t predicts y_t.
* ``"query"`` — context tokens c_i = (x_i ⊕ onehot(y_i) ⊕ 0) and separate query
  tokens q_j = (x_j ⊕ 0 ⊕ 1); q_j attends to c_0..c_{j-1} and itself, c_i to
  c_0..c_i. Position j of both carries the same positional embedding. The output
  at q_j predicts y_j. Same information as the paper's layout, but each example's
  label sits in the same token as its input, which leaves the loss plateau much
  sooner on small CPU runs.

Both layouts follow the sequence interface shared by every GPICL learner:
``__call__(x [B, L, dx], y [B, L]) -> logits [B, L, C]`` where ``logits[:, t]``
depends only on ``x[:, :t+1]`` and ``y[:, :t]``.
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import cpu_attention
from models.layers import (MASK_VALUE, paper_tokens, per_token, query_layout_tokens,
                           token_dot_general)
from models.registry import LEARNERS

Layout = Literal["paper", "query"]

_dense_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def _param_dense(features, axes, name, use_bias=True, dtype=None):
  # dtype: computation dtype (e.g. bfloat16); parameters stay float32 (master weights).
  return nn.DenseGeneral(
      features,
      dtype=dtype,
      kernel_init=nn.with_logical_partitioning(_dense_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
      use_bias=use_bias,
      name=name,
      dot_general=token_dot_general,
  )


def _layer_norm(name):
  return nn.LayerNorm(
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      name=name,
  )


ATTENTION = ("auto", "xla", "jax", "cpu_fused")


def dot_product_attention(q, k, v, mask, implementation: str = "auto"):
  """q, k, v: [B, T, H, D]; mask: bool [B or 1, 1, T, T] (True = may attend).

  `"xla"` is the explicit einsum form; `"jax"` calls `jax.nn.dot_product_attention`
  (cuDNN flash attention on GPU when shapes allow); `"cpu_fused"` the fused float32
  CPU kernel (`models/cpu_attention.py`: scores kept in cache, masked key ranges
  skipped); `"auto"` that kernel where it runs (CPU, float32, a C++ compiler) and
  the einsum form elsewhere. All agree to float32 rounding, forward and backward
  (tests/gpicl/test_transformer.py).
  """
  if implementation not in ATTENTION:
    raise ValueError(f"attention implementation {implementation!r}; use one of {ATTENTION}")
  if implementation == "jax":
    return jax.nn.dot_product_attention(q, k, v, mask=mask)
  if implementation == "cpu_fused" and not cpu_attention.supports(q, mask):
    raise ValueError(f"attention='cpu_fused' needs float32 on CPU, a built kernel and at most "
                     f"{cpu_attention.MAX_LENGTH} tokens (got {q.dtype} on "
                     f"{jax.default_backend()}, {q.shape[-3]} tokens); use 'auto' to fall back "
                     f"to 'xla'")
  if implementation != "xla" and cpu_attention.supports(q, mask):
    return cpu_attention.attention(q, k, v, mask)
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
  logits = jnp.where(mask, logits, jnp.asarray(MASK_VALUE, logits.dtype))
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class Block(nn.Module):
  """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  attention: str = "auto"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, h, mask):
    d_model = h.shape[-1]
    y = _layer_norm("ln_attn")(h).astype(self.dtype)
    # No key bias: it adds q·b to every logit of a row, which softmax ignores, so
    # its gradient is exactly zero and Adam would only amplify float noise.
    qkv = [
        per_token(_param_dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), n,
                                use_bias=(n != "key"), dtype=self.dtype), y)
        for n in ("query", "key", "value")
    ]
    y = dot_product_attention(*qkv, mask, self.attention)
    y = per_token(nn.DenseGeneral(
        d_model, axis=(-2, -1),
        kernel_init=nn.with_logical_partitioning(_dense_init, ("heads", "kv", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        dtype=self.dtype, name="out", dot_general=token_dot_general), y)
    h = h + y.astype(h.dtype)
    y = _layer_norm("ln_mlp")(h).astype(self.dtype)
    y = per_token(_param_dense(self.mlp_dim, ("embed", "mlp"), "mlp_in", dtype=self.dtype), y)
    y = nn.gelu(y)
    y = per_token(_param_dense(d_model, ("mlp", "embed"), "mlp_out", dtype=self.dtype), y)
    return h + y.astype(h.dtype)


def query_tokens(x, y, num_classes):
  """Query layout: [context c_0..c_{L-1}, queries q_0..q_{L-1}], positions, mask."""
  length = x.shape[1]
  ctx, qry = query_layout_tokens(x, y, num_classes)
  tokens = jnp.concatenate([ctx, qry], axis=1)
  i = jnp.arange(length)
  causal = i[None, :] <= i[:, None]          # c_i -> c_i' for i' <= i
  before = i[None, :] < i[:, None]           # q_j -> c_i for i < j
  eye = i[None, :] == i[:, None]             # q_j -> q_j
  top = jnp.concatenate([causal, jnp.zeros_like(causal)], axis=1)
  bottom = jnp.concatenate([before, eye], axis=1)
  mask = jnp.concatenate([top, bottom], axis=0)
  positions = jnp.concatenate([i, i])
  return tokens, positions, mask


@LEARNERS.register(
    "transformer", needs={"max_len": "seq_len"},
    # The query layout leaves the loss plateau much sooner on CPU (experiments/gpicl/README.md).
    config_defaults={"layout": "query"},
    sizes={"tiny": dict(num_layers=1, num_heads=2, head_dim=8, d_model=16),
           "small": dict(num_layers=2, num_heads=4, head_dim=16, d_model=64),
           "paper": dict(num_layers=4, num_heads=8, head_dim=32, d_model=256)})
class Transformer(nn.Module):
  """GPICL transformer learner (see module docstring for the layouts)."""
  num_classes: int
  num_layers: int = 4
  num_heads: int = 8
  head_dim: int = 32
  d_model: int = 256
  mlp_ratio: int = 4
  max_len: int = 100
  layout: Layout = "paper"
  # Init std of the learned positional embeddings. The paper layout needs a
  # previous-token head (attention by position); a larger init was probed as a
  # plateau intervention (experiments/gpicl/README.md: no effect in 500 steps).
  pos_init_std: float = 0.02
  attention: str = "auto"  # See `dot_product_attention`.
  remat: bool = False
  dtype: str = "float32"  # Computation dtype; "bfloat16" keeps float32 master weights.

  @nn.compact
  def __call__(self, x, y):
    length = x.shape[1]
    if length > self.max_len:
      raise ValueError(
          f"sequence length {length} exceeds the positional table max_len={self.max_len}; "
          f"raise model.max_len or shorten data.seq_len")
    if self.layout == "paper":
      tokens = paper_tokens(x, y, self.num_classes)
      positions = jnp.arange(length)
      mask = jnp.tril(jnp.ones((length, length), bool))
    elif self.layout == "query":
      tokens, positions, mask = query_tokens(x, y, self.num_classes)
    else:
      raise ValueError(f"unknown layout {self.layout!r}; use 'paper' or 'query'")

    h = per_token(_param_dense(self.d_model, ("input", "embed"), "embed"), tokens)
    pos = self.param("pos_embed",
                     nn.with_logical_partitioning(nn.initializers.normal(self.pos_init_std),
                                                  ("length", "embed")),
                     (self.max_len, self.d_model))
    h = h + pos[positions][None]
    block = nn.remat(Block) if self.remat else Block
    for i in range(self.num_layers):
      h = block(self.num_heads, self.head_dim, self.mlp_ratio * self.d_model,
                self.attention, self.dtype, name=f"block_{i}")(h, mask[None, None])
    h = _layer_norm("ln_final")(h)
    logits = per_token(_param_dense(self.num_classes, ("embed", "classes"), "head"), h)
    return logits[:, -length:].astype(jnp.float32)  # the query tokens in "query" layout

  def state_size(self, seq_len: int) -> int:
    """Accessible state (paper, Sec. 4.4): key size x layers x sequence length."""
    tokens = seq_len if self.layout == "paper" else 2 * seq_len
    return self.num_heads * self.head_dim * self.num_layers * tokens
