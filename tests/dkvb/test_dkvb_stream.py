"""Class-incremental streams and continual-learning metrics on hand-made matrices."""
import numpy as np
import pytest

from research.dkvb import stream


@pytest.mark.parametrize("seed", [0, 42])
def test_identity_class_order_for_paper_seeds(seed):
  tasks = stream.make_tasks(stream.class_order(10, seed), 2)
  assert [t.tolist() for t in tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_other_seeds_permute_and_tasks_partition_classes():
  order = stream.class_order(10, 3)
  assert sorted(order.tolist()) == list(range(10))
  assert order.tolist() != list(range(10))
  np.testing.assert_array_equal(order, stream.class_order(10, 3))  # Deterministic.
  with pytest.raises(ValueError):
    stream.make_tasks(order, 3)


def test_split_by_task_has_no_class_leaks():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 500)
  x = np.arange(500)[:, None] + 0.0
  tasks = stream.make_tasks(stream.class_order(10, 7), 2)
  parts = stream.split_by_task(x, y, tasks)
  seen = []
  for (xt, yt), t in zip(parts, tasks):
    assert set(np.unique(yt)) <= set(t.tolist())
    np.testing.assert_array_equal(y[xt[:, 0].astype(int)], yt)  # Inputs keep their labels.
    seen.extend(xt[:, 0].astype(int).tolist())
  assert sorted(seen) == list(range(500))  # Every example in exactly one task.


def test_balanced_accuracy_weights_classes_equally():
  y = np.array([0] * 8 + [1] * 2)
  pred = np.array([0] * 8 + [0] * 2)  # All majority: plain accuracy 0.8.
  assert stream.balanced_accuracy(pred, y) == pytest.approx(0.5)
  assert stream.balanced_accuracy(pred, y, classes=[0, 1, 2]) == pytest.approx(0.5)


def test_metrics_on_hand_made_accuracy_matrices():
  # Catastrophic forgetting: each task perfect when learnt, zero afterwards.
  r = np.eye(3)
  assert stream.average_accuracy(r) == pytest.approx(1 / 3)
  assert stream.forgetting(r) == pytest.approx(1.0)
  assert stream.backward_transfer(r) == pytest.approx(-1.0)
  # No forgetting: positive backward transfer, negative forgetting.
  r = np.array([[0.8, 0.0, 0.0],
                [0.9, 0.7, 0.0],
                [0.9, 0.8, 0.6]])
  assert stream.average_accuracy(r) == pytest.approx(np.mean([0.9, 0.8, 0.6]))
  # Task 0: best before the end 0.9, final 0.9 -> 0; task 1: 0.7 -> 0.8 -> -0.1.
  assert stream.forgetting(r) == pytest.approx(-0.05)
  assert stream.backward_transfer(r) == pytest.approx(((0.9 - 0.8) + (0.8 - 0.7)) / 2)
  # Forgetting measured from the best earlier accuracy, not the diagonal.
  r = np.array([[0.5, 0.0],
                [0.2, 0.9]])
  assert stream.forgetting(r) == pytest.approx(0.3)
  assert stream.forgetting(r[:1, :1]) == 0.0


def test_task_accuracies_row():
  y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
  pred = np.array([0, 0, 1, 0, 3, 3, 3, 3])
  row = stream.task_accuracies(pred, y, [np.array([0, 1]), np.array([2, 3])])
  np.testing.assert_allclose(row, [0.75, 0.5])
