"""The distiller: S_D shape, projection, padding/position invariance, placeholder init."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import distiller as distiller_lib
from models import llm


def _cfg(d=16, layers=1):
  return llm.LMConfig(arch="llama", vocab_size=50, d_model=d, num_layers=layers, num_heads=2,
                      num_kv_heads=1, head_dim=d // 2, mlp_dim=32, max_len=256)


@pytest.mark.parametrize("out_dim", [16, 24])
def test_shape_and_projection(out_dim):
  m = distiller_lib.Distiller(_cfg(), num_vectors=5, out_dim=out_dim)
  ids = jnp.ones((3, 7), jnp.int32)
  p = m.init(jax.random.key(0), ids)["params"]
  s_d = m.apply({"params": p}, ids)
  assert s_d.shape == (3, 5, out_dim)
  assert ("proj" in p) == (out_dim != 16)
  if out_dim != 16:  # Linear + tanh.
    assert float(jnp.abs(s_d).max()) <= 1.0
  axes = nn.get_partition_spec(m.init(jax.random.key(0), ids))["params"]
  assert tuple(axes["placeholders"]) == ("length", "embed")


def test_padding_does_not_move_or_change_s_d():
  """A right-padded row (mask-based positions, fixed placeholder slots) gives the
  S_D the same row gives unpadded, and rows of a batch do not interact."""
  m = distiller_lib.Distiller(_cfg(layers=2), num_vectors=4, out_dim=24)
  rng = np.random.default_rng(0)
  a, b = rng.integers(1, 50, 6), rng.integers(1, 50, 11)
  p = m.init(jax.random.key(1), jnp.ones((1, 11), jnp.int32))["params"]
  alone_a = m.apply({"params": p}, jnp.asarray(a[None]))
  alone_b = m.apply({"params": p}, jnp.asarray(b[None]))
  ids = np.zeros((2, 16), np.int32)
  mask = np.zeros((2, 16), np.int32)
  ids[0, :6], mask[0, :6] = a, 1
  ids[1, :11], mask[1, :11] = b, 1
  ids[0, 6:] = 7  # Garbage under the mask must not matter.
  batch = m.apply({"params": p}, jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(batch[0], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(batch[1], alone_b[0], atol=1e-5)
  # Without the mask the padding changes S_D: the check above is not vacuous.
  unmasked = m.apply({"params": p}, jnp.asarray(ids))
  assert float(jnp.abs(unmasked[0] - alone_a[0]).max()) > 1e-3


def test_empty_demonstrations_are_finite():
  m = distiller_lib.Distiller(_cfg(), num_vectors=3, out_dim=16)
  ids = jnp.zeros((2, 5), jnp.int32)
  p = m.init(jax.random.key(0), ids)["params"]
  s_d = m.apply({"params": p}, ids, jnp.zeros((2, 5), jnp.int32))
  assert bool(jnp.isfinite(s_d).all())


def test_vocab_placeholder_init_uses_embedding_rows():
  m = distiller_lib.Distiller(_cfg(), num_vectors=6, out_dim=16, placeholder_init="vocab")
  p = nn.unbox(m.init(jax.random.key(3), jnp.ones((1, 4), jnp.int32))["params"])
  table = np.asarray(p["lm"]["embed"])
  for row in np.asarray(p["placeholders"]):
    assert np.min(np.abs(table - row).max(1)) < 1e-7
  with pytest.raises(ValueError, match="placeholder_init"):
    distiller_lib.Distiller(_cfg(), 2, 16, placeholder_init="zeros").init(
        jax.random.key(0), jnp.ones((1, 4), jnp.int32))


def test_init_from_llm_copies_first_layers():
  big = _cfg(layers=3)
  lm_params = llm.CausalLM(big).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
  m = distiller_lib.Distiller(big.replace(num_layers=2), num_vectors=2, out_dim=16)
  boxed = m.init(jax.random.key(1), jnp.ones((1, 4), jnp.int32))["params"]
  new = distiller_lib.init_from_llm(boxed, lm_params, 2)
  src, got = nn.unbox(lm_params)["params"], nn.unbox(new)["lm"]
  np.testing.assert_array_equal(got["embed"], src["embed"])
  jax.tree.map(lambda g, s: np.testing.assert_array_equal(g, s[:2]), got["layers"], src["layers"])
  np.testing.assert_array_equal(nn.unbox(new)["placeholders"], nn.unbox(boxed)["placeholders"])
  assert isinstance(new["lm"]["embed"], nn.meta.AxisMetadata)  # Still boxed.
  with pytest.raises(ValueError, match="do not match"):
    distiller_lib.init_from_llm(boxed, lm_params, 1)


@pytest.mark.parametrize("out_dim", [16, 24])
def test_embedding_scale_matching(out_dim):
  """With embedding_rms, every untrained S_D vector has exactly that RMS (the scale of
  the LLM's token embeddings), and the gain is trained."""
  m = distiller_lib.Distiller(_cfg(), num_vectors=3, out_dim=out_dim, embedding_rms=0.13)
  ids = jnp.arange(14, dtype=jnp.int32).reshape(2, 7) % 50
  p = nn.unbox(m.init(jax.random.key(0), ids)["params"])
  s_d = m.apply({"params": p}, ids)
  np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(s_d)**2, -1)), 0.13, rtol=1e-4)
  g = jax.grad(lambda q: jnp.sum(m.apply({"params": q}, ids)[..., 0]))(p)
  assert float(jnp.abs(g["out_gain"]).sum()) > 0
  plain = distiller_lib.Distiller(_cfg(), num_vectors=3, out_dim=out_dim)
  assert "out_gain" not in plain.init(jax.random.key(0), ids)["params"]
