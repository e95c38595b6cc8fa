"""Small shared layers and helpers for the sequence learners.

A plain module of small functions and modules; model files import from here.
"""
import contextvars
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

Initializer = Callable[..., jax.Array]

# (mesh, logical rules) while the trainer traces a step (research.sharding.activation_rules).
ACTIVATION_SHARDING: contextvars.ContextVar = contextvars.ContextVar("activation_sharding",
                                                                     default=None)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Shards activation `x` by logical axis names (one per dimension) under the
  trainer's rules, e.g. the MLP hidden units over "model" for tensor parallelism;
  a no-op outside a sharded trainer step."""
  ctx = ACTIVATION_SHARDING.get()
  if ctx is None:
    return x
  mesh, rules = ctx
  spec = nn.logical_to_mesh_axes(tuple(axes), rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))


def target_features(y: jax.Array, num_classes: int, dtype) -> jax.Array:
  """A target as the label part of a token: [B, L] -> [B, L, C].

  Integer `y` are class labels (one-hot over `num_classes`); floating `y` are
  regression values, entered as themselves (one feature: the learner then has
  `num_classes` = 1 output, the predicted value).
  """
  if jnp.issubdtype(y.dtype, jnp.floating):
    if num_classes != 1:
      raise ValueError(f"real-valued targets need num_classes=1 (one output), got {num_classes}")
    return y[..., None].astype(dtype)
  return jax.nn.one_hot(y, num_classes, dtype=dtype)


def paper_tokens(x: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  """GPICL token layout: token t = concat(x_t, onehot(y_{t-1})), zeros at t = 0.

  The label of example t is only revealed in token t + 1, so a causal model
  reading token t predicts y_t without seeing it.

  Args:
    x: [B, L, dx] inputs.
    y: [B, L] integer labels in [0, num_classes), or real values (num_classes = 1;
      `target_features`).
    num_classes: C.

  Returns:
    [B, L, dx + C] float tokens (dtype of x).
  """
  onehot = target_features(y, num_classes, x.dtype)
  prev = jnp.pad(onehot[:, :-1], ((0, 0), (1, 0), (0, 0)))
  return jnp.concatenate([x, prev], axis=-1)


def query_layout_tokens(x: jax.Array, y: jax.Array, num_classes: int):
  """The "query" layout's two tokens per example: (context, query), each [B, L, dx + C + 1].

  context c_t = x_t ⊕ onehot(y_t) ⊕ 0 (an example with its label);
  query   q_t = x_t ⊕ 0 ⊕ 1           (the same input, label unknown; predicts y_t).
  A real-valued target enters as itself (`target_features`).
  """
  b, length, _ = x.shape
  onehot = target_features(y, num_classes, x.dtype)
  ctx = jnp.concatenate([x, onehot, jnp.zeros((b, length, 1), x.dtype)], -1)
  qry = jnp.concatenate([x, jnp.zeros_like(onehot), jnp.ones((b, length, 1), x.dtype)], -1)
  return ctx, qry


def interleaved_tokens(x: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  """Query layout for recurrent learners: q_0, c_0, q_1, c_1, ... -> [B, 2L, dx + C + 1].

  The output read at q_t (even positions) predicts y_t from c_0..c_{t-1} and x_t; the
  label y_t only enters with c_t, after it. Unlike `paper_tokens`, each input arrives
  in the same token as its label, so storing an (input, label) pair needs no carrying
  of x_{t-1} to the next step.
  """
  ctx, qry = query_layout_tokens(x, y, num_classes)
  b, length, d = ctx.shape
  return jnp.stack([qry, ctx], axis=2).reshape(b, 2 * length, d)


# The one logit given to masked-out attention pairs in every model (finite, so a fully
# masked row, e.g. a padding query, stays uniform instead of NaN; representable in bf16).
MASK_VALUE = -1e30


def per_token(layer: Callable[[jax.Array], jax.Array], x: jax.Array, lead: int = 2) -> jax.Array:
  """`layer(x)` with x's `lead` leading dims (batch, position) flattened into one.

  Under autodiff a kernel's gradient then contracts one dim, [D, B·T]·[B·T, F];
  contracting batch and position as two dims, XLA:CPU writes a transposed copy of the
  output gradient and takes a slower kernel (the paper-size GPICL MLP's backward took
  1.8× as long; `tests/test_token_matmul.py` checks the HLO). With
  `dot_general=token_dot_general` that one-dim contraction also runs on the fast matmul."""
  y = layer(x.reshape((-1,) + x.shape[lead:]))
  return y.reshape(x.shape[:lead] + y.shape[1:])


@jax.custom_vjp
def _tokens_matmul_cpu(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [M, K] @ w [K, N] over M tokens, with a kernel gradient XLA:CPU runs fast."""
  return x @ w


