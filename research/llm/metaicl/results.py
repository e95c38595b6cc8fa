"""Metrics, aggregation over demonstration seeds, and the tables every evaluation prints.

Per task and seed: macro-F1 over gold classes for classification tasks (MetaICL's
definition: a gold class never predicted has F1 0), accuracy for multiple-choice
tasks. A method's number is the mean over tasks of the per-task mean over seeds
(MetaICL's order). Its spread is over **demonstration seeds**: the per-seed means
over tasks, mean ± standard error (`research.stats.mean_se`, ddof = 1), n = the
number of seeds. A method that does not depend on the demonstration seed (zero-shot,
prompt tuning) is scored once: n = 1 and no ± (its uncertainty is that of the
queries, not of a seed). Every table prints `mean ± se` and says what n counts.

Results files (`*.json`) hold, per method, `per_task_seed` {task: {seed: value}}, so
every number here can be recomputed from them (the committed results in
`experiments/*/results/` are read by the same functions; files written before
`seed_dependent` was recorded list a seed-independent method's one value under every
seed, which `seed_means` recognises).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from research import stats
from research import workdir as workdir_lib

N_MEANING = "n = demonstration seeds"


# --------------------------------------------------------------------------------------
# Metrics.
# --------------------------------------------------------------------------------------

def macro_f1(predictions: Sequence[str], golds: Sequence[str]) -> float:
  """MetaICL's macro-F1: mean over gold classes of F1, where a class that is never
  predicted counts precision 1 (its recall is then 0, so F1 is 0 anyway)."""
  recalls: dict[str, list[bool]] = {}
  precisions: dict[str, list[bool]] = {}
  for p, g in zip(predictions, golds):
    ok = p == g
    recalls.setdefault(g, []).append(ok)
    precisions.setdefault(p, []).append(ok)
  f1s = []
  for c, rs in recalls.items():
    prec = float(np.mean(precisions[c])) if c in precisions else 1.0
    rec = float(np.mean(rs))
    f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
  return float(np.mean(f1s))


def accuracy(predictions: Sequence[str], golds: Sequence[str]) -> float:
  return float(np.mean([p == g for p, g in zip(predictions, golds)]))


def task_metric(predictions, golds, is_classification: bool) -> float:
  return macro_f1(predictions, golds) if is_classification else accuracy(predictions, golds)


def predict(nlls: Sequence[np.ndarray], queries) -> list[str]:
  """The option with the lowest NLL, per query."""
  return [q["options"][int(np.argmin(n))] for n, q in zip(nlls, queries)]


# --------------------------------------------------------------------------------------
# Aggregation.
# --------------------------------------------------------------------------------------

def seed_means(record: dict) -> dict[str, float]:
  """{seed: mean over tasks} of a method's `per_task_seed`; one entry for a method
  that does not depend on the demonstration seed."""
  pts = record["per_task_seed"]
  seeds = sorted(set.intersection(*(set(map(str, d)) for d in pts.values())), key=int)
  values = {s: float(np.mean([pts[t][s] if s in pts[t] else pts[t][int(s)] for t in pts]))
            for s in seeds}
  dependent = record.get("seed_dependent")
  if dependent is None:  # A file written before the flag: constant over seeds = independent.
    dependent = any(len({round(float(v), 12) for v in d.values()}) > 1 for d in pts.values())
  return values if dependent else dict(list(values.items())[:1])


def aggregate(per_task_seed: dict[str, dict[int, float]], seed_dependent: bool = True
              ) -> dict[str, Any]:
  """Per-task means over seeds, their mean over tasks, and the spread over seeds."""
  record = {"per_task_seed": {t: {str(s): float(v) for s, v in d.items()}
                              for t, d in per_task_seed.items()},
            "seed_dependent": seed_dependent}
  record["per_task"] = {t: float(np.mean(list(d.values())))
                        for t, d in record["per_task_seed"].items()}
  record["mean"] = (float(np.mean(list(record["per_task"].values())))
                    if record["per_task"] else float("nan"))
  if per_task_seed:
    _, record["se"], record["n"] = stats.mean_se(seed_means(record).values())
  else:
    record["se"], record["n"] = float("nan"), 0
  return record


def task_spread(record: dict, task: str) -> tuple[float, float, int]:
  """(mean, se, n) of one task over the method's demonstration seeds."""
  values = list(record["per_task_seed"][task].values())
  if len(seed_means(record)) == 1:
    values = values[:1]
  return stats.mean_se(values)


