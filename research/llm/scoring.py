"""Log-likelihood of answer options, with and without a cached prompt prefix.

"Direct" ICL scoring (MetaICL) rates each option by the log-probability of its
tokens after the prompt. Two equivalent ways, jitted on padded arrays:

* `score_sequences`: one full forward per option over [prompt; option]
  (re-encodes the prompt for every option).
* `score_options_cached`: the prompt is run once into the KV cache, the cache is
  repeated for the options, and only the option tokens are run against it.
* `prefill_demos` + `score_query_with_demo_cache`: the K demonstrations are
  encoded once per task; each query extends a copy of that cache, then its
  options are scored against it (vanilla ICL at its cheapest).

Both return (sum of option-token log-probs [n], number of option tokens [n]);
the mean NLL is `-sum / count`. Prompts may be left-padded and options
right-padded; masks say which tokens are real.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.llm import CausalLM, LMConfig, expand_cache, init_cache, token_logprobs


@functools.partial(jax.jit, static_argnames=("config",))
def score_sequences(params, ids, mask, target_mask, *, config: LMConfig):
  """Sum of log p(ids[:, t] | ids[:, :t]) over positions where target_mask is 1.

  ids, mask, target_mask: [n, T]. Position 0 can never be a target.
  """
  logits, _ = CausalLM(config).apply(params, ids, attention_mask=mask)
  logp = token_logprobs(logits[:, :-1], ids[:, 1:])
  tm = (target_mask[:, 1:] * mask[:, 1:]).astype(jnp.float32)
  return (logp * tm).sum(1), tm.sum(1)


def prefill_prefix(params, prefix_ids, prefix_mask, max_len: int, *, config: LMConfig):
  """Prompt [1, P] -> (log-probs of the next token [1, vocab], cache with max_len slots)."""
  cache = init_cache(config, prefix_ids.shape[0], max_len)
  logits, cache = CausalLM(config).apply(params, prefix_ids, attention_mask=prefix_mask,
                                         cache=cache)
  return jax.nn.log_softmax(logits[:, -1].astype(jnp.float32), -1), cache


def score_against_cache(params, next_logp, cache, option_ids, option_mask, *,
                        config: LMConfig):
  """Options [n, L] continuing a batch-1 prefix whose cache and next-token log-probs are given."""
  n = option_ids.shape[0]
  cache = expand_cache(cache, n)
  logits, _ = CausalLM(config).apply(params, option_ids, attention_mask=option_mask,
                                     cache=cache)
  first = jnp.take_along_axis(jnp.repeat(next_logp, n, 0), option_ids[:, :1], axis=1)[:, 0]
  rest = token_logprobs(logits[:, :-1], option_ids[:, 1:])
  m = option_mask.astype(jnp.float32)
  total = first * m[:, 0] + (rest * m[:, 1:]).sum(1)
  return total, m.sum(1)


@functools.partial(jax.jit, static_argnames=("config",))
def score_options_cached(params, prefix_ids, prefix_mask, option_ids, option_mask, *,
                         config: LMConfig):
  """Prefix [1, P] (left-padded) encoded once; options [n, L] (right-padded) scored against it."""
  max_len = prefix_ids.shape[1] + option_ids.shape[1]
  next_logp, cache = prefill_prefix(params, prefix_ids, prefix_mask, max_len, config=config)
  return score_against_cache(params, next_logp, cache, option_ids, option_mask, config=config)


def pad_options(options: list[list[int]], length: int | None = None, pad_id: int = 0):
  """Right-pad token lists -> (ids [n, L] int32, mask [n, L] int32)."""
  length = length or max(len(o) for o in options)
  ids = np.full((len(options), length), pad_id, np.int32)
  mask = np.zeros((len(options), length), np.int32)
  for i, o in enumerate(options):
    ids[i, :len(o)] = o
    mask[i, :len(o)] = 1
  return ids, mask


def pad_prefix(prefix: list[int], length: int | None = None, pad_id: int = 0):
  """Left-pad one prompt -> (ids [1, P], mask [1, P]) so its last token is real."""
  length = length or len(prefix)
  ids = np.full((1, length), pad_id, np.int32)
  mask = np.zeros((1, length), np.int32)
  ids[0, length - len(prefix):] = prefix
  mask[0, length - len(prefix):] = 1
  return ids, mask


def full_rows(prefix: list[int], options: list[list[int]], length: int | None = None,
              pad_id: int = 0):
  """[prefix; option] per option, right-padded -> (ids, mask, target_mask) for `score_sequences`."""
  rows = [list(prefix) + list(o) for o in options]
  ids, mask = pad_options(rows, length, pad_id)
  target = np.zeros_like(mask)
  for i, o in enumerate(options):
    target[i, len(prefix):len(prefix) + len(o)] = 1
  return ids, mask, target


@functools.partial(jax.jit, static_argnames=("config", "max_len"))
def prefill_demos(params, demo_ids, demo_mask, *, config: LMConfig, max_len: int):
  """Demonstrations [1, D] (left-padded) -> a cache with `max_len` slots (D + query + option)."""
  return prefill_prefix(params, demo_ids, demo_mask, max_len, config=config)[1]


@functools.partial(jax.jit, static_argnames=("config",))
def score_query_with_demo_cache(params, demo_cache, query_ids, query_mask, option_ids,
                                option_mask, *, config: LMConfig):
  """Query [1, Q] appended to the cached demonstrations, then options [n, L] scored.

  Padding between demonstrations and query is fine: masked slots are skipped and
  positions continue from the last real demonstration token.
  """
  logits, cache = CausalLM(config).apply(params, query_ids, attention_mask=query_mask,
                                         cache=demo_cache)
  next_logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32), -1)
  return score_against_cache(params, next_logp, cache, option_ids, option_mask, config=config)
