"""The evaluation loop: methods × tasks × demonstration seeds, with an LM.

Open evaluation, one call on any tasks in MetaICL format:

    from research import llm
    from research.llm.metaicl import evaluation
    lm = llm.load("smollm2")
    res = evaluation.evaluate(lm, "path/to/metaicl_dir", ("zero_shot", "icl"), k=16)
    res = evaluation.evaluate(lm, test_rows, ("icl",), train_rows=my_rows, k=4, seeds=(1, 2))
    res["methods"]["icl"]["mean"], ["se"], ["n"]   # ± over demonstration seeds, n = seeds

Tasks are a MetaICL directory (its tasks' test files, demonstrations from its
k-shot files), a list of rows {task, input, output, options} (grouped by `task`,
demonstrations drawn from `train_rows` of the same task with each seed), or `Task`s.
Methods are `config.methods` entries (`methods.py`): registered names, or
LABEL=RUN_DIR for trained runs. `run_directory` is the runner body that `icl_eval`
and `mend_eval` share (data, LLM, loop, partition means, results files).
"""
from __future__ import annotations

import collections
import os
import time
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from research import metrics as metrics_lib
from research.errors import ConfigError, require
from research.llm import defaults as llm_defaults
from research.llm import scoring
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import methods as methods_lib
from research.llm.metaicl import prompts
from research.llm.metaicl import results as results_lib
from research.llm.metaicl import generator

Task = methods_lib.Task


# --------------------------------------------------------------------------------------
# Tasks.
# --------------------------------------------------------------------------------------

def kshot_demonstrations(root: str, task: str, k: int, seed: int) -> list[icl_data.Example]:
  """The seed's k-shot demonstrations; K < 16 takes a seed-ordered subset of them."""
  if os.path.exists(icl_data.task_file(root, task, k, seed, "train")):
    return icl_data.load_demonstrations(root, task, k, seed)
  return prompts.sample_demonstrations(icl_data.load_demonstrations(root, task, 16, seed),
                                       k, seed)


def directory_tasks(root: str, names: Sequence[str] | None = None,
                    n_test: int | None = None) -> list[Task]:
  """Tasks of a MetaICL directory (all, or `names`): the first `n_test` test rows of
  each, demonstrations from its k-shot files, its meta-train rows as the pool."""
  names = list(names) if names else icl_data.list_tasks(root)
  out = []
  for t in names:
    out.append(Task(
        t, icl_data.load_task(root, t, "test")[:n_test],
        icl_data.load_task_config(root, t).is_classification,
        load_pool=lambda t=t: icl_data.load_meta_train(root, t),
        kshot=lambda k, seed, t=t: kshot_demonstrations(root, t, k, seed)))
  return out


def row_tasks(test_rows: Sequence[dict], train_rows: Sequence[dict] = (),
              n_test: int | None = None) -> list[Task]:
  """Tasks from rows in MetaICL's format, grouped by their `task` field; a task whose
  rows all share one option list is a classification task (macro-F1)."""
  test, train = collections.defaultdict(list), collections.defaultdict(list)
  for i, r in enumerate(test_rows):
    test[r["task"]].append(icl_data.validate_example(r, where=f"test row {i}"))
  for i, r in enumerate(train_rows):
    train[r["task"]].append(icl_data.validate_example(r, where=f"train row {i}",
                                                      require_options=False))
  return [Task(t, rows[:n_test], len({tuple(r["options"]) for r in rows}) == 1,
               load_pool=lambda t=t: train[t]) for t, rows in test.items()]


def as_tasks(tasks, train_rows=(), n_test: int | None = None) -> list[Task]:
  if isinstance(tasks, (str, os.PathLike)):
    return directory_tasks(os.fspath(tasks), n_test=n_test)
  tasks = list(tasks)
  if tasks and isinstance(tasks[0], Task):
    return tasks
  return row_tasks(tasks, train_rows, n_test)


# --------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------