def method_spread(record: dict, tasks: Sequence[str] | None = None) -> tuple[float, float, int]:
  """(mean, se, n) over demonstration seeds of the mean over `tasks` (all by default)."""
  tasks = list(record["per_task_seed"]) if tasks is None else list(tasks)
  sub = dict(record, per_task_seed={t: record["per_task_seed"][t] for t in tasks})
  mean = float(np.mean([np.mean(list(sub["per_task_seed"][t].values())) for t in tasks]))
  _, se, n = stats.mean_se(seed_means(sub).values())
  return mean, se, n


def partition_means(partitions: dict[str, Sequence[str]], methods: dict[str, dict],
                    trained: dict[str, str]) -> dict[str, dict[str, float]]:
  """{partition: {method: mean over its meta-test tasks}} for every partition whose
  tasks were all evaluated; a method in `trained` ({method: partition}) belongs to the
  partition it was trained on only."""
  out = {}
  for name, tasks in sorted(partitions.items()):
    have = [m for m, r in methods.items() if set(tasks) <= set(r["per_task"])
            and trained.get(m, name) == name]
    if have and tasks:
      out[name] = {m: float(np.mean([methods[m]["per_task"][t] for t in tasks])) for m in have}
  return out


# --------------------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------------------

def cell(mean: float, se: float, n: int | None = None, bold: bool = False) -> str:
  """`mean ± se` × 100 (one decimal); no ± when n = 1."""
  text = stats.fmt(mean, se if (n or 2) > 1 else float("nan"), None, digits=1, scale=100)
  return f"**{text}**" if bold else text


def results_table(results: dict[str, Any], partition_tasks: dict[str, Sequence[str]] | None = None,
                  order: Sequence[str] = ()) -> str:
  """Markdown: tasks × methods (metric × 100, mean ± se over demonstration seeds),
  the mean row with n, partitions × methods, then efficiency."""
  methods = [m for m in order if m in results["methods"]] + [
      m for m in results["methods"] if m not in order]
  recs = results["methods"]
  tasks = sorted({t for m in methods for t in recs[m]["per_task"]})
  lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
  for t in tasks:
    lines.append(f"| {t} | " + " | ".join(
        cell(*task_spread(recs[m], t)) if t in recs[m]["per_task"] else "" for m in methods)
        + " |")
  spreads = [method_spread(recs[m]) for m in methods]
  lines.append("| **mean** | " + " | ".join(cell(*s, bold=True) for s in spreads) + " |")
  lines.append(f"| n (demonstration seeds) | " + " | ".join(str(s[2]) for s in spreads) + " |")
  parts = results.get("partitions") or {}
  if parts:
    partition_tasks = partition_tasks or results.get("partition_tasks") or {}
    lines += ["", f"| partition (meta-test mean; {N_MEANING}) | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for name, means in sorted(parts.items()):
      tasks_p = partition_tasks.get(name)
      row = []
      for m in methods:
        if m not in means:
          row.append("")
        elif tasks_p:
          row.append(cell(*method_spread(recs[m], tasks_p)))
        else:
          row.append(cell(means[m], float("nan"), 1))
      lines.append(f"| {name} | " + " | ".join(row) + " |")
  lines += ["", "| method | GFLOPs / query | ms / query | prefix tokens |", "|---|---|---|---|"]
  for m in methods:
    e = recs[m].get("efficiency", {})
    lines.append(f"| {m} | {e.get('flops_per_query', 0) / 1e9:.3f} | "
                 f"{1e3 * e.get('seconds_per_query', 0):.2f} | "
                 f"{e.get('prefix_tokens', 0):.0f} |")
  return "\n".join(lines)


def write_results(results: dict[str, Any], path_prefix: str, extra_markdown: str = ""
                  ) -> tuple[str, str]:
  """`{prefix}.json` and `{prefix}.md` (written atomically)."""
  os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
  workdir_lib.write_atomic(path_prefix + ".json", json.dumps(results, indent=1, sort_keys=True))
  md = results_table(results) + ("\n\n" + extra_markdown if extra_markdown else "") + "\n"
  workdir_lib.write_atomic(path_prefix + ".md", md)
  return path_prefix + ".json", path_prefix + ".md"
