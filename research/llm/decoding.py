"""Decoding with the KV cache: the prompt is prefilled once, then one token per step.

    generate(lm, "What is the capital of France?", max_new_tokens=16)         # greedy
    generate(lm, prompt, temperature=0.8, key=jax.random.key(0))              # sampled

Decoding stops at the tokenizer's EOS by default (`eos=False` runs all
`max_new_tokens`), and stops early once every row has ended. One jitted prefill
and a `lax.while_loop` of single-token steps.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from models import llm as llm_model


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "sample"))
def _decode(params, ids, attention_mask, eos_id, key, temperature, *, config, max_new_tokens,
            sample):
  """New tokens [b, max_new_tokens] (EOS repeated after a row ends) and the number of
  steps that ran."""
  model = llm_model.CausalLM(config)
  b, t = ids.shape
  cache = llm_model.init_cache(config, b, t + max_new_tokens)
  logits, cache = model.apply(params, ids, attention_mask=attention_mask, cache=cache)

  def pick(logits, i):
    if not sample:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    k = jax.random.fold_in(key, i)
    return jax.random.categorical(k, logits / temperature, axis=-1).astype(jnp.int32)

  first = pick(logits[:, -1], 0)
  out = jnp.full((b, max_new_tokens), eos_id, jnp.int32).at[:, 0].set(first)
  done = first == eos_id

  def cond(carry):
    i, _, _, done = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def step(carry):
    i, out, cache, done = carry
    step_logits, cache = model.apply(params, out[:, i - 1][:, None], cache=cache)
    nxt = jnp.where(done, eos_id, pick(step_logits[:, -1], i))
    return i + 1, out.at[:, i].set(nxt), cache, done | (nxt == eos_id)

  steps, out, _, _ = jax.lax.while_loop(cond, step, (jnp.int32(1), out, cache, done))
  return out, steps


def generate(lm, prompt, max_new_tokens: int = 32, *, temperature: float = 0.0, key=None,
             eos: bool = True, attention_mask=None):
  """Continuation of `prompt`: greedy when temperature == 0, else sampled with `key`.

  prompt: a text (returns the generated text), a list of texts (a list of texts),
  token ids [t] (the new ids, cut before EOS) or left-padded ids [b, t] with
  `attention_mask` (new ids [b, steps]; a row that ended holds EOS after it).
  Stops at `lm`'s EOS token unless `eos=False` (or the tokenizer has none).
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  sample = temperature > 0
  if sample and key is None:
    raise ValueError("sampling (temperature > 0) needs a key: generate(..., key=jax.random.key(0))")
  eos_id = lm.eos_id if eos and lm.eos_id is not None else -1
  if isinstance(prompt, str):
    return lm.decode(generate(lm, lm.encode(prompt), max_new_tokens, temperature=temperature,
                              key=key, eos=eos))
  if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], str):
    enc = [lm.encode(p) for p in prompt]
    width = max(len(e) for e in enc)
    ids = np.zeros((len(enc), width), np.int32)
    mask = np.zeros((len(enc), width), np.int32)
    for i, e in enumerate(enc):  # Left padding: every row's next token is at the end.
      ids[i, width - len(e):], mask[i, width - len(e):] = e, 1
    out = generate(lm, ids, max_new_tokens, temperature=temperature, key=key, eos=eos,
                   attention_mask=mask)
    return [lm.decode(trim_at_eos(row, eos_id)) for row in out]
  ids = np.asarray(prompt, np.int32)
  single = ids.ndim == 1
  ids = ids[None] if single else ids
  mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
  out, steps = _decode(lm.params, jnp.asarray(ids), jnp.asarray(mask), jnp.int32(eos_id),
                       jax.random.key(0) if key is None else key, jnp.float32(max(temperature, 1e-6)),
                       config=lm.config, max_new_tokens=max_new_tokens, sample=sample)
  out = np.asarray(out)[:, :int(steps)]
  return np.asarray(trim_at_eos(out[0], eos_id), np.int32) if single else out


def trim_at_eos(tokens, eos_id: int | None) -> list[int]:
  """The tokens before the first EOS."""
  tokens = [int(t) for t in tokens]
  return tokens[:tokens.index(eos_id)] if eos_id in tokens else tokens
