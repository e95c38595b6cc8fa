"""CausalLM mechanics: KV cache == full forward, RoPE, GQA, inputs_embeds, padding."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import llm
from models.llm import CausalLM, LMConfig, attend, expand_cache, init_cache, rope
from research.llm import generate, scoring

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
    self.apply = jax.jit(model.apply, static_argnames=("method", "return_hidden"))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cached_chunks_equal_full_forward(arch):
  cfg, model, params, ids = _setup(arch)
  full, none_cache = model.apply(params, ids)
  assert none_cache is None
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
  a, _ = model.apply(params, ids)
  b, _ = model.apply(params, ids.at[:, 7].set((ids[:, 7] + 1) % 64))
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
  full, _ = model.apply(params, jnp.concatenate([jnp.repeat(prefix, 3, 0), options], 1))
  np.testing.assert_allclose(opt_logits, full[:, 7:], atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_option_scoring_cached_equals_full(arch):
  cfg, _, params, ids = _setup(arch)
  prefix = [int(t) for t in ids[0, :6]]
  options = [[5, 9, 11], [7], [3, 3, 3, 3]]
  p_ids, p_mask = scoring.pad_prefix(prefix, 9)
  o_ids, o_mask = scoring.pad_options(options, 5)
  s_cached, n_cached = scoring.score_options_cached(params, p_ids, p_mask, o_ids, o_mask,
                                                    config=cfg)
  f_ids, f_mask, f_tgt = scoring.full_rows(prefix, options, 12)
  s_full, n_full = scoring.score_sequences(params, f_ids, f_mask, f_tgt, config=cfg)
  np.testing.assert_allclose(s_cached, s_full, atol=1e-4)
  np.testing.assert_array_equal(n_cached, [3, 1, 4])
  np.testing.assert_array_equal(n_full, [3, 1, 4])
  # Hand check of one option from the full forward's log-probs.
  logits, _ = jax.jit(CausalLM(cfg).apply)(params, jnp.asarray([prefix + options[0]]))
  logp = jax.nn.log_softmax(logits[0], -1)
  manual = sum(float(logp[5 + j, options[0][j]]) for j in range(3))
  np.testing.assert_allclose(float(s_full[0]), manual, atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_inputs_embeds_equals_input_ids(arch):
  _, model, params, ids = _setup(arch)
  emb = model.apply(params, ids, method=CausalLM.embed)
  assert emb.shape == (3, 12, 32)
  a, _ = model.apply(params, ids)
  b, _ = model.apply(params, inputs_embeds=emb)
  np.testing.assert_allclose(a, b, atol=1e-6)
  # Gradients reach prepended soft vectors (prompt tuning / MEND's S_D).
  prefix = jnp.zeros((3, 4, 32))
  loss = lambda p: model.apply(params, inputs_embeds=jnp.concatenate([p, emb], 1))[0].sum()
  assert float(jnp.abs(jax.grad(loss)(prefix)).sum()) > 0
  with pytest.raises(ValueError, match="exactly one"):
    model.apply(params, ids, inputs_embeds=emb)


def test_return_hidden():
  _, model, params, ids = _setup("llama")
  logits, cache, hidden = model.apply(params, ids, return_hidden=True)
  assert hidden.shape == (3, 12, 32) and cache is None
  head = params["params"]["embed"].T
  np.testing.assert_allclose(hidden @ head, logits, atol=1e-4)


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
  prompt = np.asarray(ids[0, :5])
  out = generate.greedy(cfg, params, prompt, max_new_tokens=6)
  seq = list(prompt)
  for _ in range(6):
    logits, _ = model.apply(params, jnp.asarray([seq + [0] * (11 - len(seq))]))
    logits = logits[:, len(seq) - 1:len(seq)]
    seq.append(int(jnp.argmax(logits[0, -1])))
  assert out.tolist() == seq[5:]
  # EOS stops a row: everything after the first EOS is EOS.
  eos = int(out[2])
  out_eos = generate.greedy(cfg, params, prompt, max_new_tokens=6, eos_id=eos)
  first = out_eos.tolist().index(eos)
  assert first <= 2 and all(t == eos for t in out_eos[first:])
  assert generate.trim_at_eos(out_eos, eos) == out_eos.tolist()[:first]


def test_token_logprobs():
  logits = jnp.log(jnp.asarray([[[0.25, 0.75], [0.5, 0.5]]]))
  np.testing.assert_allclose(llm.token_logprobs(logits, jnp.asarray([[1, 0]])),
                             np.log([[0.75, 0.5]]), atol=1e-6)


def test_bfloat16_activations_close_to_float32():
  cfg, _, params, ids = _setup("llama")
  want, _ = jax.jit(CausalLM(cfg).apply)(params, ids)
  got, cache = jax.jit(CausalLM(cfg.replace(dtype=jnp.bfloat16)).apply)(
      params, ids, cache=init_cache(cfg.replace(dtype=jnp.bfloat16), 3, 12))
  assert got.dtype == jnp.float32 and cache.k.dtype == jnp.bfloat16
  assert float(jnp.abs(got - want).max()) < 0.05 * float(jnp.abs(want).max())


def test_remat_same_gradients():
  cfg, _, params, ids = _setup("gpt2")

  def loss(p, c):
    logits, _ = CausalLM(c).apply(p, ids[:, :-1])
    return -llm.token_logprobs(logits, ids[:, 1:]).mean()

  g = jax.jit(jax.grad(loss), static_argnums=1)
  a, b = g(params, cfg), g(params, cfg.replace(remat=True))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-5)
  assert float(jnp.abs(a["params"]["layers"]["attn"]["wq"]).sum()) > 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_left_padded_batch_equals_single_rows(arch):
  cfg, _, params, ids = _setup(arch)
  short, long = np.asarray(ids[0, :3]), np.asarray(ids[1, :7])
  batch = np.zeros((2, 7), np.int32)
  mask = np.zeros((2, 7), np.int32)
  batch[0, 4:], mask[0, 4:] = short, 1
  batch[1], mask[1] = long, 1
  out = generate.greedy(cfg, params, batch, max_new_tokens=4, attention_mask=mask)
  assert out[0].tolist() == generate.greedy(cfg, params, short, max_new_tokens=4).tolist()
  assert out[1].tolist() == generate.greedy(cfg, params, long, max_new_tokens=4).tolist()


def test_soft_prefix_in_cache_then_tokens():
  """MEND / prompt tuning: vectors prefilled via inputs_embeds, then tokens against the cache."""
  cfg, model, params, ids = _setup("llama")
  soft = jax.random.normal(jax.random.key(7), (3, 4, 32))
  emb = model.apply(params, ids, method=CausalLM.embed)
  full, _ = model.apply(params, inputs_embeds=jnp.concatenate([soft, emb], 1))
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
