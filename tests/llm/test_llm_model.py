"""CausalLM mechanics: KV cache == full forward, RoPE, GQA, inputs_embeds, padding;
option scoring and decoding on top of it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import llm
from models.llm import CausalLM, LMConfig, attend, expand_cache, init_cache, rope
from research import llm as llm_api
from research.llm import scoring

CONFIGS = {
    "gpt2": LMConfig(arch="gpt2", vocab_size=64, d_model=32, num_layers=2, num_heads=4,
                     num_kv_heads=4, head_dim=8, mlp_dim=64, max_len=64),
    "llama": LMConfig(arch="llama", vocab_size=64, d_model=32, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=64),
}


def _setup(arch, seed=0):
  cfg = CONFIGS[arch]
  model = CausalLM(cfg)
  ids = jax.random.randint(jax.random.key(seed), (3, 12), 0, cfg.vocab_size)
  params = model.init(jax.random.key(seed + 1), ids)
  # Scale weights up so the logits are far from uniform (the check has teeth).
  params = jax.tree_util.tree_map(lambda x: x * 4.0, nn.unbox(params))
  return cfg, _Jitted(model), params, ids


class _Jitted:
  """`model.apply` under jit: op-by-op dispatch of the scanned layers is slow on CPU."""

  def __init__(self, model):
    self.apply = jax.jit(model.apply, static_argnames=("method",))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cached_chunks_equal_full_forward(arch):
  cfg, model, params, ids = _setup(arch)
  full = model.apply(params, ids)  # No cache given: logits only.
  cache = init_cache(cfg, 3, 20)
  outs = []
  for lo, hi in [(0, 5), (5, 6), (6, 12)]:  # prefill, one token, a chunk
    out, cache = model.apply(params, ids[:, lo:hi], cache=cache)
    outs.append(out)
  np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)
  assert int(cache.end) == 12 and cache.next_pos.tolist() == [12] * 3
  assert cache.valid[:, :12].all() and not cache.valid[:, 12:].any()
  assert float(jnp.abs(full).max()) > 1.0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal(arch):
  """Changing a later token never changes earlier logits."""
  _, model, params, ids = _setup(arch)
  a = model.apply(params, ids)
  b = model.apply(params, ids.at[:, 7].set((ids[:, 7] + 1) % 64))
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
  assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padded_prefix_cache_then_options(arch):
  """Left-padded prefix in the cache, expanded to options == unpadded full forward."""
  cfg, model, params, ids = _setup(arch)
  prefix = ids[:1, :7]
  pad_ids = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), prefix], 1)
  pad_mask = jnp.concatenate([jnp.zeros((1, 3), bool), jnp.ones((1, 7), bool)], 1)
  _, cache = model.apply(params, pad_ids, attention_mask=pad_mask, cache=init_cache(cfg, 1, 16))
  assert cache.next_pos.tolist() == [7]
  options = ids[:, 7:12]  # three options of 5 tokens
  opt_logits, _ = model.apply(params, options, cache=expand_cache(cache, 3))
  full = model.apply(params, jnp.concatenate([jnp.repeat(prefix, 3, 0), options], 1))
  np.testing.assert_allclose(opt_logits, full[:, 7:], atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_option_scoring_cached_equals_full(arch):
  cfg, _, params, ids = _setup(arch)
  scorer = scoring.Scorer(scoring.CausalLMAdapter(CausalLM(cfg)), params, batch_rows=2)
  prefix = [int(t) for t in ids[0, :6]]
  options = [[5, 9, 11], [7], [3, 3, 3, 3]]
  full = scorer.score_full([(prefix, o) for o in options], reduce="sum")
  cached = scorer.score_options(prefix, options, reduce="sum")
  np.testing.assert_allclose(cached, full, atol=1e-4)
  np.testing.assert_allclose(scorer.score_options(prefix, options),
                             full / np.array([3, 1, 4]), rtol=1e-5)
  # Hand check of one option from the full forward's log-probs.
  logits = jax.jit(CausalLM(cfg).apply)(params, jnp.asarray([prefix + options[0]]))
  logp = jax.nn.log_softmax(logits[0], -1)
  manual = -sum(float(logp[5 + j, options[0][j]]) for j in range(3))
  np.testing.assert_allclose(float(full[0]), manual, atol=1e-4)


def test_left_padded_prefix_cache_then_query_equals_full():
  """A right-padded prefix bucket, then a query and its options: padding is skipped."""
  cfg, _, params, ids = _setup("gpt2")
  scorer = scoring.Scorer(scoring.CausalLMAdapter(CausalLM(cfg)), params, length_quantum=8)
  demos, query, options = [5, 6, 7, 8, 9, 10], [11, 12], [[13, 14], [15], [16, 17]]
  rows = [(query, o) for o in options]
  p = scorer.prefill(demos, rows_len=scorer.rows_len(rows))
  assert p.cache_len > len(demos) + 4  # The prefix slot holds padding.
  got = scorer.score_with_prefix(p, rows)
  want = scorer.score_full([(demos + query, o) for o in options])
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_inputs_embeds_equals_input_ids(arch):
  _, model, params, ids = _setup(arch)
  emb = model.apply(params, ids, method=CausalLM.embed)
  assert emb.shape == (3, 12, 32)
  a = model.apply(params, ids)
  b = model.apply(params, inputs_embeds=emb)
  np.testing.assert_allclose(a, b, atol=1e-6)
  # Gradients reach prepended soft vectors (prompt tuning / MEND's S_D).
  prefix = jnp.zeros((3, 4, 32))
  loss = lambda p: model.apply(params, inputs_embeds=jnp.concatenate([p, emb], 1)).sum()
  assert float(jnp.abs(jax.grad(loss)(prefix)).sum()) > 0
  with pytest.raises(ValueError, match="exactly one"):
    model.apply(params, ids, inputs_embeds=emb)


def test_hidden_and_head():
  cfg, model, params, ids = _setup("llama")
  logits = model.apply(params, ids)
  hidden = model.apply(params, ids, method=CausalLM.hidden)
  assert hidden.shape == (3, 12, 32)
  head = params["params"]["embed"].T
  np.testing.assert_allclose(hidden @ head, logits, atol=1e-4)
  np.testing.assert_allclose(model.apply(params, hidden, method=CausalLM.head), logits, atol=1e-5)
  # With a cache: (hidden, new cache), as __call__ gives (logits, new cache).
  h, cache = model.apply(params, ids, cache=init_cache(cfg, 3, 12), method=CausalLM.hidden)
  np.testing.assert_allclose(h, hidden, atol=1e-5)
  assert int(cache.end) == 12


def test_rope_shapes_and_relative_positions():
  x = jax.random.normal(jax.random.key(0), (2, 5, 3, 8))
  pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
  y = rope(x, pos, 10000.0)
  assert y.shape == x.shape
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), atol=1e-5)
  np.testing.assert_allclose(rope(x, jnp.zeros_like(pos), 1e4), x, atol=1e-6)
  # q.k after RoPE depends only on the position difference.
  q, k = x[:, :1], x[:, 1:2]
  dot = lambda pq, pk: jnp.sum(rope(q, jnp.full((2, 1), pq), 1e4) * rope(k, jnp.full((2, 1), pk), 1e4))
  np.testing.assert_allclose(dot(3, 1), dot(10, 8), rtol=1e-4)
  assert abs(float(dot(3, 1)) - float(dot(3, 2))) > 1e-3


def test_gqa_equals_mha_with_repeated_kv_heads():
  key = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(key[0], (2, 5, 6, 4))
  k = jax.random.normal(key[1], (2, 7, 2, 4))
  v = jax.random.normal(key[2], (2, 7, 2, 4))
  mask = jnp.tril(jnp.ones((5, 7), bool), 2)[None].repeat(2, 0)
  out = attend(q, k, v, mask)
  assert out.shape == (2, 5, 6, 4)
  ref = attend(q, jnp.repeat(k, 3, axis=2), jnp.repeat(v, 3, axis=2), mask)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_param_shapes_and_logical_axes():
  cfg = CONFIGS["llama"]
  boxed = jax.eval_shape(CausalLM(cfg).init, jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  specs = nn.get_partition_spec(boxed)["params"]
  assert tuple(specs["embed"]) == ("vocab", "embed")
  assert tuple(specs["layers"]["attn"]["wq"]) == ("layers", "embed", "heads", "kv")
  assert tuple(specs["layers"]["attn"]["wk"]) == ("layers", "embed", "kv_heads", "kv")
  assert tuple(specs["layers"]["mlp"]["w_down"]) == ("layers", "mlp", "embed")
  shapes = nn.unbox(boxed)["params"]
  assert shapes["layers"]["attn"]["wk"].shape == (2, 32, 2, 8)
  assert shapes["layers"]["attn"]["wo"].shape == (2, 4, 8, 32)
  gpt = jax.eval_shape(CausalLM(CONFIGS["gpt2"]).init, jax.random.key(0),
                       jnp.zeros((1, 2), jnp.int32))
  assert tuple(nn.get_partition_spec(gpt)["params"]["pos_embed"]) == ("length", "embed")


def test_config_validation():
  with pytest.raises(ValueError, match="multiple"):
    LMConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="arch"):
    LMConfig(arch="t5")
  assert LMConfig.smollm2_135m().num_kv_heads == 3
  assert LMConfig.gpt2("large").d_model == 1280


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_matches_argmax_of_full_forward(arch):
  cfg, model, params, ids = _setup(arch)
  lm = llm_api.LM(cfg, params)  # No tokenizer: token ids in, token ids out.
  prompt = np.asarray(ids[0, :5])
  out = llm_api.generate(lm, prompt, max_new_tokens=6)
  seq = list(prompt)
  for _ in range(6):
    logits = model.apply(params, jnp.asarray([seq + [0] * (11 - len(seq))]))
    seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
  assert out.tolist() == seq[5:]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generation_stops_at_eos_by_default(arch):
  cfg, _, params, ids = _setup(arch)
  prompt = np.asarray(ids[0, :5])
  free = llm_api.generate(llm_api.LM(cfg, params), prompt, max_new_tokens=6)
  eos = int(free[2])
  first = free.tolist().index(eos)
  tok = type("Tok", (), {"eos_id": eos})()
  lm = llm_api.LM(cfg, params, tok)
  assert llm_api.generate(lm, prompt, max_new_tokens=6).tolist() == free.tolist()[:first]
  assert llm_api.generate(lm, prompt, max_new_tokens=6, eos=False).tolist() == free.tolist()
  # A batch: rows that ended hold EOS; decoding stops when every row has ended.
  out = llm_api.generate(lm, np.stack([prompt, prompt]), max_new_tokens=6)
  assert out.shape == (2, first + 1) and (out[:, -1] == eos).all()


def test_sampling_needs_a_key_and_is_a_function_of_it():
  cfg, _, params, ids = _setup("llama")
  lm = llm_api.LM(cfg, params)
  prompt = np.asarray(ids[0, :5])
  with pytest.raises(ValueError, match="key"):
    llm_api.generate(lm, prompt, temperature=1.0)
  a = llm_api.generate(lm, prompt, 8, temperature=1.0, key=jax.random.key(1))
  b = llm_api.generate(lm, prompt, 8, temperature=1.0, key=jax.random.key(1))
  c = llm_api.generate(lm, prompt, 8, temperature=1.0, key=jax.random.key(2))
  assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
  # A tiny temperature is greedy.
  cold = llm_api.generate(lm, prompt, 8, temperature=1e-4, key=jax.random.key(3))
  assert cold.tolist() == llm_api.generate(lm, prompt, 8).tolist()


def test_token_logprobs():
  logits = jnp.log(jnp.asarray([[[0.25, 0.75], [0.5, 0.5]]]))
  np.testing.assert_allclose(llm.token_logprobs(logits, jnp.asarray([[1, 0]])),
                             np.log([[0.75, 0.5]]), atol=1e-6)


def test_bfloat16_activations_close_to_float32():
  cfg, _, params, ids = _setup("llama")
  want = jax.jit(CausalLM(cfg).apply)(params, ids)
  got, cache = jax.jit(CausalLM(cfg.replace(dtype=jnp.bfloat16)).apply)(
      params, ids, cache=init_cache(cfg.replace(dtype=jnp.bfloat16), 3, 12))
  assert got.dtype == jnp.float32 and cache.k.dtype == jnp.bfloat16
  assert float(jnp.abs(got - want).max()) < 0.05 * float(jnp.abs(want).max())


def test_remat_same_gradients():
  cfg, _, params, ids = _setup("gpt2")

  def loss(p, c):
    logits = CausalLM(c).apply(p, ids[:, :-1])
    return -llm.token_logprobs(logits, ids[:, 1:]).mean()

  g = jax.jit(jax.grad(loss), static_argnums=1)
  a, b = g(params, cfg), g(params, cfg.replace(remat=True))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-5)
  assert float(jnp.abs(a["params"]["layers"]["attn"]["wq"]).sum()) > 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_left_padded_batch_equals_single_rows(arch):
  cfg, _, params, ids = _setup(arch)
  lm = llm_api.LM(cfg, params)
  short, long = np.asarray(ids[0, :3]), np.asarray(ids[1, :7])
  batch = np.zeros((2, 7), np.int32)
  mask = np.zeros((2, 7), np.int32)
  batch[0, 4:], mask[0, 4:] = short, 1
  batch[1], mask[1] = long, 1
  out = llm_api.generate(lm, batch, max_new_tokens=4, attention_mask=mask)
  assert out[0].tolist() == llm_api.generate(lm, short, max_new_tokens=4).tolist()
  assert out[1].tolist() == llm_api.generate(lm, long, max_new_tokens=4).tolist()


def test_soft_prefix_in_cache_then_tokens():
  """MEND / prompt tuning: vectors prefilled via inputs_embeds, then tokens against the cache."""
  cfg, model, params, ids = _setup("llama")
  soft = jax.random.normal(jax.random.key(7), (3, 4, 32))
  emb = model.apply(params, ids, method=CausalLM.embed)
  full = model.apply(params, inputs_embeds=jnp.concatenate([soft, emb], 1))
  _, cache = model.apply(params, inputs_embeds=soft, cache=init_cache(cfg, 3, 16))
  rest, _ = model.apply(params, ids, cache=cache)
  np.testing.assert_allclose(rest, full[:, 4:], atol=1e-5)


def test_cache_overflow_is_an_error():
  cfg = CONFIGS["llama"].replace(num_layers=1)
  model = CausalLM(cfg)
  ids = jnp.zeros((1, 6), jnp.int32)
  params = model.init(jax.random.key(0), ids)
  _, cache = model.apply(params, ids, cache=init_cache(cfg, 1, 8))
  with pytest.raises(ValueError, match="KV cache full"):
    model.apply(params, ids[:, :3], cache=cache)
