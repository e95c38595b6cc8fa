"""Step-dependent curricula (research/gpicl/curriculum.py): schedules, what the
batches hold at given steps on both pipelines, the loss mask, and config checks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.gpicl import digits
from research import config as config_lib
from research import sharding
from research.gpicl import curriculum
from research.gpicl import experiment as gpicl
from research.gpicl import projection
from research.gpicl import learners
from research.gpicl import sampler


def _config(pipeline="device", **curr):
  c = digits.get_config("tiny,layout=paper")
  c.data.pipeline = pipeline
  c.data.seq_len = 12
  c.train.batch_size = 64
  c.tasks.num_tasks = 2**12
  c.curriculum.update(curr)
  return c


def test_ramp_hold_linear_geometric():
  r = lambda s, **kw: int(curriculum.ramp(s, **kw))
  assert [r(s, start=2, end=10, steps=80, hold=20) for s in (0, 20, 60, 100, 10**6)] == [2, 2, 6, 10, 10]
  assert [r(s, start=4, end=4096, steps=100, geometric=True) for s in (0, 50, 100, 200)] == [4, 128, 4096, 4096]
  # Traced steps give the same values (the device pipeline's step is traced).
  assert int(jax.jit(lambda s: curriculum.ramp(s, 2, 10, 80, 20))(jnp.int32(60))) == 6


def test_all_off_by_default():
  c = digits.get_config("tiny")
  assert curriculum.end_step(c) == 0
  assert curriculum.num_tasks(c, 0) == c.tasks.num_tasks
  assert curriculum.classes_per_sequence(c, 0, 10) is None
  assert int(curriculum.loss_len(c, 0)) == c.data.seq_len


def _build(c):
  return gpicl.build(c, sharding.make_mesh(c.mesh))


def _batch(exp, c, step, pipeline):
  key = jax.random.key(5)
  if pipeline == "host":
    return exp.host_batch(key, 0, c.train.batch_size, step)
  return jax.tree.map(np.asarray, jax.jit(exp.sample_batch)(exp.frozen, key, jnp.int32(step)))


def _classes_per_row(batch):
  # Labels are permuted per task, but a permutation keeps the number of distinct classes.
  return np.array([len(np.unique(row)) for row in batch["y"]])


@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_classes_curriculum_limits_classes_per_sequence(pipeline):
  c = _config(pipeline, steps=100, hold_steps=50, classes_start=2)
  exp = _build(c)
  assert _classes_per_row(_batch(exp, c, 0, pipeline)).max() == 2
  assert _classes_per_row(_batch(exp, c, 50, pipeline)).max() == 2      # Still held.
  mid = _classes_per_row(_batch(exp, c, 100, pipeline))               # 2 + 0.5 * 8 = 6.
  assert mid.max() == 6
  assert _classes_per_row(_batch(exp, c, 150, pipeline)).max() > 6    # All 10 allowed.


@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_num_tasks_curriculum_grows_the_pool(pipeline):
  """Every sequence at step 0 comes from task 0 or 1; at the end, from the whole pool."""
  c = _config(pipeline, steps=100, num_tasks_start=2)
  exp = _build(c)
  pool = np.asarray(projection.base_pools(c)[0]["train"][0])

  def from_first_two_tasks(batch):
    """Per row: is its first input a pool example under task 0's or task 1's projection?"""
    out = []
    for x in batch["x"][:, 0]:
      hit = False
      for task_id in (0, 1):
        proj = np.asarray(sampler.task_from_id(c.tasks.task_seed, task_id, pool.shape[1], 10).proj)
        base = np.linalg.solve(proj.T, x)  # x = base @ proj.
        hit |= np.abs(pool - base).max(1).min() < 1e-3
      out.append(hit)
    return np.array(out)
  assert int(curriculum.num_tasks(c, 0)) == 2 and int(curriculum.num_tasks(c, 100)) == 2**12
  assert from_first_two_tasks(_batch(exp, c, 0, pipeline)).all()
  assert from_first_two_tasks(_batch(exp, c, 100, pipeline)).mean() < 0.1


@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_loss_len_curriculum_masks_the_loss(pipeline):
  c = _config(pipeline, steps=100, loss_len_start=3)
  exp = _build(c)
  params = nn.unbox(exp.init_params(jax.random.key(0)))
  model = learners.make_learner(c.model, num_classes=10, seq_len=c.data.seq_len,
                                 input_dim=c.data.input_dim)
  for step, length in ((0, 3), (50, 8), (100, 12)):  # 3 + 0.5 * 9 = 7.5 -> 8.
    batch = _batch(exp, c, step, pipeline)
    assert np.all(batch["loss_len"] == length)
    loss, metrics = exp.loss_fn(params, exp.frozen, batch, jax.random.key(1))
    logits = model.apply({"params": params}, batch["x"], batch["y"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    np.testing.assert_allclose(loss, ce[:, :length].mean(), rtol=1e-5)
    # The plateau yardstick stays the loss over all positions.
    np.testing.assert_allclose(metrics["loss_unbiased"], ce.mean(), rtol=1e-5)


def test_end_step():
  assert curriculum.end_step(_config(steps=100, hold_steps=20, classes_start=2)) == 120
  assert curriculum.end_step(_config(steps=100)) == 0  # Nothing switched on.


@pytest.mark.parametrize("curr, match", [
    (dict(classes_start=2), "curriculum.steps=0"),
    (dict(steps=10, classes_start=11), "classes_start=11 exceeds"),
    (dict(steps=10, num_tasks_start=2**13), "num_tasks_start=8192 exceeds"),
    (dict(steps=10, loss_len_start=13), "loss_len_start=13 exceeds"),
    (dict(steps=-1), "non-negative"),
])
def test_validate_rejects(curr, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    gpicl.validate(_config(**curr))
