"""Black-box recurrent learners for GPICL: LSTM, outer-product LSTM, context-free MLP.

All follow the GPICL learner interface:

  logits = learner.apply(variables, x, y)   # x [B, L, dx] float, y [B, L] int
  logits[:, t] predicts y[:, t] from x[:, :t+1] and y[:, :t] only.
  learner.state_size(seq_len) -> accessible state size (the paper's x-axis).

The recurrent learners read the paper's tokens by default (`layout="paper"`,
`layers.paper_tokens`): token t = concat(x_t, onehot(y_{t-1})), zeros for the label
at t = 0; the output at t predicts y_t. `layout="query"` reads the transformer's
query layout interleaved (`layers.interleaved_tokens`: q_0, c_0, q_1, c_1, ...,
twice the steps, outputs read at the queries), where an input and its label arrive
in one token; state size and parameter count are the same apart from one more
input feature. As in the released code (`learned_optimization/research/
data_driven`), tokens first pass a 2-layer ReLU MLP of width `embed_dim`
(default: the hidden size) and the recurrent output is read out by one linear
layer to the classes.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import LEARNERS

def _kernel_init(num_in_axes: int = 1):
  """Truncated normal with variance 1 / fan_in, fan_in = product of the leading `num_in_axes` dims.

  Same scale as `lecun_normal` for kernels whose output side has several axes
  (gate, head, unit).
  """
  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for d in shape[:num_in_axes]:
      fan_in *= d
    std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978  # Std of N(0,1) truncated to [-2, 2].
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
  return init


class TokenMLP(nn.Module):
  """2-layer ReLU MLP on the tokens: [..., d_in] -> [..., width]."""
  width: int

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    h = nn.relu(layers.dense(self.width, ("input", "mlp"), name="in")(tokens))
    return nn.relu(layers.dense(self.width, ("mlp", "embed"), name="out")(h))


def _tokens(layout: str, x: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  if layout == "paper":
    return layers.paper_tokens(x, y, num_classes)
  if layout == "query":
    return layers.interleaved_tokens(x, y, num_classes)
  raise ValueError(f"unknown layout {layout!r}; use 'paper' or 'query'")


def _query_outputs(layout: str, hs: jax.Array) -> jax.Array:
  """The outputs that predict y_t: every step (paper), the query steps q_t (query)."""
  return hs[:, 0::2] if layout == "query" else hs


def _time_major_scan(step, carry, xs):
  """Scans `step` over axis 1 of every leaf of `xs`; returns outputs with time on axis 1."""
  xs = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), xs)
  _, ys = jax.lax.scan(step, carry, xs)
  return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), ys)


@LEARNERS.register("lstm", sizes={"tiny": dict(hidden_size=16), "small": dict(hidden_size=128),
                                  "paper": dict(hidden_size=256)})
class LSTM(nn.Module):
  """LSTM with hidden size h on the paper's tokens.

  Cell (gates i, f, g, o from x_t and h_{t-1}; forget bias b_f = `forget_bias`, +1 as
  in Sonnet by default):
    c_t = sigmoid(f + b_f) * c_{t-1} + sigmoid(i) * tanh(g);  h_t = sigmoid(o) * tanh(c_t).
  At init the cell keeps sigmoid(b_f) of itself per step: 0.73 for b_f = 1, so an
  example 40 steps back weighs 0.73^40 ≈ 4e-6 and gradients toward remembering the
  context are tiny; b_f = 3 (0.95 per step) keeps it at 0.13.

  Parameters (e = embed_dim, D = dx + C, + 1 in the query layout):
    (D + 1) e + (e + 1) e  [token MLP]  +  4 h (e + h + 1)  [cell]  +  (h + 1) C  [readout].
  State size (paper): h. (The carried state is (h_t, c_t), 2h numbers.)
  """
  num_classes: int
  hidden_size: int = 256
  embed_dim: int | None = None
  layout: str = "paper"
  forget_bias: float = 1.0

  def state_size(self, seq_len: int) -> int:
    del seq_len
    return self.hidden_size

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    h, e = self.hidden_size, self.embed_dim or self.hidden_size
    z = TokenMLP(e, name="token_mlp")(_tokens(self.layout, x, y, self.num_classes))
    w_x = layers.logical_param(self, "w_x", _kernel_init(), (e, 4, h), ("embed", None, "mlp"))
    w_h = layers.logical_param(self, "w_h", _kernel_init(), (h, 4, h), ("state", None, "mlp"))
    b = layers.logical_param(self, "b", nn.initializers.zeros, (4, h), (None, "mlp"))
    gx = layers.token_matmul(z, w_x) + b  # Input part of all gates, outside the scan.

    def step(carry, gx_t):
      h_prev, c_prev = carry
      g = gx_t + jnp.einsum("bs,sgk->bgk", h_prev, w_h)
      i, f, c_in, o = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
      c = nn.sigmoid(f + self.forget_bias) * c_prev + nn.sigmoid(i) * jnp.tanh(c_in)
      h_new = nn.sigmoid(o) * jnp.tanh(c)
      return (h_new, c), h_new

    zeros = jnp.zeros((x.shape[0], h), gx.dtype)
    hs = _query_outputs(self.layout, _time_major_scan(step, (zeros, zeros), gx))
    return layers.dense(self.num_classes, ("mlp", "classes"), name="readout")(hs)


@LEARNERS.register("outer_lstm", sizes={"tiny": dict(hidden_size=8, num_heads=1),
                                        "small": dict(hidden_size=16, num_heads=2),
                                        "paper": dict(hidden_size=32, num_heads=8)})
class OuterProductLSTM(nn.Module):
  """LSTM whose cell is a matrix per head: state heads x h x h ("outer-product LSTM").

  The idea (Kirsch et al. 2022, GPICL §4.4 and the released `OuterLSTM`): keep the
  LSTM's gated, additive cell update but make the cell a matrix C ∈ R^{h×h} per
  head, written by rank-1 (outer-product) gates and read by a query vector, like a
  fast-weight memory. Per head, from z_t = [x_t, h_{t-1}] one linear map produces
  row factors a_i, a_g, a_f, column factors b_i, b_g, b_f, a query q and an output
  gate o (8 vectors of size h):
    I = s tanh(a_i) ⊗ tanh(b_i),  G = s tanh(a_g) ⊗ tanh(b_g),  F = s tanh(a_f) ⊗ tanh(b_f)
    C_t = sigmoid(F + b_f) ⊙ C_{t-1} + sigmoid(I) ⊙ G          (h × h, elementwise gates)
    h_t = sigmoid(o) ⊙ tanh(C_tᵀ q)                              (size h; heads concatenated)
  with s = softplus(key_scale) a learned scalar (init softplus(0)) and the forget
  bias b_f = `forget_bias` (as in `LSTM`). The linear map
  emits only vectors (8·n·h outputs for n heads), never an h×h matrix, so the
  cell has twice the parameters of an LSTM with n·h units, 8 n h (e + n h + 1)
  vs 4 n h (e + n h + 1), while its state is n·h², h/2 times more per parameter. Parameters grow
  linearly in h at a fixed input width e (quadratically only through the n h
  recurrent input, as in any LSTM); state grows as h². State size and parameter
  count therefore vary separately, which the paper's state-size experiment needs.

  Parameters (e = embed_dim, D = dx + C (+ 1 in the query layout), n = heads):
    (D + 1) e + (e + 1) e  [token MLP]  +  8 n h (e + n h + 1) + 1  [cell]  +  (n h + 1) C  [readout].
  State size (paper): n h². (The carried state also holds h_t, n h numbers.)
  """
  num_classes: int
  hidden_size: int = 32
  num_heads: int = 1
  embed_dim: int | None = None
  layout: str = "paper"
  forget_bias: float = 1.0

  def state_size(self, seq_len: int) -> int:
    del seq_len
    return self.num_heads * self.hidden_size ** 2

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    n, h = self.num_heads, self.hidden_size
    e = self.embed_dim or h
    batch = x.shape[0]
    z = TokenMLP(e, name="token_mlp")(_tokens(self.layout, x, y, self.num_classes))
    w_x = layers.logical_param(self, "w_x", _kernel_init(), (e, n, 8, h),
                               ("embed", "heads", None, "mlp"))
    w_h = layers.logical_param(self, "w_h", _kernel_init(), (n * h, n, 8, h),
                               ("state", "heads", None, "mlp"))
    b = layers.logical_param(self, "b", nn.initializers.zeros, (n, 8, h), ("heads", None, "mlp"))
    key_scale = nn.softplus(self.param("key_scale", nn.initializers.zeros, ()))
    gx = layers.token_matmul(z, w_x) + b

    def step(carry, gx_t):
      h_prev, c_prev = carry  # [B, n h], [B, n, h, h]
      g = gx_t + jnp.einsum("bs,snfk->bnfk", h_prev, w_h)  # [B, n, 8, h]
      rows = jnp.tanh(g[:, :, 0:3]) * key_scale
      cols = jnp.tanh(g[:, :, 3:6])
      q, o = g[:, :, 6], g[:, :, 7]
      gate_i, gate_g, gate_f = jnp.moveaxis(jnp.einsum("bnfi,bnfj->bnfij", rows, cols), 2, 0)
      c = nn.sigmoid(gate_f + self.forget_bias) * c_prev + nn.sigmoid(gate_i) * gate_g
      read = jnp.einsum("bnij,bni->bnj", c, q)
      h_new = nn.sigmoid(o) * jnp.tanh(read)
      return (h_new.reshape(batch, n * h), c), h_new

    carry = (jnp.zeros((batch, n * h), gx.dtype), jnp.zeros((batch, n, h, h), gx.dtype))
    hs = _query_outputs(self.layout, _time_major_scan(step, carry, gx))  # [B, L, n, h]
    w_out = layers.logical_param(self, "w_out", _kernel_init(num_in_axes=2),
                                 (n, h, self.num_classes), ("heads", "mlp", "classes"))
    b_out = layers.logical_param(self, "b_out", nn.initializers.zeros, (self.num_classes,),
                                 ("classes",))
    return layers.token_matmul(hs, w_out, contract=2) + b_out


@LEARNERS.register("mlp", sizes={"tiny": dict(hidden_size=16), "small": dict(hidden_size=128),
                                 "paper": dict(hidden_size=256)})
class ContextFreeMLP(nn.Module):
  """MLP on x_t alone (no context): it cannot learn in context, only memorise.

  Parameters: (dx + 1) m + (m + 1) m + (m + 1) C for hidden width m. State size: 0.
  """
  num_classes: int
  hidden_size: int = 256

  def state_size(self, seq_len: int) -> int:
    del seq_len
    return 0

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    del y  # No context by construction.
    m = self.hidden_size
    hid = nn.relu(layers.dense(m, ("input", "mlp"), name="in")(x))
    hid = nn.relu(layers.dense(m, ("mlp", "embed"), name="hidden")(hid))
    return layers.dense(self.num_classes, ("embed", "classes"), name="readout")(hid)
