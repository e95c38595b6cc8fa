"""Key initialisation: EMA pulls keys to the data and replaces dead keys; k-means."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models import kv_bottleneck as kvb
from research.dkvb import keys as keys_lib


def _quant_error(data, codebook):
  q = jnp.asarray(data)[:, None, :]
  _, d = kvb.nearest_keys(q, codebook[None] if codebook.ndim == 2 else codebook, k=1)
  return float(jnp.mean(d))


def _clusters(n=600, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.uniform(-3, 3, size=(8, 2))
  return (centers[rng.integers(0, 8, n)] + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)


def test_ema_moves_keys_to_data_and_replaces_dead_keys():
  data = _clusters()
  to_q = lambda x: x[:, None, :]  # One head, identity.
  # Half the keys start far away from all data: they can only be fixed by replacement.
  start = jnp.concatenate([jnp.asarray(data[:8]), 100.0 + jnp.zeros((8, 2))])[None]
  codebook, state = keys_lib.ema_init_keys(
      jax.random.key(0), data, to_q, start, num_steps=100, batch_size=64,
      init_from_data=False, return_state=True)
  assert int(state.num_replaced) >= 8
  assert float(jnp.abs(codebook).max()) < 10.0
  assert _quant_error(data, codebook) < 0.5 * _quant_error(data, start)
  # Without replacement the far keys stay dead where they are.
  no_replace = jax.jit(functools.partial(keys_lib.ema_step, replace_dead=False))
  st = keys_lib.ema_state(start)
  for i in range(20):
    st = no_replace(st, jnp.asarray(data[i * 30:(i + 1) * 30])[:, None, :], jax.random.key(i))
  assert float(jnp.min(st.codebook[0, 8:])) > 90.0


def test_ema_step_matches_hand_computed_update():
  codebook = jnp.asarray([[[0.0], [10.0]]])  # (C=1, J=2, d=1)
  q = jnp.asarray([[[1.0]], [[3.0]]])  # both nearest to key 0
  st = keys_lib.ema_step(keys_lib.ema_state(codebook), q, jax.random.key(0), decay=0.5,
                         eps=0.0, replace_dead=False)
  # N = 0.5*1 + 0.5*[2, 0] = [1.5, 0.5];  S = 0.5*[0, 10] + 0.5*[4, 0] = [2, 5].
  np.testing.assert_allclose(np.asarray(st.cluster_size), [[1.5, 0.5]])
  np.testing.assert_allclose(np.asarray(st.codebook)[0, :, 0], [2 / 1.5, 5 / 0.5], rtol=1e-6)


def test_ema_with_sampler_and_random_projection():
  m = kvb.KeyValueBottleneck(dim_in=2, num_heads=5, num_keys=20, dim_key=2, dim_value=8)
  v = kvb.init_bottleneck(m, jax.random.key(0))
  to_q = lambda x: m.apply(v, x, method=m.queries)
  sample = lambda rng, b: jax.random.uniform(rng, (b, 2))
  codebook = keys_lib.ema_init_keys(jax.random.key(1), sample, to_q, v["keys"]["codebook"],
                                    num_steps=200, batch_size=100)
  assert codebook.shape == (5, 20, 2)
  test_q = to_q(jax.random.uniform(jax.random.key(2), (500, 2)))
  idx, d = kvb.nearest_keys(test_q, codebook, k=1)
  _, d0 = kvb.nearest_keys(test_q, v["keys"]["codebook"], k=1)
  assert float(d.mean()) < float(d0.mean())
  # Keys spread over the data: most keys of every head are someone's nearest key.
  for c in range(5):
    assert len(np.unique(np.asarray(idx)[:, c, 0])) >= 12


def test_kmeans_reduces_quantisation_error():
  data = _clusters()
  to_q = lambda x: x[:, None, :]
  codebook = keys_lib.kmeans_init_keys(jax.random.key(0), data, to_q, 16, num_iters=10,
                                       batch_size=200)
  assert codebook.shape == (1, 16, 2)
  one_iter = keys_lib.kmeans_init_keys(jax.random.key(0), data, to_q, 16, num_iters=0,
                                       batch_size=200)  # = its random data-point start
  assert _quant_error(data, codebook) < 0.5 * _quant_error(data, one_iter)


def _ema_step_numpy(codebook, size, embed_sum, q, decay, eps):
  """Reference EMA update (before dead-key replacement), one key at a time."""
  c, j, _ = codebook.shape
  counts, sums = np.zeros((c, j)), np.zeros(codebook.shape)
  for b in range(q.shape[0]):
    for h in range(c):
      k = np.argmin(((codebook[h] - q[b, h]) ** 2).sum(-1))
      counts[h, k] += 1
      sums[h, k] += q[b, h]
  size = decay * size + (1 - decay) * counts
  embed_sum = decay * embed_sum + (1 - decay) * sums
  total = size.sum(-1, keepdims=True)
  smoothed = (size + eps) / (total + j * eps) * total
  return embed_sum / smoothed[..., None], size, embed_sum


def test_ema_step_matches_numpy_reference_with_dead_key_replacement():
  rng = np.random.default_rng(4)
  c, j, d, b = 3, 20, 2, 16
  codebook = rng.standard_normal((c, j, d)).astype(np.float32)
  size = rng.uniform(0.0, 0.3, (c, j)).astype(np.float32)  # Some keys near the dead line.
  embed_sum = (codebook * size[..., None]).astype(np.float32)
  q = rng.standard_normal((b, c, d)).astype(np.float32)
  decay, eps, dead_fraction = 0.8, 1e-3, 0.1
  state = keys_lib.EMAState(jnp.asarray(codebook), jnp.asarray(size), jnp.asarray(embed_sum),
                            jnp.zeros((), jnp.int32))
  new = jax.jit(functools.partial(keys_lib.ema_step, decay=decay, eps=eps,
                                  dead_fraction=dead_fraction))(state, jnp.asarray(q),
                                                                jax.random.key(0))
  ref_codebook, ref_size, ref_sum = _ema_step_numpy(codebook, size, embed_sum, q, decay, eps)
  dead = ref_size < dead_fraction * b / j
  assert 0 < dead.sum() < dead.size  # The case exercises both branches.
  assert int(new.num_replaced) == dead.sum()
  got = {k: np.asarray(v) for k, v in new._asdict().items()}
  np.testing.assert_allclose(got["codebook"][~dead], ref_codebook[~dead], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["cluster_size"][~dead], ref_size[~dead], rtol=1e-6)
  np.testing.assert_allclose(got["embed_sum"][~dead], ref_sum[~dead], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(got["cluster_size"][dead], 1.0)
  np.testing.assert_array_equal(got["embed_sum"][dead], got["codebook"][dead])
  for h, k in zip(*np.nonzero(dead)):  # A dead key becomes a query of its own head.
    assert (np.abs(q[:, h] - got["codebook"][h, k]).sum(-1) == 0).any()


def test_ema_num_steps_is_the_papers_ten_epochs():
  assert keys_lib.ema_num_steps(50000, 256, 10) == 1950  # CIFAR100, full batches only.
  assert keys_lib.ema_num_steps(449, 256, 10) == 10  # Digits pool: one batch per epoch.
  assert keys_lib.ema_num_steps(100, 256, 3) == 3  # Pool smaller than a batch.


def test_ema_reusing_pool_queries_equals_projecting_every_step():
  """Several epochs over a pool: projecting it once (the default) gives the
  keys that projecting every batch gives, dead-key replacement included."""
  rng = np.random.default_rng(5)
  pool = rng.standard_normal((100, 6)).astype(np.float32)  # 100 % 32 != 0: a remainder.
  proj = jnp.asarray(rng.standard_normal((3, 6, 2)).astype(np.float32))
  to_q = lambda x: jnp.einsum("bd,cdk->bck", x, proj)
  start = jnp.zeros((3, 40, 2))
  run = lambda cache: keys_lib.ema_init_keys(
      jax.random.key(0), pool, to_q, start, num_steps=12, batch_size=32, decay=0.6,
      query_cache_bytes=cache, return_state=True)
  (reused, st_reused), (fresh, st_fresh) = run(1 << 30), run(0)
  assert int(st_reused.num_replaced) == int(st_fresh.num_replaced) > 0
  np.testing.assert_allclose(np.asarray(reused), np.asarray(fresh), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(keys_lib._project_pool(to_q, jnp.asarray(pool), 32).shape,
                                (100, 3, 2))


def test_a_small_key_init_loop_compiles_as_run_once_and_a_large_one_does_not(monkeypatch):
  """The toy-size EMA loop costs more to compile than to run: it takes
  `compiling.run_once()`'s options; above `SMALL_LOOP_FLOPS` XLA's default."""
  from research import compiling
  calls = []
  monkeypatch.setattr(compiling, "run_once", lambda: calls.append(1) or None)
  data = jax.random.uniform(jax.random.key(0), (64, 2))
  codebook = jax.random.uniform(jax.random.key(1), (1, 16, 2))
  run = lambda: keys_lib.ema_init_keys(jax.random.key(2), data, lambda x: x[:, None, :],
                                       codebook, num_steps=5, batch_size=32)
  keys_lib._ema_program.cache_clear()
  small = run()  # 5 steps × 32 queries × 16 keys: far below the threshold.
  assert calls == [1]
  monkeypatch.setattr(compiling, "SMALL_LOOP_FLOPS", 0.0)
  keys_lib._ema_program.cache_clear()
  large = run()
  assert calls == [1]
  np.testing.assert_allclose(small, large, rtol=1e-6, atol=1e-6)
  keys_lib._ema_program.cache_clear()
