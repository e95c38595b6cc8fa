"""A linear-attention transformer: a fast-weight learner for GPICL.

Softmax attention keeps every past token (its state grows with the sequence);
linear attention (Katharopoulos et al. 2020; as a fast-weight memory, Schlag et
al. 2021) replaces exp(q·k) by φ(q)·φ(k) with φ = elu + 1, so each head's whole
past is one d_k × d_v matrix and a normaliser:

    S_t = S_{t-1} + φ(k_t) v_tᵀ,   z_t = z_{t-1} + φ(k_t),   o_t = S_tᵀ φ(q_t) / (z_tᵀ φ(q_t)).

That is the outer-product memory of the outer-product LSTM without its gates, and
a fixed-size state like an RNN's: the third point of the paper's state-size study
(Kirsch et al. 2022, §4.4) between the transformer (state ∝ sequence length) and the
gated outer-product LSTM. Training uses the equivalent parallel form
o = (A ⊙ causal) V / ((A ⊙ causal) 1) with A = φ(Q) φ(K)ᵀ; `recurrent_attention` is
the step-by-step form (the same outputs).

Tokens: the "query" layout interleaved as the recurrent learners read it
(q_0, c_0, q_1, c_1, ...: an input and its label in one token c_t, outputs read at
the queries), or the paper's layout. Blocks are pre-LayerNorm: x + attention(LN x),
x + MLP(LN x). Positions: none — the causal sum is order-aware enough to read an
example next to its label in one token; the learned absolute positions of the
softmax transformer would cap the sequence length, which a fixed-size state does not.

Registered as GPICL learner "linear_transformer" (this file is all it takes:
`--config experiments/gpicl/digits.py:learner=linear_transformer`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import LEARNERS


def _feature(x: jax.Array) -> jax.Array:
  return jax.nn.elu(x) + 1.0  # Positive, so the normaliser never vanishes.


def linear_attention(q, k, v):
  """Causal linear attention, parallel form. q, k, v: [B, T, H, D] -> [B, T, H, D]."""
  q, k = _feature(q), _feature(k)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  t = q.shape[1]
  scores = scores * jnp.tril(jnp.ones((t, t), scores.dtype))
  return (jnp.einsum("bhqk,bkhd->bqhd", scores, v)
          / jnp.einsum("bhqk->bqh", scores)[..., None])


def recurrent_attention(q, k, v):
  """The same outputs step by step from the fixed-size state (S, z) of each head."""
  q, k = _feature(q), _feature(k)

  def step(carry, qkv):
    s, z = carry
    q_t, k_t, v_t = qkv  # [B, H, D]
    s = s + jnp.einsum("bhd,bhe->bhde", k_t, v_t)
    z = z + k_t
    out = jnp.einsum("bhde,bhd->bhe", s, q_t) / jnp.einsum("bhd,bhd->bh", z, q_t)[..., None]
    return (s, z), out

  b, _, h, d = q.shape
  carry = (jnp.zeros((b, h, d, v.shape[-1]), q.dtype), jnp.zeros((b, h, d), q.dtype))
  time_major = lambda a: jnp.swapaxes(a, 0, 1)
  _, out = jax.lax.scan(step, carry, (time_major(q), time_major(k), time_major(v)))
  return time_major(out)


class Block(nn.Module):
  num_heads: int
  head_dim: int
  mlp_dim: int

  @nn.compact
  def __call__(self, h):
    d = h.shape[-1]
    y = layers.layer_norm("ln_attn")(h)
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, self.head_dim)
    q, k, v = (split(layers.dense(self.num_heads * self.head_dim, ("embed", "heads"),
                                  name=n)(y)) for n in ("query", "key", "value"))
    y = linear_attention(q, k, v).reshape(*h.shape[:-1], -1)
    h = h + layers.dense(d, ("heads", "embed"), name="out")(y)
    y = layers.layer_norm("ln_mlp")(h)
    y = nn.gelu(layers.dense(self.mlp_dim, ("embed", "mlp"), name="mlp_in")(y))
    return h + layers.dense(d, ("mlp", "embed"), name="mlp_out")(y)


@LEARNERS.register(
    "linear_transformer",
    sizes={"tiny": dict(num_layers=1, num_heads=2, head_dim=8, d_model=16),
           "small": dict(num_layers=2, num_heads=4, head_dim=16, d_model=64),
           "paper": dict(num_layers=4, num_heads=8, head_dim=32, d_model=256)})
class LinearTransformer(nn.Module):
  """GPICL learner: `__call__(x [B, L, dx], y [B, L]) -> logits [B, L, C]`."""
  num_classes: int
  num_layers: int = 2
  num_heads: int = 4
  head_dim: int = 16
  d_model: int = 64
  mlp_ratio: int = 4
  layout: str = "query"

  @nn.compact
  def __call__(self, x, y):
    if self.layout == "query":
      tokens = layers.interleaved_tokens(x, y, self.num_classes)
    elif self.layout == "paper":
      tokens = layers.paper_tokens(x, y, self.num_classes)
    else:
      raise ValueError(f"unknown layout {self.layout!r}; use 'paper' or 'query'")
    h = layers.dense(self.d_model, ("input", "embed"), name="embed")(tokens)
    for i in range(self.num_layers):
      h = Block(self.num_heads, self.head_dim, self.mlp_ratio * self.d_model, name=f"block_{i}")(h)
    h = layers.layer_norm("ln_final")(h)
    logits = layers.dense(self.num_classes, ("embed", "classes"), name="head")(h)
    return logits[:, 0::2] if self.layout == "query" else logits  # Read at the queries.

  def state_size(self, seq_len: int) -> int:
    """Fixed, whatever the sequence length: per layer and head, the d_k × d_v memory
    and the d_k normaliser."""
    del seq_len
    return self.num_layers * self.num_heads * (self.head_dim * self.head_dim + self.head_dim)
