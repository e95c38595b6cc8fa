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
or the sets of the run's task family (research/families/). Class labels are scored
by accuracy ("acc" metrics), real targets by squared error over the target's prior
variance ("mse" metrics: 1.0 = predicting 0). Classical learners fitted on the same
sequences (research/classical/) get the same metrics under "<set>/<learner>/...".
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


def per_position_metrics(logits, y, y_var=None):
  """(loss, score) per sequence and position, [B, L] each: cross-entropy and accuracy
  for class labels; for real targets (one output) the squared error divided by the
  target's variance `y_var` ([B], default 1), as both."""
  if jnp.issubdtype(y.dtype, jnp.floating):
    se = jnp.square(logits[..., 0] - y)
    se = se if y_var is None else se / y_var[:, None]
    return se, se
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


def curve_metrics(name: str, acc: np.ndarray, ce: np.ndarray, kind: str = "acc") -> dict:
  """The metric row of one evaluation set from per-sequence scores / losses [n, L];
  `kind` names the score: "acc" (accuracy) or "mse" (normalised squared error)."""
  mean, se, n = stats.mean_se_along(acc)
  ce_mean = np.asarray(ce).mean(0)
  out = {f"{name}/{kind}_after_{k}": float(mean[k]) for k in REPORT_AFTER if k < len(mean)}
  out.update({
      f"{name}/{kind}_last": float(mean[-1]), f"{name}/{kind}_last_se": float(se[-1]),
      f"{name}/loss_last": float(ce_mean[-1]), f"{name}/loss_mean": float(ce_mean.mean()),
      f"{name}/improvement": float(mean[-1] - mean[0]) * (1 if kind == "acc" else -1),
      f"{name}/{kind}_curve": [round(float(a), 5) for a in mean],
      f"{name}/{kind}_curve_se": [round(float(s), 5) for s in se],
      f"{name}/n": n})
  return out


def closeness(name: str, model_pred: np.ndarray, other_pred: np.ndarray, y_var=None) -> dict:
  """How closely the model follows another learner on the same sequences, over all
  positions, mean ± se over sequences: for values the squared difference of the
  predictions over the target variance ("delta", Raventós et al.'s Δ), for labels the
  fraction of equal predictions ("agreement")."""
  if y_var is not None:
    per_seq = (np.square(np.asarray(model_pred, np.float64) - other_pred)
               / np.asarray(y_var)[:, None]).mean(1)
    key = "delta"
  else:
    per_seq = (np.asarray(model_pred) == np.asarray(other_pred)).mean(1)
    key = "agreement"
  mean, se, _ = stats.mean_se(per_seq)
  return {f"{name}/{key}": mean, f"{name}/{key}_se": se}


def _kind(metrics, name) -> str:
  return "mse" if f"{name}/mse_curve" in metrics else "acc"


def held_out_gap(name: str, model_last: np.ndarray, classical_last: dict, kind: str) -> dict:
  """Model vs the best classical learner after the full context on one held-out set:
  per-sequence scores at the last position (the same sequences), so the difference's
  standard error is the paired one. Best = highest accuracy / lowest error."""
  means = {k: float(np.mean(v)) for k, v in classical_last.items()}
  if not means:
    return {"name": name, "metrics": {}}
  best = (max if kind == "acc" else min)(means, key=means.get)
  diff = np.asarray(model_last, np.float64) - np.asarray(classical_last[best], np.float64)
  gap, gap_se, n = stats.mean_se(diff)
  model, model_se, _ = stats.mean_se(model_last)
  best_mean, best_se, _ = stats.mean_se(classical_last[best])
  return {"name": name, "model": (model, model_se), "best": best, "best_value": (best_mean, best_se),
          "gap": (gap, gap_se), "n": n,
          "metrics": {f"{name}/best_classical": best, f"{name}/best_classical_last": best_mean,
                      f"{name}/gap_to_best": gap, f"{name}/gap_to_best_se": gap_se}}


def held_out_table(rows, kind: str) -> str:
  """One line per held-out set: model, best classical learner, and their paired gap."""
  what = "accuracy" if kind == "acc" else "normalised squared error"
  head = f"{'held out':<22}{'model':>16}{'best classical':>30}{'model - best':>18}"
  lines = [f"held-out sets, {what} after the full context:", head, "-" * len(head)]
  for r in rows:
    if "best" not in r:
      continue
    best = f"{r['best']} {stats.fmt(*r['best_value'])}"
    lines.append(f"{r['name']:<22}{stats.fmt(*r['model']):>16}{best:>30}{stats.fmt(*r['gap']):>18}")
  n = next((r["n"] for r in rows if "n" in r), None)
  lines.append(f"(± standard error over n={n} sequences; the gap's is paired: same sequences)")
  return "\n".join(lines)


