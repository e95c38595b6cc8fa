"""Reading GPICL runs: phases, transition points, plateau length, sweep tables.

Everything here is a pure function of what a run wrote (`metrics.jsonl`,
`final_metrics.json`, `sweep_run.json`), so notebooks and tests use the same code.

Phases (Kirsch et al. 2022, Sec. 4.1), from one run's final evaluation. The
within-sequence gain of an evaluation set is accuracy after the last example
minus accuracy after ONE example: position 0 is at chance for every permuted
task, so gains measured from it would count "recognise the task from one
example" (what a memorising model does when it has seen only a few tasks) as
in-context learning.

  learning-to-learn    unseen gain ≥ GAIN (0.1) and ≥ half the seen gain: the
                       model learns tasks it never saw, about as well as seen ones;
  task identification  seen gain ≥ GAIN, not learning-to-learn: the context
                       picks one of the memorised tasks, unseen tasks stay at chance;
  memorisation         seen accuracy ≥ chance + GAIN after the last example but
                       seen gain < GAIN: the answer sits in the weights, one
                       example (or none) suffices;
  none                 none of the above (still on the plateau).
Thresholds are absolute accuracy differences; 0.1 is one class out of ten, well
above the ±0.03 sampling noise of a 256-sequence evaluation.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

from research import metrics as metrics_lib
from research import stats

PHASES = ("none", "memorisation", "task_identification", "learning_to_learn")
GAIN = 0.1
PLATEAU_MARGIN = 0.1  # nats below ln C that count as having left the plateau.


# ----------------------------------------------------------------------------
# Phase of one run.
# ----------------------------------------------------------------------------
def gain(metrics: dict[str, Any], name: str) -> float:
  """Accuracy after the last example minus accuracy after one example."""
  curve = metrics.get(f"{name}/acc_curve")
  if curve is not None and len(curve) > 1:
    return float(curve[-1] - curve[1])
  return float(metrics[f"{name}/acc_last"] - metrics[f"{name}/acc_after_1"])


def classify_phase(metrics: dict[str, Any], num_classes: int = 10, *, threshold: float = GAIN) -> str:
  """One of PHASES for a run's final eval metrics (see the module docstring)."""
  seen_gain, unseen_gain = gain(metrics, "seen"), gain(metrics, "unseen")
  if unseen_gain >= threshold and unseen_gain >= 0.5 * seen_gain:
    return "learning_to_learn"
  if seen_gain >= threshold:
    return "task_identification"
  if metrics["seen/acc_last"] >= 1.0 / num_classes + threshold:
    return "memorisation"
  return "none"


def transition_points(num_tasks: Sequence[int], phases: Sequence[str], seeds: Sequence[int]) -> dict:
  """Where each phase starts along a num_tasks sweep, with its spread over seeds.

  For each seed, the transition into phase P is the smallest number of tasks
  whose run is in phase P or a later one, given that every larger count also is
  (the first point after which the sweep stays there); None if it never gets
  there. Returns {phase: {"per_seed": {seed: log2 tasks or None}, "mean", "std",
  "min", "max", "n"}} over the seeds that reach the phase, in log2(num_tasks).
  """
  order = {p: i for i, p in enumerate(PHASES)}
  out = {}
  for phase in ("task_identification", "learning_to_learn"):
    per_seed = {}
    for seed in sorted(set(seeds)):
      pts = sorted((n, order[p]) for n, p, s in zip(num_tasks, phases, seeds) if s == seed)
      start = None
      for i in range(len(pts) - 1, -1, -1):  # Walk down from the largest count.
        if pts[i][1] >= order[phase]:
          start = pts[i][0]
        else:
          break
      per_seed[seed] = None if start is None else math.log2(start)
    vals = np.array([v for v in per_seed.values() if v is not None], dtype=float)
    out[phase] = dict(per_seed=per_seed, n=int(vals.size),
                      mean=float(vals.mean()) if vals.size else None,
                      std=float(vals.std(ddof=1)) if vals.size > 1 else 0.0 if vals.size else None,
                      min=float(vals.min()) if vals.size else None,
                      max=float(vals.max()) if vals.size else None)
  return out


