"""BERT encoder (post-LayerNorm, absolute positions), the architecture of MiniLM-L6.

Matches Hugging Face `BertModel` numerics (exact-erf GELU, LayerNorm eps from
the config, additive -inf-like mask on padded keys) so weights imported from
safetensors reproduce the reference embeddings; see `models/minilm.py`.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  @classmethod
  def from_hf(cls, cfg: dict) -> "BertConfig":
    if cfg.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r}")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError("only absolute position embeddings are supported")
    return cls(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
               num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
               intermediate_size=cfg["intermediate_size"],
               max_position=cfg["max_position_embeddings"],
               type_vocab_size=cfg["type_vocab_size"], layer_norm_eps=cfg["layer_norm_eps"])


def _dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return layers.dense(features, axes, name=name, kernel_init=nn.initializers.normal(0.02))


class BertLayer(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    c = self.cfg
    b, t, _ = x.shape
    dh = c.hidden_size // c.num_heads
    split = lambda y: y.reshape(b, t, c.num_heads, dh)
    q = split(_dense(c.hidden_size, ("embed", "heads"), "query")(x))
    k = split(_dense(c.hidden_size, ("embed", "heads"), "key")(x))
    v = split(_dense(c.hidden_size, ("embed", "heads"), "value")(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(dh).astype(x.dtype)
    # HF adds finfo.min to masked logits; any very negative number gives the same softmax.
    logits = jnp.where(mask[:, None, None, :], logits, layers.MASK_VALUE)
    attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    attn = _dense(c.hidden_size, ("heads", "embed"), "attention_output")(attn.reshape(b, t, -1))
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="attention_norm")(x + attn)
    h = jax.nn.gelu(_dense(c.intermediate_size, ("embed", "mlp"), "intermediate")(x),
                    approximate=False)
    h = _dense(c.hidden_size, ("mlp", "embed"), "output")(h)
    return nn.LayerNorm(epsilon=c.layer_norm_eps, name="output_norm")(x + h)


class BertEncoder(nn.Module):
  """Token ids (B, T) and attention mask (B, T) -> hidden states (B, T, H)."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Array,
               token_type_ids: Array | None = None) -> Array:
    c = self.cfg
    emb = lambda n, name, axes: nn.Embed(n, c.hidden_size, name=name,
                                         embedding_init=nn.with_logical_partitioning(
                                             nn.initializers.normal(0.02), axes))
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    pos = jnp.arange(input_ids.shape[1])[None]
    x = (emb(c.vocab_size, "word_embeddings", ("vocab", "embed"))(input_ids)
         + emb(c.max_position, "position_embeddings", ("length", "embed"))(pos)
         + emb(c.type_vocab_size, "token_type_embeddings", (None, "embed"))(token_type_ids))
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="embeddings_norm")(x)
    mask = attention_mask.astype(bool)
    for i in range(c.num_layers):
      x = BertLayer(c, name=f"layer_{i}")(x, mask)
    return x


def mean_pool(hidden: Array, attention_mask: Array, normalize: bool = True) -> Array:
  """Sentence-transformers pooling: mean over unpadded tokens, then L2-normalise."""
  m = attention_mask.astype(hidden.dtype)[..., None]
  pooled = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  if normalize:
    pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
  return pooled
