"""The GPICL transformer: shapes, causality in both layouts, gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
@pytest.mark.parametrize("attention", ["xla", "jax"])
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


def test_attention_implementations_agree():
  x, y = _data()
  a, b = _model("query"), _model("query", attention="jax")
  params = a.init(jax.random.key(0), x, y)
  np.testing.assert_allclose(a.apply(params, x, y), b.apply(params, x, y), atol=1e-4)


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
