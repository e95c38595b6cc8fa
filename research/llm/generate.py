"""Greedy decoding with the KV cache: prefill the prompt once, then one token per step."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.llm import CausalLM, LMConfig, init_cache


def prefill(config: LMConfig, params, ids, attention_mask=None, max_len: int | None = None):
  """Run the prompt through the model into a fresh cache of `max_len` slots.

  Returns (logits [b, t, vocab], cache). Not jitted: call it inside jit.
  """
  ids = jnp.asarray(ids)
  cache = init_cache(config, ids.shape[0], max_len or ids.shape[1])
  return CausalLM(config).apply(params, ids, attention_mask=attention_mask, cache=cache)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def _greedy(params, ids, attention_mask, eos_id, *, config: LMConfig, max_new_tokens: int):
  model = CausalLM(config)
  b, t = ids.shape
  logits, cache = prefill(config, params, ids, attention_mask, t + max_new_tokens)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

  def step(i, carry):
    out, cache, done = carry
    prev = out[:, i - 1]
    done = done | (prev == eos_id)
    step_logits, cache = model.apply(params, prev[:, None], cache=cache)
    nxt = jnp.argmax(step_logits[:, -1], axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, eos_id, nxt)  # finished rows repeat EOS
    return out.at[:, i].set(nxt), cache, done

  out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(first)
  done = jnp.zeros((b,), bool)
  out, _, _ = jax.lax.fori_loop(1, max_new_tokens, step, (out, cache, done))
  return out


def greedy(config: LMConfig, params, prompt_ids, max_new_tokens: int = 16,
           eos_id: int | None = None, attention_mask=None) -> np.ndarray:
  """Greedy continuation of `prompt_ids` ([t] or left-padded [b, t] with a mask).

  Returns the new tokens [b, max_new_tokens] (or [max_new_tokens] for a 1-D
  prompt); after EOS a row repeats EOS. One jitted prefill + fori_loop of
  single-token steps against the KV cache.
  """
  ids = np.asarray(prompt_ids, np.int32)
  single = ids.ndim == 1
  ids = ids[None] if single else ids
  mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
  eos = -1 if eos_id is None else int(eos_id)
  out = np.asarray(_greedy(params, ids, mask, jnp.int32(eos), config=config,
                           max_new_tokens=max_new_tokens))
  return out[0] if single else out


def trim_at_eos(tokens, eos_id: int | None) -> list[int]:
  tokens = [int(t) for t in tokens]
  return tokens[:tokens.index(eos_id)] if eos_id in tokens else tokens