def _tokens_matmul_cpu_fwd(x, w):
  return x @ w, (x, w)


def _tokens_matmul_cpu_bwd(res, g):
  x, w = res
  dx = g @ w.T
  if x.shape[0] % 2:
    return dx, x.T @ g
  if g.shape[1] < x.shape[1]:
    # Copy the narrower operand and write the kernel gradient transposed (then transpose
    # it back: K·N floats, not M·K). The paper-size MLP's second kernel gradient
    # (x [M, 1024], g [M, 256]), alone at 12 800 and 51 200 tokens: 194 instead of
    # 158-166 GFLOP/s (in-run peak ~200); the whole step 4-6 % shorter.
    return dx, jax.lax.optimization_barrier(_kernel_grad(g, x)).T
  return dx, _kernel_grad(x, g)


def _kernel_grad(a: jax.Array, b: jax.Array) -> jax.Array:
  """a^T·b [Ka, Kb], contracting the M tokens of a [M, Ka] and b [M, Kb] (M even).
  Written as a.T @ b, XLA:CPU folds the transpose into the dot and runs it outside
  YNNPACK, at 0.45-0.75 of the matmul peak for the paper-size GPICL layers; contracting
  two halves of the tokens, it writes `a` transposed once and runs YNNPACK's matmul
  (0.8-1.0, copy included). The barrier keeps that copy a plain transpose of the saved
  input: fused with its recomputation (a GELU), it took 4x as long."""
  m = a.shape[0]
  halves = lambda t: t.reshape(2, m // 2, t.shape[-1])
  a = jax.lax.optimization_barrier(a)
  return jax.lax.dot_general(halves(a), halves(b), (((0, 1), (0, 1)), ((), ())))


_tokens_matmul_cpu.defvjp(_tokens_matmul_cpu_fwd, _tokens_matmul_cpu_bwd)


def token_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers,
                      precision=None, preferred_element_type=None) -> jax.Array:
  """`lax.dot_general` for dense layers over tokens (`nn.DenseGeneral(dot_general=...)`):
  lhs [tokens, in...] contracted on its trailing dims with rhs [in..., out...]. On CPU
  one 2-D matmul whose kernel gradient takes XLA:CPU's fast matmul (`_tokens_matmul_cpu_bwd`:
  the paper-size GPICL step 2 % faster, then 4-6 % more with the narrower operand copied);
  any other contraction, precision or backend is `lax.dot_general` itself."""
  (lc, rc), (lb, rb) = dimension_numbers
  n = len(lc)
  if (lb or rb or precision is not None or preferred_element_type is not None
      or jax.default_backend() != "cpu" or lhs.ndim != n + 1
      or tuple(lc) != tuple(range(1, n + 1)) or tuple(rc) != tuple(range(n))):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
  return token_matmul(lhs, rhs, n, matmul=_tokens_matmul_cpu)


def token_matmul(x: jax.Array, w: jax.Array, contract: int = 1,
                 matmul: Callable[[jax.Array, jax.Array], jax.Array] = jnp.matmul) -> jax.Array:
  """x [..., *w.shape[:contract]] · w -> [..., *w.shape[contract:]]: a dense layer's
  matmul as one 2-D `matmul` over all tokens (why: `per_token`)."""
  k = math.prod(w.shape[:contract])
  y = matmul(x.reshape(-1, k), w.reshape(k, -1))
  return y.reshape(x.shape[:x.ndim - contract] + w.shape[contract:])


class Dense(nn.Dense):
  """`nn.Dense` over all tokens at once (`per_token`); same parameters and outputs."""

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return per_token(super().__call__, inputs, inputs.ndim - 1)


def dense(features: int, axes: Sequence[str | None], *, use_bias: bool = True,
          kernel_init: Initializer = nn.initializers.lecun_normal(),
          name: str | None = None) -> nn.Dense:
  """`Dense` whose kernel carries logical axes `axes` = (in, out) and bias (out,)."""
  return Dense(
      features, use_bias=use_bias, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, tuple(axes)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[-1],)))


def layer_norm(name: str | None = None) -> nn.LayerNorm:
  """`nn.LayerNorm` whose scale and bias carry the logical axis "embed"."""
  return nn.LayerNorm(
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


def logical_param(module: nn.Module, name: str, init: Initializer, shape: Sequence[int],
                  axes: Sequence[str | None]) -> jax.Array:
  """`module.param` with logical axis names (one per dimension of `shape`)."""
  if len(axes) != len(shape):
    raise ValueError(f"param {name!r}: {len(axes)} axis names for shape {tuple(shape)}")
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape))


def param_count(params: Any) -> int:
  """Number of scalars in a (possibly logically boxed) parameter pytree."""
  leaves = jax.tree.leaves(nn.meta.unbox(params))
  return int(sum(leaf.size for leaf in leaves))
