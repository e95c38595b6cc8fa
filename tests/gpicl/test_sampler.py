"""The GPICL task family: determinism, distinctness, statistics, disjointness."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.gpicl import sampler


def test_same_id_same_task_different_ids_differ():
  a = sampler.task_from_id(0, 7, 16, 10)
  b = sampler.task_from_id(0, 7, 16, 10)
  c = sampler.task_from_id(0, 8, 16, 10)
  np.testing.assert_array_equal(a.proj, b.proj)
  np.testing.assert_array_equal(a.perm, b.perm)
  assert not np.allclose(a.proj, c.proj)
  # Different task seeds give different families.
  assert not np.allclose(a.proj, sampler.task_from_id(1, 7, 16, 10).proj)


def test_projection_std_is_one_over_sqrt_d():
  d = 128
  proj = np.stack([sampler.task_from_id(0, i, d, 10).proj for i in range(8)])
  assert abs(proj.std() - d**-0.5) < 0.02 * d**-0.5
  assert abs(proj.mean()) < 1e-3


def test_labels_are_permutations_and_permute_prob():
  perms = np.stack([sampler.task_from_id(0, i, 4, 10).perm for i in range(64)])
  for p in perms:
    assert sorted(p.tolist()) == list(range(10))
  assert (perms != np.arange(10)).any(1).mean() > 0.9  # Nearly all permute.
  keep = np.stack([sampler.task_from_id(0, i, 4, 10, permute_prob=0.0).perm for i in range(16)])
  np.testing.assert_array_equal(keep, np.tile(np.arange(10), (16, 1)))


def test_bias_std_and_bias_fraction():
  t = sampler.task_from_id(0, 3, 64, 10, bias_std=2.0)
  assert 1.5 < float(jnp.std(t.bias)) < 2.5
  ids, biased = sampler.sample_task_ids(jax.random.key(0), 4096, 1000, bias_fraction=0.25)
  assert abs(float(biased.mean()) - 0.25) < 0.03
  assert bool(jnp.all(ids[biased] == 0))
  assert int(ids.max()) < 1000 and int(ids.min()) >= 0


def test_base_examples_differ_between_steps():
  x = jnp.arange(500, dtype=jnp.float32)[:, None] * jnp.ones((1, 4))
  y = jnp.arange(500) % 10
  ids = jnp.zeros((4,), jnp.int32)
  x1, _ = sampler.make_sequences(jax.random.key(1), ids, x, y, 20, 10)
  x2, _ = sampler.make_sequences(jax.random.key(2), ids, x, y, 20, 10)
  assert not np.allclose(x1, x2)
  # Within a sequence, examples are drawn without replacement when possible.
  idx, _ = sampler.sample_examples(jax.random.key(3), x[:, :1], y, 50)
  assert len(np.unique(np.asarray(idx))) == 50


def test_same_task_same_transform_in_every_sequence():
  x = jax.random.normal(jax.random.key(0), (200, 8))
  y = jnp.arange(200) % 10
  task = sampler.task_from_id(0, 5, 8, 10)
  xs, ys = sampler.make_sequences(jax.random.key(4), jnp.array([5, 5]), x, y, 30, 10)
  # Recover which base examples were used and check the transform is task 5's.
  for s in range(2):
    for t in range(3):
      i = int(np.argmin(np.abs(np.asarray(x @ task.proj) - np.asarray(xs[s, t])).sum(1)))
      np.testing.assert_allclose(xs[s, t], x[i] @ task.proj, rtol=1e-5, atol=1e-5)
      assert int(ys[s, t]) == int(task.perm[y[i]])


@pytest.mark.parametrize("num_tasks", [1, 2**10, sampler.MAX_TASKS])
def test_unseen_ids_disjoint_from_training(num_tasks):
  ids, _ = sampler.sample_task_ids(jax.random.key(0), 10000, num_tasks)
  unseen = sampler.sample_unseen_ids(jax.random.key(1), 10000)
  assert int(ids.max()) < num_tasks <= sampler.MAX_TASKS < sampler.UNSEEN_OFFSET <= int(unseen.min())
  assert not set(np.asarray(ids).tolist()) & set(np.asarray(unseen).tolist())


def test_identity_task_is_unprojected():
  x = jax.random.normal(jax.random.key(0), (10, 6))
  y = jnp.arange(10)
  xi, yi = sampler.apply_task(sampler.identity_task(6, 10), x, y)
  np.testing.assert_allclose(xi, x)
  np.testing.assert_array_equal(yi, y)


def test_grouped_sequences_share_one_task_per_group():
  """The paper's 16 tasks × 32 sequences: every sequence of a group is the same task."""
  x = jax.random.normal(jax.random.key(0), (300, 6))
  y = jnp.arange(300) % 10
  ids = jnp.array([3, 11])
  xs, ys = sampler.make_grouped_sequences(jax.random.key(1), ids, 4, x, y, 20, 10)
  assert xs.shape == (8, 20, 6) and ys.shape == (8, 20)
  for g, task_id in enumerate([3, 11]):
    task = sampler.task_from_id(0, task_id, 6, 10)
    for s in range(4):
      row = g * 4 + s
      i = int(np.argmin(np.abs(np.asarray(x @ task.proj) - np.asarray(xs[row, 0])).sum(1)))
      np.testing.assert_allclose(xs[row, 0], x[i] @ task.proj, rtol=1e-5, atol=1e-5)
      assert int(ys[row, 0]) == int(task.perm[y[i]])
  assert not np.allclose(xs[0], xs[1])  # Fresh examples for each sequence of a group.
