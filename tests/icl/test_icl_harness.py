"""Option scoring, prompts, truncation, metrics, sampling, retrieval, prompt tuning."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import llm
from research.icl import harness as H
from research.icl import prompt_tuning as pt
from research.icl import retrieval
from research.icl.experiment import ByteTokenizer


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
  return H.CausalLMAdapter(model), params


def ex(x, y, options=("yes", "no"), task="t"):
  return {"task": task, "input": x, "output": y, "options": list(options)}


def test_icl_option_nll_by_hand():
  adapter = BigramAdapter()
  params = adapter.model.init(jax.random.key(1), jnp.zeros((1, 1), jnp.int32))
  table = np.asarray(params["params"]["table"], np.float64)
  logp = table - np.log(np.exp(table).sum(1, keepdims=True))
  rows = [([1, 2, 3], [4, 5]), ([6], [0]), ([2, 2], [3, 1, 6])]
  want = [-np.mean([logp[seq[i - 1], seq[i]] for i in range(len(c), len(c) + len(o))])
          for c, o in rows for seq in [c + o]]
  scorer = H.Scorer(adapter, params, batch_rows=2)  # 3 rows: one padded chunk.
  np.testing.assert_allclose(scorer.score_full(rows), want, rtol=1e-5)
  assert scorer.meter.calls == 2 and scorer.meter.flops > 0


def test_icl_cached_prefix_equals_full_prompt():
  adapter, params = tiny_lm()
  scorer = H.Scorer(adapter, params, batch_rows=4)
  rng = np.random.default_rng(0)
  prefix = rng.integers(1, 256, 45).tolist()
  rows = [(rng.integers(1, 256, rng.integers(1, 9)).tolist(),
           rng.integers(1, 256, rng.integers(1, 5)).tolist()) for _ in range(7)]
  full = scorer.score_full([(prefix + c, o) for c, o in rows])
  p = scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
  np.testing.assert_allclose(scorer.score_with_prefix(p, rows), full, atol=2e-5)


def test_icl_soft_prefix_equals_full_embeddings():
  adapter, params = tiny_lm(1)
  scorer = H.Scorer(adapter, params, batch_rows=4)
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


def test_icl_prompt_format_leading_spaces():
  tok = ByteTokenizer()
  cfg = H.PromptConfig()
  demos = [ex("a", "yes"), ex("b", "no")]
  prefix, kept = H.build_prefix(tok, demos, 1000, cfg)
  assert tok.decode(prefix) == "a yes b no" and kept == 2
  rows, counts = H.query_rows(tok, [ex("c", "no")], False, cfg)
  assert [tok.decode(c + o) for c, o in rows] == [" c yes", " c no"] and counts == [2]
  rows, _ = H.query_rows(tok, [ex("c", "no")], True, cfg)
  assert tok.decode(rows[0][0]) == "c"  # zero-shot: the query is the first example


def test_icl_truncation_drops_demonstrations_not_query():
  tok = ByteTokenizer()
  demos = [ex(f"demo{i}", "yes") for i in range(6)]
  query = ex("a long query that must survive", "no")
  rows, _ = H.query_rows(tok, [query], False, H.PromptConfig())
  query_len = max(len(c) + len(o) for c, o in rows)
  cfg = H.PromptConfig(max_length=query_len + 3 * len(" demo0 yes"))
  prefix, kept = H.build_prefix(tok, demos, cfg.max_length - query_len, cfg)
  assert kept == 3
  # The earliest demonstrations go; the kept ones keep their " x y" encoding.
  assert tok.decode(prefix) == " demo3 yes demo4 yes demo5 yes"
  # The scorer sees the query intact and the prompt within max_length.
  adapter, params = tiny_lm()
  scorer = H.Scorer(adapter, params)
  _, info = H.score_icl(scorer, tok, [query], demos, cfg)
  assert info["demos_kept"] == 3 and info["prefix_tokens"] + query_len <= cfg.max_length
  _, info = H.score_icl(scorer, tok, [query], demos, H.PromptConfig(max_length=query_len))
  assert info["demos_kept"] == 0


def test_icl_per_example_cap_cuts_input_keeps_output():
  tok = ByteTokenizer()
  ids = H.encode_demonstration(tok, ex("x" * 500, "yes"), True, H.PromptConfig(
      max_length_per_example=20))
  assert len(ids) == 18 and tok.decode(ids).endswith(" yes")


@pytest.mark.parametrize("preds,golds,want", [
    # Confusion [[2,1,0],[0,1,1],[0,0,1]]: F1 a = 0.8, b = 0.5, c = 2/3.
    (list("aabbcc"), list("aaabbc"), (0.8 + 0.5 + 2 / 3) / 3),
    # Perfect.
    (list("abab"), list("abab"), 1.0),
    # Class b never predicted: F1_b = 0 (MetaICL counts its precision as 1).
    (list("aaaa"), list("aabb"), (2 * 0.5 * 1.0 / 1.5 + 0.0) / 2),
])
def test_icl_macro_f1_known_confusions(preds, golds, want):
  assert H.macro_f1(preds, golds) == pytest.approx(want)


def test_icl_macro_f1_matches_sklearn_when_every_class_is_predicted():
  from sklearn.metrics import f1_score
  rng = np.random.default_rng(0)
  golds = rng.choice(list("abc"), 50).tolist()
  preds = rng.choice(list("abc"), 50).tolist()
  assert H.macro_f1(preds, golds) == pytest.approx(f1_score(golds, preds, average="macro"))
  assert H.accuracy(preds, golds) == pytest.approx(np.mean(np.array(preds) == golds))


def test_icl_sampling_deterministic_per_seed():
  pool = [ex(str(i), "yes") for i in range(40)]
  a = H.sample_demonstrations(pool, 16, 13)
  assert a == H.sample_demonstrations(pool, 16, 13)
  assert a != H.sample_demonstrations(pool, 16, 21)
  assert len({d["input"] for d in a}) == 16
  with pytest.raises(ValueError):
    H.sample_demonstrations(pool, 41, 13)


def test_icl_aggregate_seeds_then_tasks():
  agg = H.aggregate({"t1": {13: 0.5, 21: 1.0}, "t2": {13: 0.0, 21: 0.0, 42: 0.3}})
  assert agg["per_task"] == {"t1": 0.75, "t2": pytest.approx(0.1)}
  assert agg["mean"] == pytest.approx(0.425)


def test_icl_retrieval_nearest_last_and_no_self():
  pool = [ex("the red apple", "food"), ex("a blue car", "vehicle"),
          ex("a red car", "vehicle"), ex("green apple pie", "food")]
  q = ex("red apple", "food")
  got = retrieval.retrieve(pool, [q, ex("a red car", "vehicle")], 2)
  assert got[0][-1]["input"] == "the red apple"
  assert all(d["input"] != "a red car" for d in got[1])  # its own input is skipped
  e = retrieval.hashed_bow_embed(["abc", "abc", "xyz"])
  assert np.allclose(e[0], e[1]) and e[0] @ e[2] < 0.5
  np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)


def test_icl_prompt_tuning_learns_and_llm_frozen():
  adapter, params = tiny_lm(3)
  tok = ByteTokenizer()
  rows = {"t": [ex(f"q{i}", "zebra", ("zebra", "yak")) for i in range(20)]}
  cfg = pt.PromptTuningConfig(num_vectors=4, steps=40, batch_size=4, learning_rate=3e-2,
                              max_row_tokens=16)
  before = jax.tree.map(np.asarray, nn.unbox(params))
  soft, losses = pt.train_soft_prompt(adapter, params, tok, rows, cfg, 256)
  assert soft.shape == (4, 32) and len(losses) == 40
  # A random tiny LM barely listens to its prefix, so the drop is small but must be
  # there on a fixed batch (a zero or wrong-signed gradient would not give it).
  batch = tuple(jnp.asarray(a) for a in pt.make_batch(
      {"t": pt._encode_rows(tok, rows["t"], cfg, None)}, 0, cfg))
  p = nn.unbox(params)
  init = pt.init_soft_prompt(adapter, p, cfg, 256)
  assert (float(pt.soft_prompt_loss(soft, p, adapter, *batch))
          < float(pt.soft_prompt_loss(init, p, adapter, *batch)) - 0.01)
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nn.unbox(params)))
  # The loss has no gradient path into the LLM parameters.
  g = jax.grad(pt.soft_prompt_loss, argnums=1)(soft, p, adapter, *batch)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))


def test_icl_flops_count_every_scanned_layer():
  """XLA counts nn.scan's loop body once; the adapter's analytic per-block count must
  match XLA's count of one block, and the metered total must grow linearly in depth."""
  cfg = llm.LMConfig(vocab_size=256, d_model=64, num_layers=1, num_heads=4, num_kv_heads=2,
                     head_dim=16, mlp_dim=256)
  block = llm.Block(cfg)
  x = jnp.zeros((8, 16, 64))
  ctx = (jnp.zeros((8, 16), jnp.int32), jnp.ones((8, 16, 16), bool), 0)
  bp = block.init(jax.random.key(0), x, None, ctx)
  compiled = jax.jit(lambda p, x: block.apply(p, x, None, ctx)[0]).lower(bp, x).compile()
  analytic = H.CausalLMAdapter(llm.CausalLM(cfg)).layer_flops(8, 16, 16)
  assert H._xla_flops(compiled) == pytest.approx(analytic, rel=0.1)
  totals = []
  for layers in (1, 2, 4):
    model = llm.CausalLM(cfg.replace(num_layers=layers))
    params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    scorer = H.Scorer(H.CausalLMAdapter(model), params)
    scorer.score_full([([1, 2, 3], [4, 5])] * 8)
    totals.append(scorer.meter.flops)
  assert totals[2] - totals[1] == pytest.approx(2 * (totals[1] - totals[0]), rel=0.01)
  assert totals[1] - totals[0] == pytest.approx(analytic, rel=0.1)


def test_icl_get_embed_names():
  assert retrieval.get_embed("hashed_bow") is retrieval.hashed_bow_embed
  with pytest.raises(ValueError, match="hashed_bow"):
    retrieval.get_embed("word2vec")
