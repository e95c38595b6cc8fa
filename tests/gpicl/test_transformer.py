"""The GPICL transformer: shapes, causality in both layouts, gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import cpu_attention
from models import transformer


def _model(layout, **kw):
  return transformer.Transformer(num_classes=10, num_layers=2, num_heads=2, head_dim=8,
                                 d_model=16, max_len=12, layout=layout, **kw)


def _data(b=3, length=12, d=5, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return jax.random.normal(k1, (b, length, d)), jax.random.randint(k2, (b, length), 0, 10)


@pytest.mark.parametrize("layout", ["paper", "query"])
def test_shapes_and_finite(layout):
  m = _model(layout)
  x, y = _data()
  params = m.init(jax.random.key(0), x, y)
  logits = m.apply(params, x, y)
  assert logits.shape == (3, 12, 10)
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("layout", ["paper", "query"])
@pytest.mark.parametrize("attention", transformer.ATTENTION)
def test_causality(layout, attention):
  """logits[:, t] depends on x[:, :t+1] and y[:, :t] only."""
  m = _model(layout, attention=attention)
  x, y = _data()
  params = m.init(jax.random.key(0), x, y)
  base = m.apply(params, x, y)
  t = 6
  x2 = x.at[:, t + 1:].set(jax.random.normal(jax.random.key(9), x[:, t + 1:].shape))
  y2 = y.at[:, t:].set((y[:, t:] + 3) % 10)
  changed = m.apply(params, x2, y2)
  np.testing.assert_allclose(base[:, :t + 1], changed[:, :t + 1], atol=1e-5)
  # And the future does matter (the test would catch an all-masked model).
  assert not np.allclose(base[:, t + 1:], changed[:, t + 1:], atol=1e-4)
  # The current label never leaks into its own prediction.
  y3 = y.at[:, t].set((y[:, t] + 1) % 10)
  np.testing.assert_allclose(base[:, t], m.apply(params, x, y3)[:, t], atol=1e-5)


KERNEL = jax.default_backend() == "cpu" and cpu_attention.available()
needs_kernel = pytest.mark.skipif(not KERNEL, reason="no CPU backend or the fused CPU "
                                                     "attention kernel could not be built here")


@pytest.mark.parametrize("layout", ["paper", "query"])
@pytest.mark.parametrize("attention", ["jax", "cpu_fused", "auto"])
def test_attention_implementations_agree_forward_and_backward(layout, attention):
  """Every implementation gives the einsum form's logits and parameter gradients."""
  if attention == "cpu_fused" and not KERNEL:
    pytest.skip("no CPU backend or the fused CPU attention kernel could not be built here")
  x, y = _data()
  a, b = _model(layout, attention="xla"), _model(layout, attention=attention)
  params = a.init(jax.random.key(0), x, y)
  np.testing.assert_allclose(a.apply(params, x, y), b.apply(params, x, y), rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x, y)))
  ga, gb = jax.grad(loss(a))(params), jax.grad(loss(b))(params)
  for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def _qkv(shape, seed=0):
  return [jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(seed), 4)]


