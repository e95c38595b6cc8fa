"""`models.layers.per_token` / `token_matmul` / `Dense`: dense layers as one 2-D matmul
over all tokens. Same parameters and values as the plain forms, and the reason they
exist: under autodiff XLA:CPU then computes each kernel's gradient without writing a
transposed copy of the activation gradient (1.8x on the paper-size GPICL MLP's backward).
`token_dot_general` (the GPICL transformer's dense layers): the same values and
gradients as `lax.dot_general`, with every kernel gradient a plain [K, M]·[M, N] matmul
on CPU (XLA:CPU's fast path) instead of a dot over a transposed operand."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import layers

B, T, D, F = 4, 10, 16, 48


def _mlp(dense_cls):
  class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
      return dense_cls(D, name="out")(nn.gelu(dense_cls(F, name="inp")(x)))
  return Mlp()


def _loss(model):
  return lambda v, x: jnp.sum(jnp.sin(model.apply(v, x)))


def test_dense_matches_flax_dense_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  ours, plain = _mlp(layers.Dense), _mlp(nn.Dense)
  v = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, v)
  np.testing.assert_allclose(ours.apply(v, x), plain.apply(v, x), rtol=1e-5, atol=1e-6)
  g_ours = jax.grad(_loss(ours), argnums=(0, 1))(v, x)
  g_plain = jax.grad(_loss(plain), argnums=(0, 1))(v, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_ours, g_plain)


@pytest.mark.parametrize("contract,spec", [(1, "btd,dhk->bthk"), (2, "bthk,hkd->btd")])
def test_token_matmul_is_the_einsum(contract, spec):
  k1, k2 = jax.random.split(jax.random.key(2))
  lhs, rhs = spec.split("->")[0].split(",")
  sizes = dict(b=B, t=T, d=D, h=3, k=5)
  x = jax.random.normal(k1, [sizes[c] for c in lhs])
  w = jax.random.normal(k2, [sizes[c] for c in rhs])
  np.testing.assert_allclose(layers.token_matmul(x, w, contract), jnp.einsum(spec, x, w),
                             rtol=1e-5, atol=1e-5)


def test_per_token_keeps_leading_dims_of_dense_general():
  x = jax.random.normal(jax.random.key(3), (B, T, 3, 5))
  layer = nn.DenseGeneral(D, axis=(-2, -1))
  v = layer.init(jax.random.key(4), x)
  y = layers.per_token(lambda z: layer.apply(v, z), x)
  assert y.shape == (B, T, D)
  np.testing.assert_allclose(y, layer.apply(v, x), rtol=1e-5, atol=1e-5)


def _transposed_activation_gradients(dense_cls) -> int:
  """Buffers of the compiled gradient shaped like a transposed activation gradient
  ([features, B·T] or [features, B, T])."""
  x = jnp.ones((B, T, D))
  model = _mlp(dense_cls)
  v = model.init(jax.random.key(0), x)
  hlo = jax.jit(jax.grad(_loss(model))).lower(v, x).compile().as_text()
  shapes = "|".join(f"{f},{B * T}|{f},{B},{T}" for f in (D, F))
  return len(re.findall(rf"^\s*(?:ROOT )?%[\w.\-]+ = f32\[(?:{shapes})\]", hlo, re.M))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU layout decision")
def test_kernel_gradients_need_no_transposed_copy_on_cpu():
  plain = _transposed_activation_gradients(nn.Dense)
  # If XLA stops transposing for the plain form, per_token may no longer be needed:
  # re-measure the GPICL step (launch.bench) before removing it.
  assert plain > 0, "XLA:CPU no longer transposes the plain Dense's gradient"
  assert _transposed_activation_gradients(layers.Dense) == 0


# Even tokens: the halves form, with the narrower operand copied (x, or g for the 16 -> 15
# kernel); odd: x.T @ g.
@pytest.mark.parametrize("tokens", [B * T, B * T - 1])
@pytest.mark.parametrize("kernel,contract", [((D, 3, 5), 1), ((3, 5, D), 2), ((D, F), 1)])
def test_token_dot_general_matches_dot_general(tokens, kernel, contract):
  k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
  lhs_shape = (tokens,) + kernel[:contract]
  x = jax.random.normal(k1, lhs_shape)
  w = jax.random.normal(k2, kernel)
  dims = ((tuple(range(1, contract + 1)), tuple(range(contract))), ((), ()))
  cot = jax.random.normal(k3, (tokens,) + kernel[contract:])
  ours = lambda x, w: layers.token_dot_general(x, w, dims)
  plain = lambda x, w: jax.lax.dot_general(x, w, dims)
  np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-5, atol=1e-5)
  g_ours = jax.vjp(ours, x, w)[1](cot)
  g_plain = jax.vjp(plain, x, w)[1](cot)
  for a, b in zip(g_ours, g_plain):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_token_dot_general_passes_other_contractions_through():
  x, w = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
  dims = (((2,), (1,)), ((0,), (0,)))  # A batched matmul: not a dense layer over tokens.
  np.testing.assert_array_equal(layers.token_dot_general(x, w, dims),
                                jax.lax.dot_general(x, w, dims))


def _transposed_operand_dots(dot_general) -> int:
  """Dots of the compiled gradient of a 2-layer MLP (per_token DenseGeneral) that
  contract an operand's leading dim: x.T @ g, which XLA:CPU runs outside YNNPACK."""
  class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
      dense = lambda f, name: nn.DenseGeneral(f, name=name, dot_general=dot_general)
      h = nn.gelu(layers.per_token(dense(F, "inp"), x))
      return layers.per_token(dense(D, "out"), h)
  x = jnp.ones((B, T, D))
  model = Mlp()
  v = model.init(jax.random.key(0), x)
  hlo = jax.jit(jax.grad(_loss(model))).lower(v, x).compile().as_text()
  return len(re.findall(r"dot\([^)]*\), lhs_contracting_dims=\{0\}", hlo))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU lowering decision")
def test_kernel_gradients_are_plain_matmuls_on_cpu():
  # If XLA:CPU stops taking the slow form for x.T @ g, token_dot_general may no longer
  # be needed: re-measure the GPICL step (launch.bench) before removing it.
  assert _transposed_operand_dots(jax.lax.dot_general) > 0, "XLA:CPU changed: re-measure"
  assert _transposed_operand_dots(layers.token_dot_general) == 0
