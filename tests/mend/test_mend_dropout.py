"""Dropout as the released code has it: active in training twins of the modules (the
distiller, the frozen LLM's student and teacher passes), off at evaluation, keyed by
the key it is given (the trainer's per-step key)."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import distiller as distiller_lib
from models import llm
from research.mend import losses


def _cfg(arch):
  if arch == "gpt2":
    return llm.LMConfig.gpt2("small", vocab_size=40, d_model=16, num_layers=2, num_heads=2,
                             num_kv_heads=2, head_dim=8, mlp_dim=32, max_len=64)
  return llm.LMConfig(arch="llama", vocab_size=40, d_model=16, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=8, mlp_dim=32, max_len=64)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_train_mode_differs_eval_mode_is_deterministic(arch):
  cfg = _cfg(arch)
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 40, (2, 9)), jnp.int32)
  params = llm.CausalLM(cfg).init(jax.random.key(0), ids)
  evaluate = jax.jit(lambda p: llm.CausalLM(cfg).apply(p, ids))
  train = jax.jit(lambda p, k: llm.CausalLM(cfg.train_mode(0.1)).apply(
      p, ids, rngs={"dropout": k}))
  e1, e2 = evaluate(params), evaluate(params)
  np.testing.assert_array_equal(e1, e2)  # Evaluation: no randomness at all.
  t1, t1b, t2 = train(params, jax.random.key(1)), train(params, jax.random.key(1)), train(
      params, jax.random.key(2))
  np.testing.assert_array_equal(t1, t1b)  # Keyed: the same key, the same masks.
  assert float(jnp.abs(t1 - e1).max()) > 1e-3 and float(jnp.abs(t1 - t2).max()) > 1e-3
  # Rate 0 in train mode is the evaluation model exactly; the parameters are shared.
  zero = jax.jit(lambda p: llm.CausalLM(cfg.train_mode(0.0)).apply(p, ids))(params)
  np.testing.assert_array_equal(zero, e1)
  assert cfg.train_mode(0.1).train_mode(0.0) == cfg


def test_dropout_acts_where_gpt2_has_it():
  """Embeddings, attention probabilities and both residual branches of every layer."""
  cfg = _cfg("llama").train_mode(0.5)
  ids = jnp.ones((1, 5), jnp.int32)
  model = llm.CausalLM(cfg)
  params = model.init(jax.random.key(0), ids)
  seen = []

  def record(f, args, kwargs, ctx):
    if isinstance(ctx.module, nn.Dropout):
      seen.append("/".join(ctx.module.path))
    return f(*args, **kwargs)
  with nn.intercept_methods(record):
    model.apply(params, ids, rngs={"dropout": jax.random.key(1)})
  per_layer = ["layers/attn/attn_drop", "layers/resid_drop_attn", "layers/resid_drop_mlp"]
  assert seen == ["embed_drop"] + per_layer * cfg.num_layers
  seen.clear()
  with nn.intercept_methods(record):  # Evaluation: no dropout module at all.
    llm.CausalLM(_cfg("llama")).apply(params, ids)
  assert not seen


def test_distiller_and_loss_dropout():
  cfg = _cfg("llama")
  lm = llm.CausalLM(cfg)
  lp = lm.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  dist = distiller_lib.Distiller(cfg.replace(d_model=8, head_dim=4, num_layers=1),
                                 num_vectors=3, out_dim=16)
  ids = jnp.asarray(np.random.default_rng(1).integers(1, 40, (2, 10)), jnp.int32)
  dp = dist.init(jax.random.key(1), ids)["params"]
  drop = dist.clone(lm_config=dist.lm_config.train_mode(0.3))
  s_eval = jax.jit(lambda p: dist.apply({"params": p}, ids))(dp)
  np.testing.assert_array_equal(s_eval, jax.jit(lambda p: dist.apply({"params": p}, ids))(dp))
  s_a = jax.jit(lambda p: drop.apply({"params": p}, ids, rngs={"dropout": jax.random.key(3)}))(dp)
  assert float(jnp.abs(s_a - s_eval).max()) > 1e-4
  batch = {"demo_ids": ids, "demo_mask": jnp.ones_like(ids),
           "query_ids": ids[:, :6], "query_mask": jnp.ones((2, 6), jnp.int32),
           "target_mask": jnp.asarray([[0, 0, 0, 1, 1, 1]] * 2, jnp.int32)}
  student = llm.CausalLM(cfg.train_mode(0.3))
  kw = dict(ce_weight=1.0, kl_weight=1.0, teacher_lm=student)
  f = jax.jit(jax.value_and_grad(
      lambda p, k: losses.mend_loss(drop, p, student, lp, batch, key=k, **kw)[0]))
  (a, g), (a2, _), (b, _) = (f(dp, jax.random.key(5)), f(dp, jax.random.key(5)),
                             f(dp, jax.random.key(6)))
  assert float(a) == float(a2) and float(a) != float(b)
  plain = jax.jit(lambda p: losses.mend_loss(dist, p, lm, lp, batch, ce_weight=1.0,
                                              kl_weight=1.0)[0])(dp)
  assert float(a) != float(plain)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
