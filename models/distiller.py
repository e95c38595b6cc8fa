"""MEND's demonstration distiller (Li et al., "MEND: Meta dEmonstratioN Distillation").

A small causal LM reads the concatenated demonstrations `x1 y1 x2 y2 …` followed
by `l` learned placeholder embeddings; its last-layer hidden states at the
placeholder positions are the distilled vectors S_D [l, d]. When the distiller's
width differs from the frozen LLM's, a Linear + tanh maps S_D to the LLM width.
The LLM then reads [S_D ; emb(x)] instead of the demonstrations.

Scale (a measured problem, our fix): final-norm hidden states are far larger than
the token embeddings the LLM reads (SmolLM2-135M: RMS 1.1–1.7 for S_D from its own
first 4 blocks vs 0.13 for its embedding rows), so untrained S_D are 10× out of
distribution as inputs. With `embedding_rms` > 0 the output is RMS-normalised and
multiplied by a learned per-dimension gain initialised to that value (the LLM's
median embedding-row RMS): S_D start at the scale of the tokens they replace.

Padding and positions (a deliberate choice; the released code lets right-padding
shift the placeholders when batch > 1): demonstrations are right-padded inside a
fixed slot of T tokens and the placeholders always occupy slots [T, T + l).
Padded slots are masked as keys, and positions come from the mask
(`models.llm.default_positions`: each real token gets 1 + the previous real
one), so the placeholders get positions n, …, n + l - 1 where n is the row's
number of real demonstration tokens. A padded row therefore computes exactly
what the same row computes unpadded (tested). Truncation of over-long
demonstrations (dropping whole demonstrations from the left, never the query)
happens where the tokens are packed, in `research/mend/data.py`.

Parameters: `lm/...` (a `models.llm.CausalLM`, its own `LMConfig`),
`placeholders` [l, embed] with logical axes ("length", "embed"), and when widths
differ `proj/kernel` [embed, llm width] ("embed", "mlp") and `proj/bias` ("mlp",);
with `embedding_rms` > 0, `out_gain` [llm width] ("mlp",).
The distiller's LM head is never used (S_D are hidden states, not logits).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers, llm

PLACEHOLDER_INITS = ("normal", "vocab")


class Distiller(nn.Module):
  """demonstration tokens -> S_D [batch, num_vectors, out_dim].

  Attributes:
    lm_config: architecture of the distiller LM.
    num_vectors: l, the number of distilled vectors (placeholders).
    out_dim: the frozen LLM's width; Linear + tanh is added when it differs from
      `lm_config.d_model`.
    placeholder_init: "normal" (N(0, 0.02²)) or "vocab" (rows of the distiller's
      embedding table at random token ids, as prompt tuning's vocab init).
  """
  lm_config: llm.LMConfig
  num_vectors: int
  out_dim: int
  placeholder_init: str = "normal"
  embedding_rms: float = 0.0  # > 0: RMS-normalise S_D, learned gain from this value.

  @nn.compact
  def __call__(self, demo_ids: jax.Array, demo_mask: jax.Array | None = None) -> jax.Array:
    """S_D for right-padded demonstrations.

    Args:
      demo_ids: [batch, T] int tokens of the concatenated demonstrations.
      demo_mask: [batch, T], 1 for real tokens (default: all real). A row may be
        all padding (no demonstrations): its S_D then depends on the placeholders only.

    Returns:
      S_D [batch, num_vectors, out_dim] float32.
    """
    if self.placeholder_init not in PLACEHOLDER_INITS:
      raise ValueError(f"placeholder_init must be one of {PLACEHOLDER_INITS}, "
                       f"got {self.placeholder_init!r}")
    cfg = self.lm_config
    lm = llm.CausalLM(cfg, name="lm")
    b, t = demo_ids.shape
    if demo_mask is None:
      demo_mask = jnp.ones((b, t), jnp.int32)
    tok = lm.embed(demo_ids)

    if self.placeholder_init == "vocab":
      # Random vocabulary rows: computed only at init (the initializer ignores it later).
      def init(key, shape, dtype):
        ids = jax.random.randint(key, (shape[0],), 0, cfg.vocab_size)
        return lm.embed(ids).astype(dtype)
    else:
      init = nn.initializers.normal(0.02)
    placeholders = self.param(
        "placeholders", nn.with_logical_partitioning(init, ("length", "embed")),
        (self.num_vectors, cfg.d_model), cfg.param_dtype)

    l = self.num_vectors
    x = jnp.concatenate(
        [tok, jnp.broadcast_to(placeholders.astype(tok.dtype), (b, l, cfg.d_model))], axis=1)
    mask = jnp.concatenate([demo_mask.astype(jnp.int32), jnp.ones((b, l), jnp.int32)], axis=1)
    positions = llm.default_positions(mask)
    hidden = lm.hidden(inputs_embeds=x, attention_mask=mask, positions=positions)
    s_d = hidden[:, t:].astype(jnp.float32)
    if self.out_dim != cfg.d_model:
      s_d = jnp.tanh(layers.dense(self.out_dim, ("embed", "mlp"), name="proj")(s_d))
    if self.embedding_rms > 0:
      gain = self.param("out_gain", nn.with_logical_partitioning(
          nn.initializers.constant(self.embedding_rms), ("mlp",)), (self.out_dim,), jnp.float32)
      s_d = s_d * jax.lax.rsqrt(jnp.mean(s_d**2, -1, keepdims=True) + 1e-6) * gain
    return s_d


def init_from_llm(distiller_params, llm_params, num_layers: int):
  """Distiller params whose LM is the first `num_layers` blocks of a pretrained LLM
  (same width and vocabulary); the placeholders and projection are kept. Boxed
  (logically partitioned) inputs stay boxed, so this can run inside `init_params`.

  A cheap pretrained distiller when the paper's GPT-2 small is not at hand.
  """
  src = nn.unbox(llm_params)
  src = src.get("params", src)
  src = dict(src, layers=jax.tree.map(lambda a: a[:num_layers], src["layers"]))
  dst_lm = distiller_params["lm"]
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  want = jax.tree.map(lambda a: jnp.shape(nn.unbox(a)), dst_lm, is_leaf=is_box)
  src = {k: src[k] for k in dst_lm}
  got = jax.tree.map(jnp.shape, src)
  if want != got:
    raise ValueError(f"distiller LM shapes {want} do not match the LLM's first "
                     f"{num_layers} layers {got}")
  new_lm = jax.tree.map(
      lambda box, v: box.replace_boxed(v.astype(nn.unbox(box).dtype)) if is_box(box)
      else v.astype(box.dtype), dst_lm, src, is_leaf=is_box)
  return {**distiller_params, "lm": new_lm}
