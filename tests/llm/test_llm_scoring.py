"""The Scorer: option NLLs by hand, cached prefix == full prompt, soft prefixes, FLOPs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import llm
from research import flops as flops_lib
from research.llm import scoring


class Bigram(nn.Module):
  """logits[t] = table[token t]: the NLL of any row can be computed by hand."""
  vocab: int = 7

  @nn.compact
  def __call__(self, ids):
    table = self.param("table", nn.initializers.normal(1.0), (self.vocab, self.vocab))
    return jnp.take(table, ids, axis=0)  # "hidden" = a row of the table, d = vocab


class BigramAdapter:
  """LMAdapter whose hidden states are already logits (identity head), no cache."""

  def __init__(self):
    self.model = Bigram()

  def hidden(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None,
             cache=None):
    return self.model.apply(params, input_ids), None

  def logits(self, params, hidden):
    return hidden


def tiny_lm(seed=0):
  cfg = llm.LMConfig(vocab_size=256, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64, max_len=1024)
  model = llm.CausalLM(cfg)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))
  return scoring.CausalLMAdapter(model), params


def test_option_nll_by_hand():
  adapter = BigramAdapter()
  params = adapter.model.init(jax.random.key(1), jnp.zeros((1, 1), jnp.int32))
  table = np.asarray(params["params"]["table"], np.float64)
  logp = table - np.log(np.exp(table).sum(1, keepdims=True))
  rows = [([1, 2, 3], [4, 5]), ([6], [0]), ([2, 2], [3, 1, 6])]
  total = [-sum(logp[seq[i - 1], seq[i]] for i in range(len(c), len(c) + len(o)))
           for c, o in rows for seq in [c + o]]
  scorer = scoring.Scorer(adapter, params, batch_rows=2)  # 3 rows: one padded chunk.
  np.testing.assert_allclose(scorer.score_full(rows, reduce="sum"), total, rtol=1e-5)
  np.testing.assert_allclose(scorer.score_full(rows),
                             np.array(total) / [len(o) for _, o in rows], rtol=1e-5)
  assert scorer.meter.calls == 4 and scorer.meter.flops > 0
  with pytest.raises(ValueError, match="context"):
    scorer.score_full([([], [1])])


def test_cached_prefix_equals_full_prompt():
  adapter, params = tiny_lm()
  scorer = scoring.Scorer(adapter, params, batch_rows=4)
  rng = np.random.default_rng(0)
  prefix = rng.integers(1, 256, 45).tolist()
  rows = [(rng.integers(1, 256, rng.integers(1, 9)).tolist(),
           rng.integers(1, 256, rng.integers(1, 5)).tolist()) for _ in range(7)]
  full = scorer.score_full([(prefix + c, o) for c, o in rows])
  p = scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
  np.testing.assert_allclose(scorer.score_with_prefix(p, rows), full, atol=2e-5)


def test_soft_prefix_equals_full_embeddings():
  adapter, params = tiny_lm(1)
  scorer = scoring.Scorer(adapter, params, batch_rows=4)
  soft = 0.1 * jax.random.normal(jax.random.key(2), (5, 32))
  rows = [([3, 4, 5], [6, 7]), ([8], [9, 10, 11])]
  p = scorer.prefill(prefix_embeds=soft, rows_len=scorer.rows_len(rows))
  got = scorer.score_with_prefix(p, rows)
  ps = nn.unbox(params)
  for (c, o), g in zip(rows, got):
    ids = jnp.asarray([c + o])
    emb = jnp.concatenate([soft[None], adapter.embed(ps, ids)], 1)
    logits = adapter.logits(ps, adapter.hidden(ps, inputs_embeds=emb)[0])
    logp = jax.nn.log_softmax(logits[0], -1)
    want = -np.mean([logp[5 + len(c) - 1 + j, o[j]] for j in range(len(o))])
    np.testing.assert_allclose(g, want, atol=2e-5)


def test_flops_count_every_scanned_layer():
  """XLA counts nn.scan's loop body once; the adapter's analytic per-block count must
  match XLA's count of one block, and the metered total must grow linearly in depth."""
  cfg = llm.LMConfig(vocab_size=256, d_model=64, num_layers=1, num_heads=4, num_kv_heads=2,
                     head_dim=16, mlp_dim=256)
  block = llm.Block(cfg)
  x = jnp.zeros((8, 16, 64))
  ctx = (jnp.zeros((8, 16), jnp.int32), jnp.ones((8, 16, 16), bool), 0)
  bp = block.init(jax.random.key(0), x, None, ctx)
  compiled = jax.jit(lambda p, x: block.apply(p, x, None, ctx)[0]).lower(bp, x).compile()
  analytic = scoring.CausalLMAdapter(llm.CausalLM(cfg)).layer_flops(8, 16, 16)
  assert flops_lib.compiled_flops(compiled) == pytest.approx(analytic, rel=0.1)
  totals = []
  for layers in (1, 2, 4):
    model = llm.CausalLM(cfg.replace(num_layers=layers))
    params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    scorer = scoring.Scorer(scoring.CausalLMAdapter(model), params)
    scorer.score_full([([1, 2, 3], [4, 5])] * 8)
    totals.append(scorer.meter.flops)
  assert totals[2] - totals[1] == pytest.approx(2 * (totals[1] - totals[0]), rel=0.01)
  assert totals[1] - totals[0] == pytest.approx(analytic, rel=0.1)
