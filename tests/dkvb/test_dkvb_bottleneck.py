"""Key-value bottleneck: lookup vs brute force, frozen keys, value-only gradients, used mask."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import kv_bottleneck as kvb


def _brute_topk(q, keys, k, mask=None):
  d = ((q[:, :, None, :] - keys[None]) ** 2).sum(-1)  # (B, C, J)
  if mask is not None:
    d = np.where(mask[None], d, np.inf)
  return np.argsort(d, axis=-1, kind="stable")[..., :k], np.sort(d, axis=-1)[..., :k]


@pytest.mark.parametrize("k,chunk,num_keys", [(1, 1024, 37), (1, 7, 37), (3, 16, 37), (4, 5, 37),
                                              (1, 8, 40), (2, 8, 40)])  # 40: no padding.
def test_nearest_keys_matches_numpy(k, chunk, num_keys):
  rng = np.random.default_rng(0)
  q = rng.standard_normal((9, 5, 3)).astype(np.float32)
  keys = rng.standard_normal((5, num_keys, 3)).astype(np.float32)
  idx, dist = jax.jit(lambda q, kk: kvb.nearest_keys(q, kk, k=k, chunk_size=chunk))(q, keys)
  ref_i, ref_d = _brute_topk(q, keys, k)
  np.testing.assert_array_equal(np.asarray(idx), ref_i)
  np.testing.assert_allclose(np.asarray(dist), ref_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk,tile_bytes,masked", [
    (64, 4 * 6 * 64 * 4, False),  # 6 heads per group (2 groups), 2 chunks of 64 keys.
    (16, 4 * 16 * 4, False),  # One head per group, 7 chunks, the last one padded.
    (1024, 4 * 3 * 112 * 4, True),  # One chunk of all keys, padded 100 -> 112.
    (32, 4 * 2 * 32 * 4, True),
])
def test_tiled_top1_matches_numpy(chunk, tile_bytes, masked):
  """Top-1 search over groups of heads × chunks of keys = brute force."""
  rng = np.random.default_rng(2)
  q = rng.standard_normal((4, 12, 3)).astype(np.float32)
  keys = rng.standard_normal((12, 100, 3)).astype(np.float32)
  mask = rng.uniform(size=(12, 100)) < 0.2 if masked else None
  idx, dist = jax.jit(lambda q, kk, m: kvb.nearest_keys(
      q, kk, k=1, mask=m, chunk_size=chunk, tile_bytes=tile_bytes))(q, keys, mask)
  ref_i, ref_d = _brute_topk(q, keys, 1, mask)
  np.testing.assert_array_equal(np.asarray(idx), ref_i)
  np.testing.assert_allclose(np.asarray(dist), ref_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk", [1024, 32])
def test_top1_ties_go_to_the_lowest_index(chunk):
  """Copies of one key (dead-key replacement makes them) in one block, in other
  blocks and in other chunks: every search returns the first, like argmin."""
  rng = np.random.default_rng(3)
  keys = rng.standard_normal((2, 100, 4)).astype(np.float32) + 10.0
  q = rng.standard_normal((5, 2, 4)).astype(np.float32)
  for c, copies in ((0, [5, 9, 40, 90]), (1, [33, 34, 70])):
    keys[c, copies] = q[c, c]  # Head c: query c sits exactly on every copy.
  idx, dist = kvb.nearest_keys(jnp.asarray(q), jnp.asarray(keys), k=1, chunk_size=chunk)
  assert int(idx[0, 0, 0]) == 5 and int(idx[1, 1, 0]) == 33
  np.testing.assert_allclose(np.asarray(dist)[[0, 1], [0, 1], 0], 0.0, atol=1e-5)
  with_mask = np.ones((2, 100), bool)
  with_mask[0, 5] = False  # The first copy masked out: the next one wins.
  idx, _ = kvb.nearest_keys(jnp.asarray(q), jnp.asarray(keys), k=1,
                            mask=jnp.asarray(with_mask), chunk_size=chunk)
  assert int(idx[0, 0, 0]) == 9


def test_head_group_fits_the_tile():
  assert kvb._head_group(256, 256, 1024, 4 << 20) == 4
  assert kvb._head_group(12, 4, 64, 4 * 5 * 64 * 4) == 4  # 5 does not divide 12.
  assert kvb._head_group(7, 1024, 1024, 1) == 1  # Nothing fits: one head at a time.


@pytest.mark.parametrize("chunk", [1024, 8])
def test_masked_lookup_selects_only_allowed_keys(chunk):
  rng = np.random.default_rng(1)
  q = rng.standard_normal((20, 4, 2)).astype(np.float32)
  keys = rng.standard_normal((4, 30, 2)).astype(np.float32)
  mask = rng.uniform(size=(4, 30)) < 0.3
  mask[2] = False  # A head with no used key falls back to all keys.
  idx, _ = kvb.nearest_keys(q, keys, k=1, mask=jnp.asarray(mask), chunk_size=chunk)
  ref_i, _ = _brute_topk(q, keys, 1, np.where(mask.any(-1, keepdims=True), mask, True))
  np.testing.assert_array_equal(np.asarray(idx), ref_i)
  idx = np.asarray(idx)[..., 0]
  for c in (0, 1, 3):
    assert mask[c, idx[:, c]].all()


def test_random_projection_unit_norm_columns():
  p = kvb.random_projection(jax.random.key(0), 6, 11, 4)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(p), axis=1), 1.0, rtol=1e-5)


def _model(**kw):
  cfg = dict(dim_in=10, num_heads=4, num_keys=32, dim_key=3, dim_value=5, num_classes=5)
  cfg.update(kw)
  return kvb.KeyValueBottleneck(**cfg)


def test_keys_live_outside_params():
  m = _model()
  v = kvb.init_bottleneck(m, jax.random.key(0))
  assert set(v["params"]) == {"values"}
  assert set(v["keys"]) == {"codebook", "used", "projection"}
  assert not np.asarray(v["keys"]["used"]).any()


def test_training_changes_only_values_and_only_selected_rows():
  m = _model(value_init="normal")
  v = kvb.init_bottleneck(m, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (16, 10))
  y = jnp.arange(16) % 5

  def loss(variables):
    logits, _ = m.apply(variables, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def loss_all(params, codebook, projection):  # Keys as inputs: they must get no gradient.
    keys = dict(v["keys"], codebook=codebook, projection=projection)
    return loss({"params": params, "keys": keys})

  g_p, g_c, g_proj = jax.grad(loss_all, argnums=(0, 1, 2))(
      v["params"], v["keys"]["codebook"], v["keys"]["projection"])
  grads = {"params": g_p}
  np.testing.assert_array_equal(np.asarray(g_c), 0.0)
  assert np.abs(np.asarray(g_proj)).max() == 0.0
  _, idx = m.apply(v, x)
  selected = np.zeros((4, 32), bool)
  selected[np.arange(4)[None, :], np.asarray(idx)[..., 0]] = True
  g = np.abs(np.asarray(grads["params"]["values"])).sum(-1)
  assert (g[selected] > 0).all() and (g[~selected] == 0).all()

  opt = optax.sgd(0.5)
  params, state = v["params"], opt.init(v["params"])
  for _ in range(3):
    g = jax.grad(lambda p: loss({"params": p, "keys": v["keys"]}))(params)
    u, state = opt.update(g, state)
    params = optax.apply_updates(params, u)
  assert loss({"params": params, "keys": v["keys"]}) < loss(v)
  changed = np.abs(np.asarray(params["values"] - v["params"]["values"])).sum(-1) > 0
  np.testing.assert_array_equal(changed, selected)


def test_used_mask_restricts_eval_lookup():
  m = _model()
  v = kvb.init_bottleneck(m, jax.random.key(0))
  x_train = jax.random.normal(jax.random.key(1), (6, 10))
  x_test = jax.random.normal(jax.random.key(2), (50, 10))
  idx_train, _ = m.apply(v, x_train, method=m.lookup)
  used = kvb.mark_used(v["keys"]["used"], idx_train)
  np.testing.assert_array_equal(np.asarray(used).sum(-1),
                                [len(set(np.asarray(idx_train)[:, c, 0])) for c in range(4)])
  v2 = {"params": v["params"], "keys": dict(v["keys"], used=used)}
  idx_test, _ = m.apply(v2, x_test, True, method=m.lookup)
  idx_test = np.asarray(idx_test)[..., 0]
  assert np.asarray(used)[np.arange(4)[None], idx_test].all()
  q = np.asarray(m.apply(v2, x_test, method=m.queries))
  ref, _ = _brute_topk(q, np.asarray(v["keys"]["codebook"]), 1, np.asarray(used))
  np.testing.assert_array_equal(idx_test, ref[..., 0])
  # Unrestricted lookup does pick unused keys for some test inputs.
  free, _ = m.apply(v2, x_test, False, method=m.lookup)
  assert not np.asarray(used)[np.arange(4)[None], np.asarray(free)[..., 0]].all()


@pytest.mark.parametrize("projection,decoder", [("chunk", "vote"), ("learned", "linear"),
                                                ("random", "mlp")])
def test_projection_and_decoder_variants(projection, decoder):
  m = _model(dim_in=12, projection=projection, decoder=decoder, top_k=2)
  v = kvb.init_bottleneck(m, jax.random.key(0))
  logits, idx = m.apply(v, jnp.ones((3, 12)))
  assert logits.shape == (3, 5) and idx.shape == (3, 4, 2)
  assert ("projection" in v["params"]) == (projection == "learned")
  if decoder != "vote":
    assert "decoder" in v["params"]