@needs_kernel
@pytest.mark.parametrize("shape", [(4, 100, 8, 32), (3, 37, 3, 20), (2, 200, 2, 64)])
@pytest.mark.parametrize("mask_kind", ["causal", "per_example", "dead_row"])
def test_fused_kernel_matches_einsum(shape, mask_kind):
  """Paper shapes, odd sizes (padding), per-example masks and a row with no allowed key."""
  b, t = shape[:2]
  q, k, v, g = _qkv(shape)
  causal = jnp.tril(jnp.ones((t, t), bool))
  mask = {"causal": causal[None, None],
          "per_example": (jax.random.uniform(jax.random.key(5), (b, 1, t, t)) < 0.3)
                         | jnp.eye(t, dtype=bool),
          "dead_row": causal.at[t // 2].set(False)[None, None]}[mask_kind]
  ref = lambda q, k, v: transformer.dot_product_attention(q, k, v, mask, "xla")
  fused = jax.jit(lambda q, k, v: transformer.dot_product_attention(q, k, v, mask, "cpu_fused"))
  np.testing.assert_allclose(fused(q, k, v), ref(q, k, v), rtol=1e-5, atol=2e-6)
  grad = lambda fn: jax.grad(lambda *a: jnp.sum(fn(*a) * g), (0, 1, 2))(q, k, v)
  for u, w in zip(grad(ref), grad(fused)):
    np.testing.assert_allclose(w, u, rtol=1e-5, atol=2e-6)


_MANY_CALLS = r"""
import jax, jax.numpy as jnp
from models import cpu_attention
mask = jnp.tril(jnp.ones((32, 32), bool))[None, None]
xs = [jax.random.normal(jax.random.key(i), (4, 32, 2, 8)) for i in range(16)]
loss = lambda xs: sum(jnp.sum(cpu_attention.attention(x, x, x, mask)) for x in xs)
step = jax.jit(jax.grad(loss))
for _ in range(50):
  jax.block_until_ready(step(xs))
print("done")
"""


@needs_kernel
def test_fused_kernel_many_concurrent_calls_do_not_deadlock():
  """16 independent kernel calls that XLA runs at once on its intra-op pool: a caller
  that waited for its queued (not started) helpers held every pool thread and hung
  (the kernel before this test hung in the first of 50 steps). In a subprocess, so a
  hang fails the test instead of the suite."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  r = subprocess.run([sys.executable, "-c", _MANY_CALLS], cwd=root, capture_output=True,
                     text=True, timeout=240)
  assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]


@needs_kernel
def test_fused_kernel_under_vmap_and_on_sharded_inputs():
  """vmap over a leading axis (per-example masks included) and batch-sharded inputs."""
  q, k, v, _ = _qkv((3, 4, 50, 2, 16))
  causal = jnp.tril(jnp.ones((50, 50), bool))[None, None]
  masks = jnp.stack([causal, causal.at[..., 7, :].set(False), jnp.ones_like(causal)])
  fn = lambda impl: jax.vmap(lambda q, k, v, m: transformer.dot_product_attention(q, k, v, m, impl))
  np.testing.assert_allclose(fn("cpu_fused")(q, k, v, masks), fn("xla")(q, k, v, masks),
                             rtol=1e-5, atol=2e-6)
  mesh = jax.make_mesh((len(jax.devices()),), ("data",))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  q, k, v, _ = (jax.device_put(x, spec) for x in _qkv((len(jax.devices()), 20, 2, 16)))
  causal = jnp.tril(jnp.ones((20, 20), bool))[None, None]
  out = jax.jit(lambda q, k, v: transformer.dot_product_attention(q, k, v, causal, "cpu_fused"))
  np.testing.assert_allclose(out(q, k, v), transformer.dot_product_attention(q, k, v, causal, "xla"),
                             rtol=1e-5, atol=2e-6)


def test_attention_names_and_fallbacks():
  x, y = _data()
  with pytest.raises(ValueError, match="attention implementation"):
    _model("paper", attention="flash").init(jax.random.key(0), x, y)
  # "auto" in bfloat16 falls back to the einsum form; "cpu_fused" says why it cannot run.
  params = _model("paper", dtype="bfloat16").init(jax.random.key(0), x, y)
  np.testing.assert_array_equal(_model("paper", dtype="bfloat16").apply(params, x, y),
                                _model("paper", dtype="bfloat16", attention="xla").apply(params, x, y))
  with pytest.raises(ValueError, match="float32 on CPU"):
    _model("paper", dtype="bfloat16", attention="cpu_fused").apply(params, x, y)


def test_gradients_reach_every_parameter():
  m = _model("paper")
  x, y = _data()
  params = m.init(jax.random.key(0), x, y)["params"]

  def loss(p):
    logits = m.apply({"params": p}, x, y)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1))

  grads = jax.grad(loss)(params)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)


def test_params_carry_logical_axes():
  import flax.linen as nn
  m = _model("paper")
  x, y = _data()
  specs = nn.get_partition_spec(m.init(jax.random.key(0), x, y))["params"]
  assert tuple(specs["block_0"]["mlp_in"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["block_0"]["query"]["kernel"]) == ("embed", "heads", "kv")


def test_too_long_sequence_is_a_clear_error():
  m = _model("paper")
  x, y = _data(length=13)
  with pytest.raises(ValueError, match="max_len"):
    m.init(jax.random.key(0), x, y)


def test_state_size():
  assert _model("paper").state_size(12) == 2 * 8 * 2 * 12
  assert _model("query").state_size(12) == 2 * 8 * 2 * 24


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
  x, y = _data()
  f32, bf16 = _model("query"), _model("query", dtype="bfloat16")
  params = f32.init(jax.random.key(0), x, y)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16.init(jax.random.key(0), x, y)))
  a, b = f32.apply(params, x, y), bf16.apply(params, x, y)
  assert b.dtype == jnp.float32  # Logits return in float32 for the loss.
  np.testing.assert_allclose(a, b, atol=0.1)
  assert not np.allclose(a, b, atol=1e-6)  # bf16 really computed in lower precision.


def test_remat_gives_same_gradients():
  x, y = _data()
  a, b = _model("paper"), _model("paper", remat=True)
  params = a.init(jax.random.key(0), x, y)
  loss = lambda m: lambda p: m.apply(p, x, y).sum()
  ga, gb = jax.grad(loss(a))(params), jax.grad(loss(b))(params)
  for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_pos_init_std_scales_positional_embeddings():
  x, y = _data()
  for std in (0.02, 1.0):
    pos = _model("paper", pos_init_std=std).init(jax.random.key(0), x, y)["params"]["pos_embed"]
    assert abs(float(jnp.std(nn.unbox(pos))) - std) < 0.25 * std
