"""Prompt tuning (Lester et al. 2021) as MEND's baseline: n soft vectors trained on
the meta-train tasks of a partition, the LLM frozen.

Only the soft prompt [n, d] is differentiated and given to the optimizer; the LLM's
parameters enter the loss as a plain (stop-gradient) input. Loss: the mean NLL of
the gold output " y" given [soft prompt; x] (MetaICL's direct, zero-shot form), the
same quantity the harness scores at test time with `harness.score_soft_prefix`.
Batches are a pure function of (seed, step): task drawn uniformly, then a row.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.icl import data as icl_data
from research.icl import harness


@dataclasses.dataclass(frozen=True)
class PromptTuningConfig:
  num_vectors: int = 16
  steps: int = 200
  batch_size: int = 8
  learning_rate: float = 3e-3
  init: str = "vocab"  # "vocab": random rows of the embedding table | "normal"
  max_row_tokens: int = 128  # query + output tokens per training row (cut beyond)
  seed: int = 0


def init_soft_prompt(adapter: harness.LMAdapter, params, cfg: PromptTuningConfig,
                     vocab_size: int) -> jax.Array:
  key = jax.random.key(cfg.seed)
  if cfg.init == "vocab":
    ids = jax.random.randint(key, (1, cfg.num_vectors), 0, vocab_size)
    return adapter.embed(params, ids)[0].astype(jnp.float32)
  if cfg.init == "normal":
    d = adapter.embed(params, jnp.zeros((1, 1), jnp.int32)).shape[-1]
    return 0.02 * jax.random.normal(key, (cfg.num_vectors, d), jnp.float32)
  raise ValueError(f"init must be 'vocab' or 'normal', got {cfg.init!r}")


def _encode_rows(tok, rows, cfg: PromptTuningConfig, pcfg: harness.PromptConfig):
  enc = []
  for r in rows:
    x = tok.encode(r["input"])
    y = tok.encode(" " + r["output"])
    x = x[:max(1, cfg.max_row_tokens - len(y))]
    y = y[:cfg.max_row_tokens - len(x)]
    enc.append((x, y))
  return enc


def make_batch(encoded: dict[str, list], step: int, cfg: PromptTuningConfig):
  """(ids, mask, ctx_len, opt_len) of `batch_size` rows, a pure function of the step."""
  rng = np.random.default_rng([cfg.seed, step])
  tasks = sorted(encoded)
  t = cfg.max_row_tokens
  ids = np.zeros((cfg.batch_size, t), np.int32)
  mask = np.zeros((cfg.batch_size, t), np.int32)
  ctx_len = np.zeros((cfg.batch_size,), np.int32)
  opt_len = np.zeros((cfg.batch_size,), np.int32)
  for b in range(cfg.batch_size):
    rows = encoded[tasks[rng.integers(len(tasks))]]
    x, y = rows[rng.integers(len(rows))]
    ids[b, :len(x) + len(y)] = x + y
    mask[b, :len(x) + len(y)] = 1
    ctx_len[b], opt_len[b] = len(x), len(y)
  return ids, mask, ctx_len, opt_len


def soft_prompt_loss(soft, params, adapter, ids, mask, ctx_len, opt_len):
  """Mean NLL of the output tokens after [soft; x]; gradient w.r.t. `soft` only."""
  params = jax.lax.stop_gradient(params)
  b, n = ids.shape[0], soft.shape[0]
  tok_emb = adapter.embed(params, ids)
  embeds = jnp.concatenate([jnp.broadcast_to(soft.astype(tok_emb.dtype), (b,) + soft.shape),
                            tok_emb], axis=1)
  full_mask = jnp.concatenate([jnp.ones((b, n), mask.dtype), mask], axis=1)
  hidden, _ = adapter.hidden(params, inputs_embeds=embeds, attention_mask=full_mask)
  full_ids = jnp.concatenate([jnp.zeros((b, n), ids.dtype), ids], axis=1)
  nll = harness._option_nll(adapter, params, hidden, full_ids, ctx_len + n, opt_len,  # pylint: disable=protected-access
                            int(ids.shape[1]))
  return nll.mean()


def train_soft_prompt(adapter: harness.LMAdapter, params, tok,
                      train_rows: dict[str, Sequence[icl_data.Example]],
                      cfg: PromptTuningConfig, vocab_size: int,
                      log_every: int = 0, writer=None) -> tuple[jax.Array, list[float]]:
  """Trains the soft prompt on {task: rows}; returns (soft [n, d], loss per step)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params = nn.unbox(params)
  pcfg = harness.PromptConfig()
  encoded = {t: _encode_rows(tok, rows, cfg, pcfg) for t, rows in train_rows.items() if rows}
  if not encoded:
    raise ValueError("prompt tuning needs at least one meta-train task with rows")
  soft = init_soft_prompt(adapter, params, cfg, vocab_size)
  opt = optax.adam(cfg.learning_rate)
  opt_state = opt.init(soft)  # The optimizer sees the soft prompt, never the LLM.

  @jax.jit
  def step(soft, opt_state, params, batch):
    loss, g = jax.value_and_grad(soft_prompt_loss)(soft, params, adapter, *batch)
    updates, opt_state = opt.update(g, opt_state, soft)
    return optax.apply_updates(soft, updates), opt_state, loss

  losses = []
  for s in range(cfg.steps):
    batch = tuple(jnp.asarray(a) for a in make_batch(encoded, s, cfg))
    soft, opt_state, loss = step(soft, opt_state, params, batch)
    losses.append(float(loss))
    if writer is not None and log_every and (s % log_every == 0 or s == cfg.steps - 1):
      writer.write(s, {"prompt_tuning_loss": losses[-1]}, kind="prompt_tuning")
  return soft, losses
