"""Learned-algorithm baselines for GPICL: online SGD (Adam) on a small MLP, and MAML.

Both follow the GPICL learner interface (`logits = learner.apply(variables, x, y)`,
logits[:, t] depends only on x[:, :t+1] and y[:, :t]; `state_size(seq_len)`).

Inner loop (one sequence, as in the paper's released `SGD` model): the learner
is an MLP dx -> hidden (ReLU) -> C. Starting from θ_0 it walks the sequence once;
at position t it first predicts the label of x_t with θ_t, then takes ONE Adam step on the
cross-entropy of the single example (x_t, y_t):
  logits_t = f(θ_t, x_t);  θ_{t+1} = Adam(θ_t, ∇ CE(f(θ_t, x_t), y_t)).
So the prediction at t uses θ after t updates, one per example seen (batch size
1, each example used once). We chose this over "k steps on all examples seen so
far" because it is the paper's learner, costs O(L) rather than O(L·k·t), and is
exactly causal by construction. Adam is written by hand (bias-corrected, ε
outside the square root, like `optax.adam`) and is differentiable end to end.

* `SGDLearner`: θ_0 is not learned. By default it is a fixed draw from the
  init distribution (`init_seed`); if an rng stream named "inner_init" is given
  to `apply`, every sequence gets its own fresh θ_0 (the released code's choice).
  It has no parameters: `init` returns an empty variable dict.
* `MAML`: θ_0 is the module's Flax parameters (meta-learned); meta-gradients
  flow through the whole inner loop, Adam's normalisation included (full
  second order, no first-order approximation).
"""
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import LEARNERS

_INNER_AXES = {"w1": ("input", "mlp"), "b1": ("mlp",), "w2": ("mlp", "classes"),
               "b2": ("classes",)}


def inner_mlp_shapes(input_dim: int, hidden: int, num_classes: int) -> dict[str, tuple[int, ...]]:
  return {"w1": (input_dim, hidden), "b1": (hidden,), "w2": (hidden, num_classes),
          "b2": (num_classes,)}


def inner_mlp_num_params(input_dim: int, hidden: int, num_classes: int) -> int:
  """(dx + 1) hidden + (hidden + 1) C."""
  return (input_dim + 1) * hidden + (hidden + 1) * num_classes


def _inner_init_fn(name: str):
  return nn.initializers.lecun_normal() if name.startswith("w") else nn.initializers.zeros


def inner_mlp_init(key: jax.Array, input_dim: int, hidden: int, num_classes: int):
  """θ_0 drawn like `nn.Dense` (LeCun-normal kernels, zero biases)."""
  shapes = inner_mlp_shapes(input_dim, hidden, num_classes)
  keys = jax.random.split(key, len(shapes))
  return {name: _inner_init_fn(name)(k, shape, jnp.float32)
          for k, (name, shape) in zip(keys, shapes.items())}


def inner_mlp_apply(params, x: jax.Array) -> jax.Array:
  hid = jax.nn.relu(x @ params["w1"] + params["b1"])
  return hid @ params["w2"] + params["b2"]


def inner_loss(params, x: jax.Array, y: jax.Array):
  """Cross-entropy of one example (integer label), or half its squared error (real
  target, one output); returns (loss, logits)."""
  logits = inner_mlp_apply(params, x)
  if jnp.issubdtype(y.dtype, jnp.floating):
    return 0.5 * jnp.square(logits[0] - y), logits
  return -jax.nn.log_softmax(logits)[y], logits


class AdamState(NamedTuple):
  count: jax.Array  # Number of steps taken.
  mu: dict
  nu: dict


def adam_init(params) -> AdamState:
  zeros = jax.tree.map(jnp.zeros_like, params)
  return AdamState(jnp.zeros((), jnp.int32), zeros, zeros)


def _safe_sqrt(v: jax.Array) -> jax.Array:
  # sqrt has an infinite derivative at 0, and Adam's ν is exactly 0 wherever a
  # gradient is exactly 0 (dead ReLU units): 0 · inf would put NaNs in MAML's
  # meta-gradient. This gives the same value with a zero derivative at 0.
  positive = v > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1.0)), 0.0)


def adam_update(grads, state: AdamState, params, *, learning_rate: float, b1: float = 0.9,
                b2: float = 0.999, eps: float = 1e-8):
  """One Adam step (Kingma & Ba; same arithmetic as `optax.adam`). Returns (params, state)."""
  count = state.count + 1
  mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
  nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
  c1 = 1 - b1 ** count.astype(jnp.float32)
  c2 = 1 - b2 ** count.astype(jnp.float32)
  new_params = jax.tree.map(
      lambda p, m, v: p - learning_rate * (m / c1) / (_safe_sqrt(v / c2) + eps), params, mu, nu)
  return new_params, AdamState(count, mu, nu)


