"""The GPICL task family: determinism, distinctness, statistics, disjointness."""
import jax
import jax.extend
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


def test_distinct_ints_exact_and_uniform_over_ordered_subsets():
  """Every ordered triple of distinct values from [0, 5) (60 of them) equally likely."""
  draws = np.asarray(jax.jit(jax.vmap(lambda k: sampler.distinct_ints(k, 5, 3)))(
      jax.random.split(jax.random.key(0), 30000)))
  assert all(len(set(row)) == 3 for row in draws.tolist())
  assert draws.min() >= 0 and draws.max() < 5
  codes = draws[:, 0] * 25 + draws[:, 1] * 5 + draws[:, 2]
  counts = np.bincount(codes, minlength=125)[np.unique(codes)]
  assert len(counts) == 60  # All ordered triples of distinct values occur.
  expected = len(codes) / 60
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 105  # 59 dof: P(chi2 > 105) < 1e-4 for a uniform sampler.


@pytest.mark.parametrize("n", [100, 60000])
def test_examples_without_replacement_and_uniform_per_position(n):
  y = jnp.arange(n) % 10
  x = jnp.arange(n, dtype=jnp.float32)[:, None]
  sample = jax.jit(jax.vmap(lambda k: sampler.sample_examples(k, x, y, 100)[0][:, 0]))
  rows = np.asarray(sample(jax.random.split(jax.random.key(1), 2000))).astype(np.int64)
  assert all(len(np.unique(r)) == 100 for r in rows)  # Exactly without replacement.
  assert rows.min() >= 0 and rows.max() < n
  # Uniform over the pool, at the first and the last position alike (10 bins).
  for pos in (0, 99):
    counts = np.bincount(rows[:, pos] * 10 // n, minlength=10)
    chi2 = ((counts - 200) ** 2 / 200).sum()
    assert chi2 < 33.7, (pos, counts)  # 9 dof, P < 1e-4.


def test_examples_with_replacement_when_the_pool_is_small():
  x = jnp.arange(7, dtype=jnp.float32)[:, None]
  xs, _ = sampler.sample_examples(jax.random.key(0), x, jnp.arange(7), 20)
  assert xs.shape == (20, 1) and set(np.asarray(xs[:, 0]).astype(int)) <= set(range(7))


def test_class_subset_respected_uniform_and_without_replacement():
  n, num_classes = 3000, 10
  y = jnp.asarray(np.random.default_rng(0).integers(0, num_classes, n))
  x = jnp.arange(n, dtype=jnp.float32)[:, None]
  sample = jax.jit(jax.vmap(lambda k, c: sampler.sample_examples(k, x, y, 40, c, num_classes)))
  keys = jax.random.split(jax.random.key(2), 3000)
  xs, ys = sample(keys, jnp.full((3000,), 3))
  rows, ys = np.asarray(xs[..., 0]).astype(np.int64), np.asarray(ys)
  np.testing.assert_array_equal(np.asarray(y)[rows], ys)  # Labels are the rows' own.
  assert all(len(np.unique(r)) == 40 for r in rows)
  assert all(len(np.unique(r)) <= 3 for r in ys)  # At most 3 classes per sequence...
  assert len(np.unique(ys)) == num_classes       # ...a different subset each time.
  # Given its subset, a sequence draws uniformly over the subset's rows: every row
  # of class 0 is equally likely (chi-square over the rows of class 0).
  zero = np.flatnonzero(np.asarray(y) == 0)
  counts = np.bincount(rows[ys == 0], minlength=n)[zero]
  expected = counts.sum() / len(zero)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  dof = len(zero) - 1
  assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)
  # All classes kept: every row reachable, as without the curriculum.
  xs, _ = sample(keys[:50], jnp.full((50,), num_classes))
  assert len(np.unique(np.asarray(xs))) > 0.4 * n


def _op_shapes(jaxpr):
  """Output shapes of every operation, inside loops and calls too."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name, [tuple(v.aval.shape) for v in eqn.outvars]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _op_shapes(sub)


@pytest.mark.parametrize("classes", [None, 3])
def test_sampling_cost_does_not_grow_with_the_pool(classes):
  """No per-sequence operation has a dimension of the pool's size: only the final
  gather reads the pool (and, with a class subset, a per-batch class table)."""
  n, batch, dim = 60000, 16, 784
  x, y = jnp.zeros((n, dim)), jnp.arange(n) % 10
  fn = jax.vmap(lambda k: sampler.sample_examples(k, x, y, 100, classes, 10))
  jaxpr = jax.make_jaxpr(fn)(jax.random.split(jax.random.key(0), batch)).jaxpr
  ops = list(_op_shapes(jaxpr))
  per_sequence_of_n = [(p, s) for p, s in ops for shape in s if batch in shape and n in shape]
  assert not per_sequence_of_n, per_sequence_of_n
  of_n = [p for p, s in ops if any(n in shape for shape in s)]
  if classes is None:  # Nothing of size n at all: the gather's output is [B, 100, dim].
    assert not of_n, of_n
  else:  # The class table: one argsort of the labels per batch, a handful of ops.
    assert "sort" in of_n and len(of_n) <= 10, of_n
