"""Checks that only mean something on a GPU/TPU; skipped on CPU.
`launch/accelerator_check.sh` runs them on the device (with JAX_PLATFORMS unset)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import transformer

pytestmark = pytest.mark.skipif(jax.default_backend() == "cpu",
                                reason="needs an accelerator: launch/accelerator_check.sh")


def _qkv(dtype, shape=(4, 128, 8, 64)):
  keys = jax.random.split(jax.random.key(0), 4)
  return [jax.random.normal(k, shape).astype(dtype) for k in keys]


def test_cudnn_attention_matches_einsum_in_bfloat16():
  if jax.default_backend() != "gpu":
    pytest.skip("cuDNN attention is GPU only")
  q, k, v, g = _qkv(jnp.bfloat16)
  mask = jnp.tril(jnp.ones((128, 128), bool))[None, None]
  f32 = lambda *a: [x.astype(jnp.float32) for x in a]
  ref = lambda q, k, v: transformer.dot_product_attention(*f32(q, k, v), mask, "xla")
  cudnn = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                       implementation="cudnn")
  np.testing.assert_allclose(cudnn(q, k, v).astype(jnp.float32), ref(q, k, v), atol=3e-2)
  grad = lambda fn: jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * g), (0, 1, 2))
  for a, b in zip(grad(cudnn)(q, k, v), grad(ref)(q, k, v)):
    np.testing.assert_allclose(a.astype(jnp.float32), b, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_attention_implementations_agree_on_device(dtype):
  m = lambda attention: transformer.Transformer(num_classes=10, num_layers=2, num_heads=4,
                                                head_dim=64, d_model=256, max_len=64,
                                                layout="paper", attention=attention, dtype=dtype)
  x = jax.random.normal(jax.random.key(1), (8, 64, 32))
  y = jax.random.randint(jax.random.key(2), (8, 64), 0, 10)
  params = m("xla").init(jax.random.key(0), x, y)
  tol = 1e-4 if dtype == "float32" else 0.1
  np.testing.assert_allclose(m("jax").apply(params, x, y), m("xla").apply(params, x, y), atol=tol)


def test_train_step_sharded_over_local_devices_matches_one_device():
  from experiments.gpicl import digits
  from research import sharding, train

  def losses(devices, steps=2):
    config = digits.get_config("tiny")
    mesh = sharding.make_mesh(config.mesh, devices=devices)
    _, state, step, inputs = train.fresh_state_and_step(config, mesh)
    out = []
    for i in range(steps):
      state, m = step(state, *inputs(i))
      out.append(float(m["loss"]))
    return out

  np.testing.assert_allclose(losses(jax.devices()), losses(jax.devices()[:1]), rtol=1e-4)