def evaluate(lm, tasks, methods: Sequence[str] = ("zero_shot", "icl"), *, k: int = 16,
             seeds: Sequence[int] = icl_data.SEEDS, train_rows: Sequence[dict] = (),
             n_test: int | None = None, settings: ml_collections.ConfigDict | None = None,
             meta_train: dict[str, list] | None = None, partition: str = "",
             prompt: prompts.PromptConfig | None = None, batch_rows: int = 8,
             workdir: str | None = None, writer=None, partial_path: str = "") -> dict[str, Any]:
  """Every method of `methods` on every task and demonstration seed; returns
  {"methods": {label: {"mean", "se", "n", "per_task", "per_task_seed", "efficiency",
  ...}}, "tasks", "seeds", "k"}. `settings`: the methods' config sections (defaults
  if None); `meta_train`: {task: rows} a method that trains reads (prompt tuning)."""
  tasks = as_tasks(tasks, train_rows, n_test)
  seeds = [int(s) for s in seeds]
  require(bool(tasks), "evaluate: no tasks")
  require(bool(seeds) and k > 0, f"evaluate: need seeds and k > 0, got seeds={seeds}, k={k}")
  specs = methods_lib.parse(methods)
  ctx = methods_lib.Context(
      lm=lm, scorer=scoring.Scorer(lm.adapter, lm.params, batch_rows=batch_rows),
      prompt=prompt or prompts.PromptConfig(), k=k,
      settings=settings if settings is not None else methods_lib.sections(),
      meta_train=meta_train or {}, partition=partition, workdir=workdir, writer=writer)
  results: dict[str, Any] = {"methods": {}, "tasks": [t.name for t in tasks], "seeds": seeds,
                             "k": k, "trained_on": {}}
  for spec in specs:
    results["methods"][spec.label] = evaluate_method(ctx, spec, tasks, seeds)
    method_partition = results["methods"][spec.label].pop("trained_on")
    if method_partition:
      results["trained_on"][spec.label] = method_partition
    if writer is not None:
      write_method(writer, spec.label, results["methods"][spec.label])
    if partial_path:  # Long CPU runs: keep what is done if the run is stopped.
      results_lib.write_results(results, partial_path)
  return results


def evaluate_method(ctx: methods_lib.Context, spec: methods_lib.Spec, tasks: Sequence[Task],
                    seeds: Sequence[int]) -> dict[str, Any]:
  """One method on every task and seed: its results record."""
  entry = spec.entry
  if "meta_train" in entry.needs and not ctx.meta_train and spec.run is None:
    raise ConfigError(f"method {spec.label!r} trains on meta-train tasks: give meta_train "
                      f"rows (a partition) or a trained run as {spec.label}=RUN_DIR")
  method = entry.obj(ctx, spec.run)
  ctx.scorer.meter.reset()
  per_task_seed: dict[str, dict[int, float]] = {}
  n_queries, prefix_tokens, kept = 0, [], []
  for task in tasks:
    golds = [q["output"] for q in task.queries]
    per_task_seed[task.name] = {}
    for seed in (seeds if entry.seed_dependent else seeds[:1]):
      nll, info = method.score(task, seed)
      preds = results_lib.predict(nll, task.queries)
      per_task_seed[task.name][seed] = results_lib.task_metric(preds, golds,
                                                               task.is_classification)
      n_queries += len(task.queries)
      prefix_tokens.append(info.get("prefix_tokens", 0))
      kept.append(info.get("demos_kept", 0))
  record = results_lib.aggregate(per_task_seed, entry.seed_dependent)
  record.update(method=entry.name, trained_on=method.trained_on)
  if spec.run:
    record["run"] = spec.run
  record["efficiency"] = {
      "flops_per_query": ctx.scorer.meter.flops / max(n_queries, 1),
      "seconds_per_query": ctx.scorer.meter.seconds / max(n_queries, 1),
      "queries": n_queries, "prefix_tokens": float(np.mean(prefix_tokens)),
      "demos_kept": float(np.mean(kept))}
  method.finish(record)
  return record


