"""GPICL black-box and learned-algorithm learners: shapes, causality, gradients,
state-size and parameter-count formulas, and parity of the SGD/MAML inner loop
with a hand-written NumPy loop."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import layers
from models import learned_algorithms as la
from models import recurrent
from models.registry import LEARNERS as LEARNER_REGISTRY
from research.gpicl import learners

B, L, DX, C = 2, 6, 5, 3


def _variants():
  """Every registered learner (its "tiny" size), and each layout it offers: a learner
  added as one file under models/ is tested here without editing this file."""
  out = {}
  for name in LEARNER_REGISTRY.names():
    fields = learners.config_defaults(name)
    # A large inner learning rate so that one example visibly moves the next prediction.
    extra = {"learning_rate": 0.1} if "learning_rate" in fields else {}
    layouts = ("paper", "query") if "layout" in fields else (None,)
    for layout in layouts:
      cfg = learners.learner_config(name, "tiny", **extra, **({"layout": layout} if layout else {}))
      key = name if layout in (None, fields.get("layout")) else f"{name}_{layout}"
      out[key] = (lambda cfg=cfg: learners.make_learner(cfg, num_classes=C, seq_len=16,
                                                         input_dim=DX))
  return out


LEARNERS = _variants()
# Learners without state (state_size 0) cannot carry a label to the next prediction.
CONTEXT_LEARNERS = [n for n, make in LEARNERS.items() if make().state_size(L) != 0 or
                    n.startswith(("sgd", "maml"))]


def _batch(seed=0, batch=B, length=L):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (batch, length, DX), jnp.float32)
  y = jax.random.randint(ky, (batch, length), 0, C, jnp.int32)
  return x, y


def _init(name):
  model = LEARNERS[name]()
  x, y = _batch()
  variables = jax.jit(model.init)(jax.random.key(1), x, y)
  return model, variables


def _num_params(model):
  shapes = jax.eval_shape(model.init, jax.random.key(0), *_batch())
  return layers.param_count(shapes)


def _loss(model, variables, x, y):
  logits = model.apply(variables, x, y)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_paper_tokens_layout():
  x = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  y = jnp.array([[2, 0, 1], [1, 1, 0]], jnp.int32)
  tokens = layers.paper_tokens(x, y, 3)
  assert tokens.shape == (2, 3, 5)
  np.testing.assert_array_equal(tokens[..., :2], x)
  np.testing.assert_array_equal(tokens[:, 0, 2:], 0.0)  # No label before the first example.
  np.testing.assert_array_equal(tokens[0, 1, 2:], [0, 0, 1])  # y_0 = 2 arrives with x_1.
  np.testing.assert_array_equal(tokens[0, 2, 2:], [1, 0, 0])
  np.testing.assert_array_equal(tokens[1, 2, 2:], [0, 1, 0])


def test_interleaved_tokens_layout():
  """q_0, c_0, q_1, c_1, ...: a query carries x_t and the flag, its context x_t and y_t."""
  x = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  y = jnp.array([[2, 0, 1], [1, 1, 0]], jnp.int32)
  tokens = layers.interleaved_tokens(x, y, 3)
  assert tokens.shape == (2, 6, 6)
  np.testing.assert_array_equal(tokens[:, 0::2, :2], x)
  np.testing.assert_array_equal(tokens[:, 1::2, :2], x)
  np.testing.assert_array_equal(tokens[:, 0::2, 2:], np.tile([0, 0, 0, 1], (2, 3, 1)))
  np.testing.assert_array_equal(tokens[0, 1::2, 2:5], np.eye(3)[[2, 0, 1]])
  np.testing.assert_array_equal(tokens[:, 1::2, 5], 0.0)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_shapes(name):
  model, variables = _init(name)
  x, y = _batch(seed=3, batch=3, length=L + 2)  # Other batch and length than at init.
  logits = jax.jit(model.apply)(variables, x, y)
  assert logits.shape == (3, L + 2, C)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_causality(name):
  """logits[:, t] never depends on x[:, t+1:] or y[:, t:]; it does depend on x_t (and y_{t-1})."""
  model, variables = _init(name)
  apply = jax.jit(model.apply)
  x, y = _batch()
  base = apply(variables, x, y)
  x_noise, _ = _batch(seed=7)
  for t in range(L):
    x2 = x.at[:, t + 1:].set(x_noise[:, t + 1:])
    y2 = y.at[:, t:].set((y[:, t:] + 1) % C)
    out = apply(variables, x2, y2)
    np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6, err_msg=f"t={t}")
    # The query itself must matter: changing x_t changes logits[:, t].
    out = apply(variables, x.at[:, t].set(x_noise[:, t]), y)
    assert np.abs(out[:, t] - base[:, t]).max() > 1e-4, f"x_{t} ignored"
  if name in CONTEXT_LEARNERS:
    # The previous label must reach the next prediction (catches a label shift of 2 or 0).
    for t in range(1, L):
      out = apply(variables, x, y.at[:, t - 1].set((y[:, t - 1] + 1) % C))
      assert np.abs(out[:, t] - base[:, t]).max() > 1e-5, f"y_{t - 1} does not reach logits[:, {t}]"


@pytest.mark.parametrize("name", [n for n in sorted(LEARNERS) if not n.startswith("sgd")])
def test_gradients_reach_every_parameter(name):
  model, variables = _init(name)
  x, y = _batch(seed=4)
  grads = jax.jit(jax.grad(lambda v: _loss(model, v, x, y)))(variables)
  flat = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(grads))
  assert flat
  for path, g in flat:
    assert np.all(np.isfinite(g)), jax.tree_util.keystr(path)
    assert np.abs(g).max() > 0, f"zero gradient for {jax.tree_util.keystr(path)}"


def test_sgd_learner_has_no_parameters():
  _, variables = _init("sgd")
  assert layers.param_count(variables) == 0


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_params_carry_logical_axes(name):
  _, variables = _init(name)
  leaves = jax.tree_util.tree_leaves_with_path(
      variables, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  for path, leaf in leaves:
    if isinstance(leaf, nn.Partitioned):
      assert len(leaf.names) == leaf.value.ndim, jax.tree_util.keystr(path)
    else:  # Only scalars may go without names.
      assert jnp.ndim(leaf) == 0, f"{jax.tree_util.keystr(path)} has no logical axes"


def test_state_size_and_param_count_formulas():
  d_tok = DX + C
  # LSTM: h; (D+1)e + (e+1)e + 4h(e+h+1) + (h+1)C with e = h by default.
  for h, e in [(8, None), (6, 10)]:
    model = recurrent.LSTM(C, hidden_size=h, embed_dim=e)
    e = e or h
    assert model.state_size(100) == h
    assert _num_params(model) == (
        (d_tok + 1) * e + (e + 1) * e + 4 * h * (e + h + 1) + (h + 1) * C)
  # Outer-product LSTM: n h^2; (D+1)e + (e+1)e + 8nh(e+nh+1) + 1 + (nh+1)C.
  for n, h, e in [(1, 4, None), (2, 4, None), (3, 5, 7)]:
    model = recurrent.OuterProductLSTM(C, hidden_size=h, num_heads=n, embed_dim=e)
    e = e or h
    assert model.state_size(100) == n * h * h
    assert _num_params(model) == (
        (d_tok + 1) * e + (e + 1) * e + 8 * n * h * (e + n * h + 1) + 1 + (n * h + 1) * C)
  # The query layout adds one input feature (the query flag) and nothing else.
  for cls, kw in [(recurrent.LSTM, dict(hidden_size=8)),
                  (recurrent.OuterProductLSTM, dict(hidden_size=4, num_heads=2))]:
    paper, query = cls(C, **kw), cls(C, layout="query", **kw)
    assert query.state_size(100) == paper.state_size(100)
    # One more input row in the token MLP's first layer, of width e = hidden_size.
    assert _num_params(query) == _num_params(paper) + kw["hidden_size"]
  # Context-free MLP: no state.
  model = recurrent.ContextFreeMLP(C, hidden_size=8)
  assert model.state_size(100) == 0
  assert _num_params(model) == (
      (DX + 1) * 8 + 9 * 8 + 9 * C)
  # SGD / MAML: θ plus Adam's two moments.
  p_inner = (DX + 1) * 8 + (8 + 1) * C
  assert la.inner_mlp_num_params(DX, 8, C) == p_inner
  for cls in (la.SGDLearner, la.MAML):
    assert cls(C, input_dim=DX, hidden_size=8).state_size(100) == 3 * p_inner
  assert _num_params(la.MAML(C, input_dim=DX, hidden_size=8)) == p_inner
  with pytest.raises(ValueError, match="input_dim"):
    la.SGDLearner(C).state_size(10)


# ---------------------------------------------------------------------------
# Inner loop parity with a hand-written NumPy loop.
# ---------------------------------------------------------------------------

def _numpy_online_adam(params0, x, y, lr, b1=0.9, b2=0.999, eps=1e-8):
  """Reference: predict x_t with θ_t, then one Adam step on (x_t, y_t); float64, manual backprop."""
  p = {k: np.asarray(v, np.float64) for k, v in params0.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(v) for k, v in p.items()}
  out = []
  for t in range(x.shape[0]):
    xt = np.asarray(x[t], np.float64)
    pre = xt @ p["w1"] + p["b1"]
    hid = np.maximum(pre, 0.0)
    logits = hid @ p["w2"] + p["b2"]
    out.append(logits)
    prob = np.exp(logits - logits.max())
    prob /= prob.sum()
    dlogits = prob - np.eye(len(prob))[int(y[t])]
    dpre = (p["w2"] @ dlogits) * (pre > 0)
    grads = {"w1": np.outer(xt, dpre), "b1": dpre, "w2": np.outer(hid, dlogits), "b2": dlogits}
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * grads[k]
      v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
      m_hat = m[k] / (1 - b1 ** (t + 1))
      v_hat = v[k] / (1 - b2 ** (t + 1))
      p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
  return np.stack(out)


def test_online_adam_matches_numpy_loop():
  x, y = _batch(seed=5, batch=1, length=8)
  params0 = la.inner_mlp_init(jax.random.key(2), DX, 8, C)
  for lr in [1e-3, 0.05]:
    got = jax.jit(lambda p: la.online_adam_logits(p, x[0], y[0], learning_rate=lr))(params0)
    want = _numpy_online_adam(params0, x[0], y[0], lr)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Later predictions must actually differ from θ_0's (the loop does something).
    static = la.inner_mlp_apply(params0, x[0])
    assert np.abs(np.asarray(got[1:]) - np.asarray(static[1:])).max() > 1e-4
  np.testing.assert_allclose(got[0], static[0], rtol=1e-6)  # Position 0 uses θ_0.


def test_adam_update_matches_optax():
  params = la.inner_mlp_init(jax.random.key(3), DX, 4, C)
  grads = jax.tree.map(lambda p: jnp.sin(jnp.arange(p.size, dtype=jnp.float32) + 1.).reshape(p.shape), params)
  opt = optax.adam(0.01)
  ref_state = opt.init(params)
  state = la.adam_init(params)
  ours = ref = params
  for _ in range(3):
    ours, state = la.adam_update(grads, state, ours, learning_rate=0.01)
    updates, ref_state = opt.update(grads, ref_state, ref)
    ref = optax.apply_updates(ref, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


def test_sgd_learner_matches_inner_loop():
  model, variables = _init("sgd")
  x, y = _batch(seed=6)
  got = jax.jit(model.apply)(variables, x, y)
  params0 = la.inner_mlp_init(jax.random.key(model.init_seed), DX, model.hidden_size, C)
  for i in range(B):
    # float32 against a float64 reference: 6 Adam steps through 16 hidden units.
    np.testing.assert_allclose(got[i], _numpy_online_adam(params0, x[i], y[i], 0.1),
                               rtol=1e-4, atol=5e-5)


def test_sgd_learner_fresh_init_per_sequence():
  model, variables = _init("sgd")
  x, y = _batch(seed=6)
  x = jnp.stack([x[0], x[0]])
  y = jnp.stack([y[0], y[0]])
  fixed = model.apply(variables, x, y)
  np.testing.assert_allclose(fixed[0], fixed[1], atol=1e-7)
  fresh = model.apply(variables, x, y, rngs={"inner_init": jax.random.key(9)})
  assert np.abs(fresh[0] - fresh[1]).max() > 1e-3


def test_maml_matches_inner_loop_from_its_params():
  model, variables = _init("maml")
  x, y = _batch(seed=8)
  got = jax.jit(model.apply)(variables, x, y)
  params0 = nn.meta.unbox(variables)["params"]
  for i in range(B):
    # float32 against a float64 reference: 6 Adam steps through 16 hidden units.
    np.testing.assert_allclose(got[i], _numpy_online_adam(params0, x[i], y[i], 0.1),
                               rtol=1e-4, atol=5e-5)


def test_maml_remat_chunks_match():
  """Checkpointing the inner loop in chunks (L = 6 not a multiple of 4) changes neither values nor meta-gradients."""
  model, variables = _init("maml")
  chunked = la.MAML(C, input_dim=DX, hidden_size=model.hidden_size, learning_rate=0.1,
                    remat_chunk=4)
  x, y = _batch(seed=9)
  params = nn.meta.unbox(variables)["params"]
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(lambda p: _loss(model, {"params": p}, x, y)))(params)
  loss, grads = jax.jit(jax.value_and_grad(lambda p: _loss(chunked, {"params": p}, x, y)))(params)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)


def test_maml_meta_gradient_finite_with_dead_units():
  """Dead ReLU units give exactly-zero inner gradients; the meta-gradient must stay finite."""
  model, variables = _init("maml")
  params = nn.meta.unbox(variables)["params"]
  half = model.hidden_size // 2
  params = {**params, "b1": params["b1"].at[:half].set(-100.0)}  # Half the units never fire.
  x, y = _batch(seed=2)
  grads = jax.grad(lambda p: _loss(model, {"params": p}, x, y))(params)
  for k, g in grads.items():
    assert np.all(np.isfinite(g)), k
  assert np.abs(grads["w2"]).max() > 0


def _toy_tasks(key, num_tasks, length=8, dx=DX):
  """Binary tasks y = [w·x > 0] with w = w0 + 0.3 noise: a shared structure MAML can learn."""
  w0 = jax.random.normal(jax.random.key(123), (dx,))
  kw, kx = jax.random.split(key)
  w = w0 + 0.3 * jax.random.normal(kw, (num_tasks, dx))
  x = jax.random.normal(kx, (num_tasks, length, dx))
  y = (jnp.einsum("bld,bd->bl", x, w) > 0).astype(jnp.int32)
  return x, y


def test_maml_meta_training_reduces_loss():
  model = la.MAML(2, input_dim=DX, hidden_size=16, learning_rate=1e-3)
  x_eval, y_eval = _toy_tasks(jax.random.key(0), 64)
  params = nn.meta.unbox(model.init(jax.random.key(1), x_eval, y_eval))["params"]
  loss_fn = lambda p, x, y: _loss(model, {"params": p}, x, y)
  opt = optax.adam(3e-2)

  @jax.jit
  def meta_step(params, opt_state, key):
    x, y = _toy_tasks(key, 16)
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads

  before = float(jax.jit(loss_fn)(params, x_eval, y_eval))
  opt_state = opt.init(params)
  for step in range(25):
    params, opt_state, _, grads = meta_step(params, opt_state, jax.random.key(100 + step))
    if step == 0:
      assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  after = float(jax.jit(loss_fn)(params, x_eval, y_eval))
  print(f"MAML toy meta-training: eval loss {before:.4f} -> {after:.4f}")
  assert after < before - 0.1, (before, after)


def test_every_learner_has_sizes_and_a_config_that_builds():
  """One list (the registry): each learner declares every size, its config builds the
  module, and the state size it reports is a non-negative integer."""
  assert {"transformer", "lstm", "outer_lstm", "mlp", "sgd", "maml",
          "linear_transformer"} <= set(LEARNER_REGISTRY.names())
  for entry in LEARNER_REGISTRY.entries():
    assert set(entry.meta["sizes"]) == set(learners.SIZES), entry.name
    for size in learners.SIZES:
      model = learners.make_learner(learners.learner_config(entry.name, size), num_classes=C,
                                    seq_len=L, input_dim=DX)
      assert isinstance(model.state_size(L), int) and model.state_size(L) >= 0


def test_linear_attention_parallel_form_equals_its_recurrent_state():
  """The linear transformer's state is a fixed d_k × d_v memory per head: the
  step-by-step form from that state gives the parallel form's outputs."""
  from models import linear_transformer as lt
  q, k, v = (jax.random.normal(key, (2, 9, 3, 4)) for key in jax.random.split(jax.random.key(0), 3))
  np.testing.assert_allclose(lt.linear_attention(q, k, v), lt.recurrent_attention(q, k, v),
                             rtol=1e-5, atol=1e-6)
  model = lt.LinearTransformer(C, num_layers=2, num_heads=3, head_dim=4, d_model=12)
  assert model.state_size(10) == model.state_size(1000) == 2 * 3 * (4 * 4 + 4)
