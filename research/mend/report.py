"""A compact record of MEND training runs for the README and the notebook.

  python -m research.mend.report --out experiments/mend/results/study_runs.json \
      t10=runs/mend/study/t10 t100=runs/mend/study/t100 ...

For every LABEL=RUN_DIR: what the run was (task, partition, steps, batch, dropout, l,
λ, T, episodes, buckets, teacher cache, init_from), its validation rows (held-out
tasks or rows: CE, KL, teacher and no-prefix CE at every evaluation), its speed (steps
per second of every logged interval, with the machine's load unknown to the run) and
the teacher cache's fill. Read back with `load`.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from research import metrics as metrics_lib
from research import runs
from research import workdir as workdir_lib


def describe(workdir: str) -> dict:
  c = runs.read_config(workdir)
  rows = metrics_lib.read_metrics(workdir)
  info = [r for r in rows if r.get("kind") == "info"]
  train = [r for r in rows if r.get("kind") == "train"]
  evals = [r for r in rows if r.get("kind") == "eval"]
  speed = [r["steps_per_s"] for r in train if r.get("steps_per_s")]
  out = {
      "workdir": workdir, "task": c.task, "steps": c.train.num_steps,
      "batch_size": c.train.batch_size, "learning_rate": c.optimizer.learning_rate,
      "init_from": c.init_from, "num_vectors": c.distiller.num_vectors,
      "dropout": c.dropout.to_dict(), "loss": c.loss.to_dict(),
      "eval": [{k: v for k, v in r.items() if k != "kind"} for r in evals],
      "train_loss": [(r["step"], r["loss"]) for r in train],
      "steps_per_s_median": float(np.median(speed)) if speed else None,
  }
  if c.task == "mend_finetune":
    out.update(partition=c.data.partition, val_partition=c.data.val_partition,
               episodes=c.data.episodes, buckets=c.data.buckets, teacher=c.teacher.to_dict(),
               generated_tasks=c.data.generated_tasks)
  if info:
    keep = ("train_tasks", "val_tasks", "train_rows", "buckets", "bucket_sizes",
            "teacher_cache_hits", "teacher_cache_computed", "teacher_cache_fill_s",
            "distiller_params", "documents")
    out["info"] = [{k: r[k] for k in keep if k in r} | {"step": r["step"]} for r in info]
  return out


def collect(labelled: dict[str, str]) -> dict[str, dict]:
  return {label: describe(path) for label, path in labelled.items()}


def load(path: str) -> dict[str, dict]:
  with open(path) as f:
    return json.load(f)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
  args = ap.parse_args(argv)
  labelled = dict(r.split("=", 1) for r in args.runs)
  record = collect(labelled)
  try:
    with open(args.out) as f:
      record = {**json.load(f), **record}  # Add to (or refresh) an existing record.
  except FileNotFoundError:
    pass
  workdir_lib.write_atomic(args.out, json.dumps(record, indent=1, sort_keys=True))
  print(f"wrote {len(record)} runs to {args.out}")


if __name__ == "__main__":
  main()