def write_method(writer, label: str, record: dict) -> None:
  """One method's mean ± se, per-task scores and efficiency as metric rows."""
  writer.write(0, {f"{label}/mean": record["mean"], f"{label}/se": record["se"],
                   f"{label}/n": record["n"],
                   **{f"{label}/{t}": v for t, v in record["per_task"].items()}}, kind="eval")
  writer.write(0, {f"{label}/{k}": v for k, v in record["efficiency"].items()},
               kind="efficiency")


# --------------------------------------------------------------------------------------
# The runner body of icl_eval and mend_eval.
# --------------------------------------------------------------------------------------

def check(config) -> None:
  """Values of the shared evaluation sections (before anything loads)."""
  llm_defaults.check(config)
  d = config.data
  require(d.k > 0 and d.n_test > 0, "config.data.k and config.data.n_test must be > 0")
  require(bool(d.seeds) and all(s in icl_data.SEEDS for s in d.seeds),
          f"config.data.seeds={d.seeds} must be MetaICL seeds from {icl_data.SEEDS} "
          "(their k-shot files hold the demonstrations)")
  require(bool(config.methods), "config.methods is empty: nothing to evaluate")
  methods_lib.parse(config.methods)  # Unknown names and missing runs fail before loading.


def data_root(config, workdir: str) -> str:
  """`config.data.root`, or the offline suite generated under data.suite_dir (default:
  the workdir)."""
  d = config.data
  return generator.root_for(d, d.suite_dir or workdir, k=max(16, d.k))


def run_directory(config, workdir: str, name: str,
                  extra: Callable[[dict, methods_lib.Context, list], str] | None = None
                  ) -> dict[str, Any]:
  """Data, LLM, every method of `config.methods` on the meta-test tasks of
  `config.data.partition`, partition means; writes `<workdir>/<name>.{json,md}` and
  metric rows. `extra(results, ctx, tasks) -> markdown` adds a runner's own tables."""
  check(config)
  os.makedirs(workdir, exist_ok=True)
  root = data_root(config, workdir)
  part = icl_data.load_partition(root, config.data.partition)
  names = [t.strip() for t in config.data.tasks.split(",") if t.strip()] or list(part.test)
  tasks = directory_tasks(root, names, config.data.n_test)
  meta_train = {t: icl_data.load_meta_train(root, t) for t in part.train}
  lm = llm_defaults.load(config)
  p = config.prompt
  pcfg = prompts.PromptConfig(max_length=p.max_length,
                              max_length_per_example=p.max_length_per_example,
                              bos_id=getattr(lm.tokenizer, "bos_id", None) if p.bos else None)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.tensorboard)
  start = time.perf_counter()
  try:
    results = evaluate(lm, tasks, config.methods, k=config.data.k, seeds=config.data.seeds,
                       settings=config, meta_train=meta_train, partition=config.data.partition,
                       prompt=pcfg, batch_rows=config.scorer.batch_rows, workdir=workdir,
                       writer=writer, partial_path=os.path.join(workdir, name + "_partial"))
    results.update(partition=config.data.partition, model=config.model.source, root=root)
    partitions = {n: list(icl_data.load_partition(root, n).test)
                  for n in icl_data.list_partitions(root)}
    results["partition_tasks"] = partitions
    results["partitions"] = results_lib.partition_means(partitions, results["methods"],
                                                        results["trained_on"])
    markdown = ""
    if extra is not None:
      ctx = methods_lib.Context(lm, scoring.Scorer(lm.adapter, lm.params,
                                                   batch_rows=config.scorer.batch_rows),
                                pcfg, config.data.k, config, meta_train,
                                config.data.partition, workdir, writer)
      markdown = extra(results, ctx, tasks)
    results["wall_seconds"] = time.perf_counter() - start
    results["config"] = config.to_dict()
    js, md = results_lib.write_results(results, os.path.join(workdir, name), markdown)
    writer.write(0, {"wall_seconds": results["wall_seconds"]}, kind="final")
  finally:
    writer.close()
  print(results_lib.results_table(results) + ("\n\n" + markdown if markdown else ""))
  print(f"wrote {js} and {md} ({results_lib.N_MEANING})")
  return results