# ----------------------------------------------------------------------------
# Plateau.
# ----------------------------------------------------------------------------
def plateau_length(steps: Sequence[float], loss_unbiased: Sequence[float], num_classes: int,
                   *, margin: float = PLATEAU_MARGIN) -> int | None:
  """Steps until the unbiased-sequence loss leaves ln C by `margin` for good.

  The first logged step from which the loss stays below ln C − margin at every
  later logged step; None if the run never leaves (censored at its last step).
  Read it off `loss_unbiased`, never the total loss: with a biased distribution
  the total loss falls to (1 − bias)·ln C as soon as task 0 is memorised.
  """
  steps, loss = np.asarray(steps), np.asarray(loss_unbiased, dtype=float)
  if loss.size == 0:
    return None
  below = loss < math.log(num_classes) - margin
  if not below[-1]:
    return None
  above = np.flatnonzero(~below)
  first = 0 if above.size == 0 else above[-1] + 1
  return int(steps[first])


def plateau_from_rows(rows: Iterable[dict], num_classes: int, *, start_step: int = 0,
                      key: str | None = None, **kw) -> int | None:
  """`plateau_length` from metrics.jsonl rows (train rows: `loss_unbiased`, else `loss`).

  Only rows at `start_step` or later count: a curriculum's batches are not the
  paper's distribution until it ends, so its run's train loss says nothing
  about the plateau before then (a result of `start_step` means "left by the
  end of the curriculum"). `key` reads another metric, e.g. the evaluation's
  `unseen/loss_mean`, which every run measures on the paper's distribution.
  """
  rows = [r for r in rows if r.get("step", 0) >= start_step]
  if key is None:
    key = "loss_unbiased" if any("loss_unbiased" in r for r in rows) else "loss"
  steps, values = metrics_lib.series(rows, key)
  return plateau_length(steps, values, num_classes, **kw)


# ----------------------------------------------------------------------------
# Sweep directories.
# ----------------------------------------------------------------------------
def _json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_run(workdir: str, seed_dir: str = "") -> dict[str, Any] | None:
  """One finished run: {"workdir", "overrides", "config", "final", "info", "train"}; None
  if unfinished. `seed_dir`: one replica of a run that trained several seeds at once."""
  final = _json(os.path.join(workdir, seed_dir, "final_metrics.json"))
  if final is None:
    return None
  sweep_info = _json(os.path.join(workdir, "sweep_run.json")) or {}
  config = _json(os.path.join(workdir, "config.json")) or {}
  if seed_dir:
    config = dict(config, seed=int(seed_dir.split("_")[-1]))
  info_rows = metrics_lib.read_metrics(os.path.join(workdir, seed_dir), "info")
  return dict(workdir=os.path.join(workdir, seed_dir), name=os.path.basename(workdir) + (
      f"/{seed_dir}" if seed_dir else ""), overrides=sweep_info.get("overrides", {}),
              config=config, final=final, info=info_rows[-1] if info_rows else {},
              train=metrics_lib.read_metrics(os.path.join(workdir, seed_dir), "train"))


def load_runs(workdir: str) -> list[dict[str, Any]]:
  """The finished run in `workdir` as one entry per seed (`train.num_seeds` > 1 runs
  keep each replica in `seed_<s>/`)."""
  final = _json(os.path.join(workdir, "final_metrics.json"))
  if final is None:
    return []
  if "per_seed" not in final:
    return [load_run(workdir)]
  return [r for r in (load_run(workdir, f"seed_{s}") for s in final["seeds"]) if r]


def load_sweep_dir(sweep_dir: str) -> list[dict[str, Any]]:
  """All finished runs under a sweep directory, one entry per seed (unfinished ones
  are skipped)."""
  if not os.path.isdir(sweep_dir):
    return []
  return [r for d in sorted(os.listdir(sweep_dir)) for r in load_runs(os.path.join(sweep_dir, d))]


def config_value(run: dict, dotted: str, default=None):
  value = run["config"]
  for part in dotted.split("."):
    if not isinstance(value, dict) or part not in value:
      return default
    value = value[part]
  return value


