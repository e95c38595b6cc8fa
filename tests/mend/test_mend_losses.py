"""MEND's losses: gradient flow (distiller only), teacher without gradient, KL = 0 when
student and teacher see the same thing, and a hand computation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import distiller as distiller_lib
from models import llm
from research.mend import losses

V = 40


@pytest.fixture(scope="module")
def setup():
  lm_cfg = llm.LMConfig(arch="llama", vocab_size=V, d_model=16, num_layers=2, num_heads=2,
                        num_kv_heads=1, head_dim=8, mlp_dim=32, max_len=128)
  lm = llm.CausalLM(lm_cfg)
  lm_params = nn.unbox(lm.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32)))
  # Sharper next-token distributions than N(0, 0.02) gives (a near-uniform LM has KL ~ 0).
  lm_params["params"]["embed"] = lm_params["params"]["embed"] * 25.0
  d_cfg = lm_cfg.replace(d_model=8, head_dim=4, num_layers=1)
  dist = distiller_lib.Distiller(d_cfg, num_vectors=3, out_dim=16)
  d_params = nn.unbox(dist.init(jax.random.key(1), jnp.ones((1, 10), jnp.int32))["params"])
  rng = np.random.default_rng(0)
  batch = {
      "demo_ids": jnp.asarray(rng.integers(1, V, (2, 10)), jnp.int32),
      "demo_mask": jnp.asarray([[1] * 10, [1] * 6 + [0] * 4], jnp.int32),
      "query_ids": jnp.asarray(rng.integers(1, V, (2, 6)), jnp.int32),
      "query_mask": jnp.asarray([[1] * 6, [1] * 4 + [0] * 2], jnp.int32),
      "target_mask": jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], jnp.int32),
  }
  return lm, lm_params, dist, d_params, batch


def _loss(dp, lp, setup, **kw):
  lm, _, dist, _, batch = setup
  return losses.mend_loss(dist, dp, lm, lp, batch, **kw)[0]


def test_gradient_reaches_distiller_not_llm(setup):
  _, lp, _, dp, _ = setup
  g_d, g_l = jax.grad(_loss, argnums=(0, 1))(dp, lp, setup, ce_weight=1.0, kl_weight=1.0)
  norms = {jax.tree_util.keystr(k): float(jnp.abs(v).sum())
           for k, v in jax.tree_util.tree_leaves_with_path(g_d)}
  assert all(n > 0 for n in norms.values()), norms  # Placeholders, projection, LM.
  assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(g_l))


def test_teacher_has_no_gradient(setup):
  lm, lp, _, _, b = setup
  f = lambda p: losses.teacher_logits(lm, p, b["demo_ids"], b["demo_mask"], b["query_ids"],
                                      b["query_mask"]).sum()
  assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(jax.grad(f)(lp)))


def test_kl_is_zero_when_student_reads_the_demonstrations(setup):
  """S_D := the embeddings of the real demonstration tokens: the student's input is
  then the teacher's, padding and all (mask-based positions), so KL = 0 — this
  checks the slot alignment of the two passes, not only the KL formula."""
  lm, lp, _, _, b = setup
  teacher = losses.teacher_logits(lm, lp, b["demo_ids"], b["demo_mask"], b["query_ids"],
                                  b["query_mask"])
  zero = 0.0
  for row, n in ((0, 10), (1, 6)):
    s_d = lm.apply(lp, b["demo_ids"][row:row + 1, :n], method=llm.CausalLM.embed)
    student = losses.student_logits(lm, lp, s_d, b["query_ids"][row:row + 1],
                                    b["query_mask"][row:row + 1])
    kl = losses.kl_per_token(teacher[row:row + 1], student)
    q = int(b["query_mask"][row].sum())
    # Exactly 0 on one device; op-by-op CPU kernels on the 8 fake devices differ ~1e-5.
    np.testing.assert_allclose(kl[0, :q], 0.0, atol=1e-6)
    zero = max(zero, float(jnp.abs(kl[0, :q]).max()))
  # A different prefix gives a clearly larger KL (the check above can fail; a random
  # tiny LM barely reads its context, hence the small absolute scale).
  s_d = lm.apply(lp, (b["demo_ids"][:1] * 7 + 3) % V, method=llm.CausalLM.embed)
  student = losses.student_logits(lm, lp, s_d, b["query_ids"][:1], b["query_mask"][:1])
  assert float(losses.kl_per_token(teacher[:1], student).mean()) > 10 * zero + 1e-7


def test_hand_computed_kl_and_ce():
  t = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, 2.0, 3.0]]])
  s = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [3.0, 2.0, 1.0]]])
  def sm(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  pt, ps = sm(t), sm(s)
  kl = (pt * (np.log(pt) - np.log(ps))).sum(-1)
  np.testing.assert_allclose(losses.kl_per_token(jnp.asarray(t), jnp.asarray(s)), kl, rtol=1e-5)
  qmask = np.array([[1, 1, 0]], np.float32)
  np.testing.assert_allclose(losses.masked_mean(jnp.asarray(kl), jnp.asarray(qmask)),
                             (kl[0, 0] + kl[0, 1]) / 2, rtol=1e-6)
  ids = np.array([[2, 1, 0]])
  target = np.array([[0, 1, 1]])  # Tokens 1 and 2 are the gold output.
  nll, w = losses.ce_per_token(jnp.asarray(s), jnp.asarray(ids), jnp.asarray(target))
  hand = -(np.log(ps[0, 0, 1]) + np.log(ps[0, 1, 0])) / 2
  np.testing.assert_allclose(losses.masked_mean(nll, w), hand, rtol=1e-6)


def test_total_loss_is_ce_plus_lambda_kl(setup):
  lm, lp, dist, dp, b = setup
  _, m = losses.mend_loss(dist, dp, lm, lp, b, ce_weight=1.0, kl_weight=1.0)
  loss, _ = losses.mend_loss(dist, dp, lm, lp, b, ce_weight=1.0, kl_weight=0.5)
  np.testing.assert_allclose(loss, m["ce"] + 0.5 * m["kl"], rtol=1e-6)
  loss_kl, m1 = losses.mend_loss(dist, dp, lm, lp, b, ce_weight=0.0, kl_weight=1.0)
  np.testing.assert_allclose(loss_kl, m["kl"], rtol=1e-6)
  _, m0 = losses.mend_loss(dist, dp, lm, lp, b, ce_weight=1.0, kl_weight=0.0)
  assert "kl" not in m0  # CE-only (HyperTuning-style): the teacher is not run.
  # Hand composition from the pieces.
  s_d = dist.apply({"params": dp}, b["demo_ids"], b["demo_mask"])
  st = losses.student_logits(lm, lp, s_d, b["query_ids"], b["query_mask"])
  te = losses.teacher_logits(lm, lp, b["demo_ids"], b["demo_mask"], b["query_ids"],
                             b["query_mask"])
  kl = np.asarray(losses.kl_per_token(te, st))
  q = np.asarray(b["query_mask"], np.float32)
  np.testing.assert_allclose(m1["kl"], (kl * q).sum() / q.sum(), rtol=1e-5)