def online_adam_logits(params0, x: jax.Array, y: jax.Array, *, learning_rate: float,
                       b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                       remat_chunk: int = 0) -> jax.Array:
  """One sequence: x [L, dx], y [L] -> logits [L, C]; logits[t] = f(θ_t, x_t).

  `remat_chunk` = k > 0 bounds the memory of the meta-gradient: reverse mode
  through the scan stores the carry (θ and both Adam moments, 3 P numbers) at
  every position; with k it stores it every k positions and recomputes the k
  steps of one chunk during the backward pass (about L/k + k carries instead of
  L, for one extra forward pass). The values are the same.
  """
  grad_fn = jax.grad(inner_loss, has_aux=True)

  def step(carry, xy):
    params, opt_state = carry
    grads, logits = grad_fn(params, *xy)
    params, opt_state = adam_update(grads, opt_state, params, learning_rate=learning_rate,
                                    b1=b1, b2=b2, eps=eps)
    return (params, opt_state), logits

  carry = (params0, adam_init(params0))
  length = x.shape[0]
  if remat_chunk <= 0 or remat_chunk >= length:
    return jax.lax.scan(step, carry, (x, y))[1]
  # Pad the end to whole chunks: padded steps come after every real prediction,
  # so they cannot change it, and their outputs are dropped.
  num_chunks = -(-length // remat_chunk)
  pad = num_chunks * remat_chunk - length
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_chunks, remat_chunk, -1)
  ys = jnp.pad(y, (0, pad)).reshape(num_chunks, remat_chunk)

  @jax.checkpoint
  def chunk(carry, xy):
    return jax.lax.scan(step, carry, xy)

  logits = jax.lax.scan(chunk, carry, (xs, ys))[1]
  return logits.reshape(num_chunks * remat_chunk, -1)[:length]


_INNER_SIZES = {"tiny": dict(hidden_size=16), "small": dict(hidden_size=128),
                "paper": dict(hidden_size=128)}


@LEARNERS.register("sgd", needs={"input_dim": "input_dim"}, sizes=_INNER_SIZES)
class SGDLearner(nn.Module):
  """Online Adam on an MLP (hidden `hidden_size`, lr `learning_rate`); θ_0 not learned.

  Parameters: none (MAML: (dx + 1) H + (H + 1) C, the inner MLP's θ_0).
  State size: 3 P with P = (dx + 1) H + (H + 1) C — θ_t and Adam's two moments
  are everything carried from one example to the next (needs `input_dim`).
  """
  num_classes: int
  input_dim: int = 0  # Only needed for `state_size`; checked against x when set.
  hidden_size: int = 128
  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  init_seed: int = 0
  remat_chunk: int = 0  # > 0: checkpoint the inner loop every k examples (see online_adam_logits).
  meta_learn_init: bool = False

  def state_size(self, seq_len: int) -> int:
    del seq_len
    if self.input_dim <= 0:
      raise ValueError(f"{type(self).__name__}.state_size needs input_dim (got {self.input_dim})")
    return 3 * inner_mlp_num_params(self.input_dim, self.hidden_size, self.num_classes)

  def _initial_params(self, batch: int, input_dim: int):
    """θ_0 and whether it has a leading batch axis."""
    shapes = inner_mlp_shapes(input_dim, self.hidden_size, self.num_classes)
    if self.meta_learn_init:
      return {name: layers.logical_param(self, name, _inner_init_fn(name), shape,
                                         _INNER_AXES[name])
              for name, shape in shapes.items()}, False
    init = lambda k: inner_mlp_init(k, input_dim, self.hidden_size, self.num_classes)
    if self.has_rng("inner_init"):
      return jax.vmap(init)(jax.random.split(self.make_rng("inner_init"), batch)), True
    return init(jax.random.key(self.init_seed)), False

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    batch, _, input_dim = x.shape
    if self.input_dim and input_dim != self.input_dim:
      raise ValueError(f"{type(self).__name__}: x has {input_dim} features, input_dim={self.input_dim}")
    params0, batched = self._initial_params(batch, input_dim)
    run = lambda p, xs, ys: online_adam_logits(
        p, xs, ys, learning_rate=self.learning_rate, b1=self.b1, b2=self.b2, eps=self.eps,
        remat_chunk=self.remat_chunk)
    y = y if jnp.issubdtype(y.dtype, jnp.floating) else y.astype(jnp.int32)  # Regression: values.
    return jax.vmap(run, in_axes=(0 if batched else None, 0, 0))(params0, x, y)


@LEARNERS.register("maml", needs={"input_dim": "input_dim"}, sizes=_INNER_SIZES)
class MAML(SGDLearner):
  """The `SGDLearner` whose initialisation θ_0 is meta-learned (Flax params w1, b1, w2, b2)."""
  meta_learn_init: bool = True