def summarise(run: dict) -> dict[str, Any]:
  """The numbers every figure needs from one run, flat."""
  f = run["final"]
  c = run["config"]
  num_classes = c.get("data", {}).get("num_classes", 10)
  plateau = f.get("plateau_steps", plateau_from_rows(run["train"], num_classes))
  return dict(
      name=run["name"], learner=config_value(run, "model.name"), seed=c.get("seed"),
      num_tasks=config_value(run, "tasks.num_tasks"), batch_size=config_value(run, "train.batch_size"),
      eps=config_value(run, "optimizer.eps"), bias_fraction=config_value(run, "tasks.bias_fraction"),
      num_steps=config_value(run, "train.num_steps"),
      num_params=run["info"].get("num_params"), state_size=run["info"].get("state_size"),
      phase=classify_phase(f, num_classes), seen_gain=gain(f, "seen"), unseen_gain=gain(f, "unseen"),
      plateau_steps=plateau,
      **{k: v for k, v in f.items() if k.endswith("/acc_last")})


def group(rows: Sequence[dict], by: str, value: str) -> list[tuple[Any, float, float, int]]:
  """[(key, mean, standard error over seeds, n)] of `value` grouped by `by`, sorted by
  key (the project's one convention: `research.stats.mean_se`)."""
  keys = sorted({r[by] for r in rows}, key=lambda k: (k is None, k))
  return [(k, *stats.mean_se(r[value] for r in rows if r[by] == k and r[value] is not None))
          for k in keys]


# ----------------------------------------------------------------------------
# Model vs classical learners (task families), over seeds.
# ----------------------------------------------------------------------------
def kind_of(final: dict, name: str) -> str:
  """"acc" (accuracy) or "mse" (squared error over the target variance) of a set."""
  return "mse" if f"{name}/mse_curve" in final else "acc"


def over_seeds(runs: Sequence[dict], key: str, index: int | None = None):
  """(mean, standard error over seeds, n) of final[key] (or of final[key][index])."""
  values = []
  for r in runs:
    v = r["final"].get(key)
    if v is None:
      continue
    values.append(v[index] if index is not None else v)
  return stats.mean_se(values)


def learner_rows(runs: Sequence[dict], name: str, learners: Sequence[str] = (),
                 positions: Sequence[int] = (-1,)) -> list[dict]:
  """Rows of one evaluation set: the model (mean ± se over its seeds) and each classical
  learner / oracle present (mean ± se over the evaluation sequences: every seed sees the
  same sequences, so their fits do not vary with the seed), at the given positions."""
  if not runs:
    return []
  final = runs[0]["final"]
  kind = kind_of(final, name)
  out = [{"learner": "model", "n": len(runs), "unit": "seeds",
          **{t: over_seeds(runs, f"{name}/{kind}_curve", t)[:2] for t in positions}}]
  for learner in learners:
    curve = final.get(f"{name}/{learner}/{kind}_curve")
    if curve is None:
      continue
    se = final.get(f"{name}/{learner}/{kind}_curve_se")
    row = {"learner": learner, "n": final.get(f"{name}/{learner}/n"), "unit": "sequences",
           **{t: (curve[t], se[t]) for t in positions}}
    for close in ("delta", "agreement"):
      if f"{name}/{learner}/{close}" in final:
        row[close] = over_seeds(runs, f"{name}/{learner}/{close}")[:2]
    out.append(row)
  return out


def format_rows(name: str, rows: Sequence[dict], positions: Sequence[int], length: int) -> str:
  """A plain-text table of `learner_rows` (positions as "after t examples")."""
  label = lambda t: f"after {t % length}"
  head = f"{name:<22}" + "".join(f"{label(t):>18}" for t in positions) + f"{'n':>14}"
  lines = [head]
  for r in rows:
    cells = "".join(f"{stats.fmt(*r[t]):>18}" for t in positions)
    extra = "".join(f"  {k} {stats.fmt(*r[k])}" for k in ("delta", "agreement") if k in r)
    lines.append(f"  {r['learner']:<20}{cells}{str(r['n']) + ' ' + r['unit']:>14}{extra}")
  return "\n".join(lines)
