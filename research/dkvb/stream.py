"""Class-incremental streams and the continual-learning metrics.

A stream is a list of tasks, each a subset of classes; no task id is given at
training or test time (a single head over all classes). Class order depends on
the seed as in the released code: {0,1},{2,3},... for seeds 0 and 42, a random
permutation otherwise. The i.i.d. upper bound is one task holding all classes.

Accuracy matrix R[i, j]: class-balanced accuracy on the test classes of task j
after training on tasks 0..i (predictions over all classes).
"""
from __future__ import annotations

import numpy as np

IDENTITY_ORDER_SEEDS = (0, 42)


def class_order(num_classes: int, seed: int) -> np.ndarray:
  if seed in IDENTITY_ORDER_SEEDS:
    return np.arange(num_classes)
  return np.random.default_rng(seed).permutation(num_classes)


def make_tasks(order: np.ndarray, classes_per_task: int) -> list[np.ndarray]:
  """Consecutive groups of `classes_per_task` classes from `order`."""
  order = np.asarray(order)
  if len(order) % classes_per_task:
    raise ValueError(f"{len(order)} classes do not split into tasks of {classes_per_task}")
  return [order[i:i + classes_per_task] for i in range(0, len(order), classes_per_task)]


def split_by_task(x: np.ndarray, y: np.ndarray,
                  tasks: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
  """The examples of each task (labels keep their global class ids)."""
  return [(x[np.isin(y, t)], y[np.isin(y, t)]) for t in tasks]


def balanced_accuracy(pred: np.ndarray, y: np.ndarray, classes=None) -> float:
  """Mean over classes (present in `y`, or `classes`) of per-class accuracy."""
  pred, y = np.asarray(pred), np.asarray(y)
  classes = np.unique(y) if classes is None else np.asarray(classes)
  accs = [np.mean(pred[y == c] == c) for c in classes if np.any(y == c)]
  return float(np.mean(accs)) if accs else float("nan")


def balanced_accuracy_se(pred: np.ndarray, y: np.ndarray, classes=None) -> float:
  """Standard error of `balanced_accuracy` over the test examples: each class's
  accuracy is a mean of right/wrong (variance p(1-p)/(n-1), the project's sample
  convention), the balanced accuracy the mean of the classes' independent means."""
  pred, y = np.asarray(pred), np.asarray(y)
  classes = np.unique(y) if classes is None else np.asarray(classes)
  var = []
  for c in classes:
    n = int(np.sum(y == c))
    if n:
      p = float(np.mean(pred[y == c] == c))
      var.append(p * (1 - p) / max(n - 1, 1))
  return float(np.sqrt(np.sum(var)) / len(var)) if var else float("nan")


def task_accuracies(pred: np.ndarray, y: np.ndarray, tasks: list[np.ndarray]) -> np.ndarray:
  """Class-balanced accuracy on each task's test classes: one row of R."""
  return np.array([balanced_accuracy(pred[np.isin(y, t)], y[np.isin(y, t)]) for t in tasks])


def average_accuracy(r: np.ndarray) -> float:
  """Mean accuracy over all tasks after the last task."""
  return float(np.mean(np.asarray(r)[-1]))


def forgetting(r: np.ndarray) -> float:
  """Mean over tasks j < T-1 of max_{i<T-1} R[i, j] − R[T-1, j] (Chaudhry et al.)."""
  r = np.asarray(r)
  t = r.shape[0]
  if t < 2:
    return 0.0
  return float(np.mean([r[:t - 1, j].max() - r[t - 1, j] for j in range(t - 1)]))


def backward_transfer(r: np.ndarray) -> float:
  """Mean over tasks j < T-1 of R[T-1, j] − R[j, j] (Lopez-Paz & Ranzato)."""
  r = np.asarray(r)
  t = r.shape[0]
  if t < 2:
    return 0.0
  return float(np.mean([r[t - 1, j] - r[j, j] for j in range(t - 1)]))