def icl_curve(run, x, y, *, tasks: str = "unseen", num_sequences: int = 256,
              seq_len: int | None = None, seed: int = 0, num_classes: int | None = None,
              classical_learners: tuple[str, ...] = ()) -> dict:
  """Accuracy after t examples on sequences drawn from (x [N, d], y [N]) under `tasks`.

  Inputs are zero-padded or cut to the run's input size. Returns {"acc", "se"
  (per position, over sequences), "loss", "n", "chance"} as NumPy arrays / numbers,
  and with `classical_learners` (names of research/classical/, e.g. ("knn1",
  "logistic")) {"classical": {name: {"acc", "se"}}} fitted on exactly the same sequences.
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
  acc, ce, xs, ys = fn(run.params, jax.random.key(seed), x, y)
  mean, se, n = stats.mean_se_along(np.asarray(acc))
  out = {"acc": mean, "se": se, "loss": np.asarray(ce).mean(0), "n": n, "chance": 1.0 / classes}
  if classical_learners:
    from research import classical
    out["classical"] = {}
    for name in classical_learners:
      pred = classical.predict_fn(name, cfg.data.num_classes)(xs, ys)
      c_mean, c_se, _ = stats.mean_se_along(np.asarray(classical.score(pred, ys)))
      out["classical"][name] = {"acc": c_mean, "se": c_se}
  return out


@functools.lru_cache(maxsize=32)
def _curve_fn(model, kind, n, seq_len, classes, task_items, num_tasks):
  @jax.jit
  def fn(params, key, x, y):
    xs, ys = make_sequences(kind, key, x, y, n, seq_len, classes, dict(task_items), num_tasks)
    ce, acc = per_position_metrics(model.apply({"params": params}, xs, ys), ys)
    return acc, ce, xs, ys
  return fn


def icl_table(metrics, sets, seq_len, chance, learners=()) -> str:
  """Accuracy (or normalised squared error) after 1, 5, 10 and L-1 examples for each
  evaluation set, and under each set the classical `learners` on the same sequences;
  the last column carries its standard error over the n sequences."""
  cols = [k for k in REPORT_AFTER if k < seq_len - 1]
  width = max([16] + [len(s) + 1 for s in sets] + [len(l) + 5 for l in learners])
  follow = "agree/Δ" if learners else ""  # Each learner's closeness to the model.
  head = (f"{'eval set':<{width}}" + "".join(f"{'after ' + str(k):>10}" for k in cols)
          + f"{'after ' + str(seq_len - 1):>18}{'chance':>9}" + (f"{follow:>16}" if follow else ""))
  lines = [head, "-" * len(head)]
  n = None
  kinds = set()

  def row(label, key, chance_text):
    curve = metrics.get(f"{key}/{kind}_curve")
    if curve is None:
      return
    last = stats.fmt(curve[-1], metrics.get(f"{key}/{kind}_last_se", float("nan")))
    close = next((stats.fmt(metrics[f"{key}/{c}"], metrics.get(f"{key}/{c}_se", float("nan")))
                  for c in ("agreement", "delta") if f"{key}/{c}" in metrics), "")
    lines.append(f"{label:<{width}}" + "".join(f"{curve[k]:>10.3f}" for k in cols)
                 + f"{last:>18}{chance_text:>9}" + (f"{close:>16}" if close else ""))

  for name in sets:
    kind = _kind(metrics, name)
    if f"{name}/{kind}_curve" not in metrics:
      continue
    kinds.add(kind)
    n = metrics.get(f"{name}/n", n)
    row(name, name, f"{chance[name]:.3f}")
    for learner in learners:
      row(f"  · {learner}", f"{name}/{learner}", "")
  if n:
    what = " and ".join({"acc": "accuracy", "mse": "squared error / target variance (1 = "
                         "predicting 0)"}[k] for k in sorted(kinds))
    lines.append(f"({what}; ± standard error over n={n} sequences per set; "
                 f"· rows: classical learners on the same sequences; agree/Δ: how often their "
                 f"prediction equals the model's / their predictions' squared difference over "
                 f"the target variance, over all positions)" if learners else
                 f"({what}; ± standard error over n={n} sequences per set)")
  return "\n".join(lines)


def plot_icl_curves(metrics, sets, chance, path, title="", learners=()):
  """Score vs examples seen, one panel per set: the model (± one standard error shaded)
  and the classical `learners` on the same sequences (dashed), chance dotted."""
  import matplotlib  # Lazy: only the final report plots.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from research import workdir as workdir_lib
  sets = [s for s in sets if f"{s}/{_kind(metrics, s)}_curve" in metrics]
  if not sets:
    return
  cols = min(4, len(sets))
  rows = -(-len(sets) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, name in zip(axes.flat, sets):
    kind = _kind(metrics, name)
    for i, (label, key) in enumerate([("model", name)] +
                                     [(l, f"{name}/{l}") for l in learners]):
      curve = metrics.get(f"{key}/{kind}_curve")
      if curve is None:
        continue
      t = np.arange(len(curve))
      color = colors[i % len(colors)]
      ax.plot(t, curve, label=label, color=color, ls="-" if i == 0 else "--",
              lw=1.6 if i == 0 else 1.0)
      se = metrics.get(f"{key}/{kind}_curve_se")
      if se is not None:
        ax.fill_between(t, np.subtract(curve, se), np.add(curve, se), color=color, alpha=0.15,
                        lw=0)
    ax.axhline(chance[name], color="grey", ls=":", lw=0.8)
    ax.set_title(name, fontsize=8)
    ax.set_xlabel("examples seen", fontsize=7)
    ax.set_ylabel("accuracy" if kind == "acc" else "sq. error / var", fontsize=7)
    if kind == "acc":
      ax.set_ylim(0, 1)
    else:
      ax.set_ylim(0, max(1.5, chance[name] * 1.2))
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(sets):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=6)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  workdir_lib.save_figure(fig, path)
  plt.close(fig)
