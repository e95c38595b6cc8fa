"""In-context accuracy curves: the GPICL evaluation, open to any data.

`icl_curve(run, x, y)` meta-tests a trained learner (`research.runs.load(workdir)`)
on any labelled arrays: sequences of fresh examples, each under a task of your
choice (unseen random projections and permutations, the training pool's tasks, or
the identity), and returns the accuracy after t examples for every t with its
standard error over sequences. The trainer's own evaluation sets are built from
the same functions (`research/gpicl/experiment.py`).

Evaluation sets of a run (each an ICL curve, t = 0 … L-1):
  seen      training task ids, test split of the base data
  unseen    ids ≥ 2^30 (never in any training pool), test split
  identity  the unprojected base data
  <name>    another dataset never used in training, under unseen tasks
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import stats
from research.errors import ConfigError
from research.gpicl import sampler

REPORT_AFTER = (1, 5, 10)  # plus the last position
TASKS = ("unseen", "seen", "identity")


def per_position_metrics(logits, y):
  """Cross-entropy and accuracy per sequence and position: [B, L] each."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  acc = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  return ce, acc


def make_sequences(kind: str, key, x_pool, y_pool, n: int, seq_len: int, num_classes: int,
                   task_kw: dict, num_tasks: int):
  """`n` evaluation sequences of one kind from a pool: (x [n, L, d], y [n, L])."""
  if kind == "identity":
    return sampler.make_identity_sequences(key, n, x_pool, y_pool, seq_len)
  k_ids, k_seq = jax.random.split(key)
  if kind == "seen":
    ids, _ = sampler.sample_task_ids(k_ids, n, num_tasks, 0.0)
  elif kind == "unseen":
    ids = sampler.sample_unseen_ids(k_ids, n)
  else:
    raise ConfigError(f"tasks={kind!r}; use one of {TASKS}")
  return sampler.make_sequences(k_seq, ids, x_pool, y_pool, seq_len, num_classes, **task_kw)


def curve_metrics(name: str, acc: np.ndarray, ce: np.ndarray) -> dict:
  """The metric row of one evaluation set from per-sequence accuracy / CE [n, L]."""
  mean, se, n = stats.mean_se_along(acc)
  ce_mean = ce.mean(0)
  out = {f"{name}/acc_after_{k}": float(mean[k]) for k in REPORT_AFTER if k < len(mean)}
  out.update({
      f"{name}/acc_last": float(mean[-1]), f"{name}/acc_last_se": float(se[-1]),
      f"{name}/loss_last": float(ce_mean[-1]), f"{name}/loss_mean": float(ce_mean.mean()),
      f"{name}/improvement": float(mean[-1] - mean[0]),
      f"{name}/acc_curve": [round(float(a), 5) for a in mean],
      f"{name}/acc_curve_se": [round(float(s), 5) for s in se],
      f"{name}/n": n})
  return out


def icl_curve(run, x, y, *, tasks: str = "unseen", num_sequences: int = 256,
              seq_len: int | None = None, seed: int = 0, num_classes: int | None = None) -> dict:
  """Accuracy after t examples on sequences drawn from (x [N, d], y [N]) under `tasks`.

  Inputs are zero-padded or cut to the run's input size. Returns {"acc", "se"
  (per position, over sequences), "loss", "n", "chance"} as NumPy arrays / numbers.
  """
  from research.data import offline  # The padding the training data had.
  cfg = run.config
  x = offline.fit_dim(np.asarray(x, np.float32), cfg.data.input_dim)
  y = np.asarray(y, np.int32)
  classes = int(num_classes or (y.max() + 1))
  if classes > cfg.data.num_classes:
    raise ConfigError(f"y has {classes} classes but the learner predicts "
                      f"{cfg.data.num_classes} (config.data.num_classes)")
  seq_len = seq_len or cfg.data.seq_len
  model = run.experiment.objects["model"]
  if hasattr(model, "max_len") and seq_len > model.max_len:
    raise ConfigError(f"seq_len={seq_len} exceeds the learner's positional table "
                      f"(max_len={model.max_len}, the run's data.seq_len)")
  t = cfg.tasks
  task_kw = dict(task_seed=t.task_seed, proj_std=t.proj_std, bias_std=t.bias_std,
                 permute_prob=t.permute_prob)
  fn = _curve_fn(model, tasks, num_sequences, seq_len, classes, tuple(sorted(task_kw.items())),
                 t.num_tasks)
  acc, ce = jax.tree.map(np.asarray, fn(run.params, jax.random.key(seed), x, y))
  mean, se, n = stats.mean_se_along(acc)
  return {"acc": mean, "se": se, "loss": ce.mean(0), "n": n, "chance": 1.0 / classes}


@functools.lru_cache(maxsize=32)
def _curve_fn(model, kind, n, seq_len, classes, task_items, num_tasks):
  @jax.jit
  def fn(params, key, x, y):
    xs, ys = make_sequences(kind, key, x, y, n, seq_len, classes, dict(task_items), num_tasks)
    ce, acc = per_position_metrics(model.apply({"params": params}, xs, ys), ys)
    return acc, ce
  return fn


def icl_table(metrics, sets, seq_len, chance) -> str:
  """Accuracy after 1, 5, 10 and L-1 examples for each evaluation set; the last
  column carries its standard error over the n sequences."""
  cols = [k for k in REPORT_AFTER if k < seq_len - 1]
  head = (f"{'eval set':<16}" + "".join(f"{'after ' + str(k):>10}" for k in cols)
          + f"{'after ' + str(seq_len - 1):>18}{'chance':>9}")
  lines = [head, "-" * len(head)]
  n = None
  for name in sets:
    curve = metrics.get(f"{name}/acc_curve")
    if curve is None:
      continue
    n = metrics.get(f"{name}/n", n)
    last = stats.fmt(curve[-1], metrics.get(f"{name}/acc_last_se", float("nan")))
    lines.append(f"{name:<16}" + "".join(f"{curve[k]:>10.3f}" for k in cols)
                 + f"{last:>18}{chance[name]:>9.3f}")
  if n:
    lines.append(f"(± standard error over n={n} sequences per set)")
  return "\n".join(lines)


def plot_icl_curves(metrics, sets, chance, path, title=""):
  """Accuracy vs examples seen, one line per set, ± one standard error shaded."""
  import matplotlib  # Lazy: only the final report plots.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from research import workdir as workdir_lib
  fig, ax = plt.subplots(figsize=(6, 4))
  for name in sets:
    curve = metrics.get(f"{name}/acc_curve")
    if curve is None:
      continue
    t = np.arange(len(curve))
    line, = ax.plot(t, curve, label=name)
    se = metrics.get(f"{name}/acc_curve_se")
    if se is not None:
      ax.fill_between(t, np.subtract(curve, se), np.add(curve, se), color=line.get_color(),
                      alpha=0.15, lw=0)
    ax.axhline(chance[name], color=line.get_color(), ls=":", lw=0.8)
  ax.set_xlabel("examples seen in context")
  ax.set_ylabel("accuracy")
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  workdir_lib.save_figure(fig, path)
  plt.close(fig)
