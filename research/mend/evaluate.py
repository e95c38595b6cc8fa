"""`config.task == "mend_eval"`: MEND next to the ICL baselines, on the meta-test tasks.

  python -m launch.main --config experiments/mend/evaluate.py --workdir DIR \
      --config.mend.runs="mend=runs/mend_ft,mend_no_stage1=runs/mend_ns1,hypertuning=runs/ht"

Steps: (1) the task directory (`config.data.root`, or the offline suite); (2) the frozen
LLM (`config.model`, as `icl_eval`); (3) the harness methods of `research/icl`
(zero_shot, icl with the demonstration prefix in the KV cache, prompt_tuning …) through
`research.icl.experiment.evaluate`; (4) every distiller run of `config.mend.runs`
(name=trainer workdir of a stage-2 run; the newest checkpoint is used, no selection on
meta-test tasks): per (task, seed), S_D from the seed's K demonstrations, prefilled
into the KV cache as `prefix_embeds`, every (query, option) row scored against it with
the harness's direct scoring and metrics; (5) the tables and the efficiency numbers.

Demonstrations reach the distiller exactly as in training (`research/mend/data.py`:
" x y" per demonstration, left-truncated by whole demonstrations to the run's slot).
The query rows are the harness's (" x" with a leading space, then " option").

Efficiency (XLA cost analysis of the executables that ran; wall time of those calls):
  icl            LLM FLOPs / time per query with the prefix prefilled once per (task,
                 seed) and amortised over its queries (the harness's number);
  icl_per_query  the same prompt with the prefix prefilled for every query;
  <mend>_reuse   S_D computed once per (task, seed): distiller + l-vector prefill
                 amortised over the queries, plus the rows;
  <mend>_per_query  distiller + prefill for every query, plus the rows.
The per-query rows are composed from the measured per-call costs (the calls are
identical for every query of a task). Compression = demonstration tokens / l.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.icl import data as icl_data
from research.icl import experiment as icl_experiment
from research.icl import harness
from research.mend import data as mend_data
from research.mend import experiment as mend_experiment


def parse_runs(spec: str) -> dict[str, str]:
  """"name=workdir,name=workdir" -> {name: workdir}."""
  out = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, eq, path = part.partition("=")
    if not eq or not name or not path:
      raise ValueError(f"config.mend.runs entry {part!r} must be name=workdir")
    out[name.strip()] = path.strip()
  return out


SLOT_BUCKET = 32  # Distiller slot lengths at evaluation: multiples of this.


class DistillerRunner:
  """A trained distiller from a stage-2 workdir: demonstrations -> S_D, metered."""

  def __init__(self, workdir: str, lm_config, eval_model_source: str):
    run_cfg = ml_collections.ConfigDict(mend_experiment.read_run_config(workdir))
    if run_cfg.model.source != eval_model_source:
      raise ValueError(f"{workdir} was trained against model.source={run_cfg.model.source!r}, "
                       f"this evaluation uses {eval_model_source!r}")
    self.cfg = run_cfg
    self.module = mend_experiment.make_distiller(run_cfg, lm_config)
    self.params = jax.tree.map(jnp.asarray, mend_experiment.restore_params(workdir))
    self.max_row_tokens = run_cfg.data.max_row_tokens
    self.td = run_cfg.data.max_length - run_cfg.data.max_row_tokens
    self.num_vectors = run_cfg.distiller.num_vectors
    self._fn = jax.jit(lambda p, ids, m: self.module.apply({"params": p}, ids, m)[0])
    self._cost_module = self.module.clone(lm_config=self.module.lm_config.for_cost_analysis())
    self._flops: dict[int, float] = {}  # slot length -> XLA FLOPs of one call
    self.flops = 0.0
    self.seconds = 0.0
    self.calls = 0
    self.timed_calls = 0

  @property
  def flops_per_call(self) -> float:
    return self.flops / max(self.calls, 1)

  def _slot(self, n: int) -> int:
    """The demonstration slot for n real tokens: rounded up to SLOT_BUCKET, at most the
    training slot. Positions come from the mask, so the slot's padding changes no
    output (tested); a tight slot is what makes the distiller cheap."""
    return min(self.td, -(-max(n, 1) // SLOT_BUCKET) * SLOT_BUCKET)

  def _cost(self, slot: int) -> float:
    if slot not in self._flops:  # XLA counts a scanned layer once: the unrolled twin.
      shape = jax.ShapeDtypeStruct((1, slot), jnp.int32)
      lowered = jax.jit(lambda p, ids, m: self._cost_module.apply({"params": p}, ids, m)).lower(
          self.params, shape, shape)
      self._flops[slot] = float(harness._xla_flops(lowered.compile()))  # pylint: disable=protected-access
    return self._flops[slot]

  def distill(self, tok, demos) -> tuple[jax.Array, int, int]:
    """(S_D [l, d], demonstration tokens read, demonstrations kept)."""
    enc = [mend_data.encode_row(tok, ex, self.max_row_tokens)[0] for ex in demos]
    ids, kept = mend_data.pack_demonstrations(enc, self.td)
    slot = self._slot(len(ids))
    arr = np.zeros((1, slot), np.int32)
    mask = np.zeros((1, slot), np.int32)
    arr[0, :len(ids)], mask[0, :len(ids)] = ids, 1
    first = slot not in self._flops
    self.flops += self._cost(slot)
    start = time.perf_counter()
    s_d = jax.block_until_ready(self._fn(self.params, jnp.asarray(arr), jnp.asarray(mask)))
    if not first:  # A slot's first call compiles.
      self.seconds += time.perf_counter() - start
      self.timed_calls += 1
    self.calls += 1
    return s_d, len(ids), kept


def _meter(scorer):
  return scorer.meter.flops, scorer.meter.seconds


def evaluate_distiller(name, runner: DistillerRunner, config, root, scorer, tok, test_tasks,
                       queries, is_cls, pcfg) -> dict[str, Any]:
  """Scores the meta-test tasks with S_D as the prefix; returns the method's results."""
  per_task_seed: dict[str, dict[int, float]] = {}
  cost = {"prefill_flops": 0.0, "prefill_s": 0.0, "rows_flops": 0.0, "rows_s": 0.0,
          "queries": 0, "prefixes": 0, "demo_tokens": [], "kept": []}
  warm = set()
  for task in test_tasks:
    qs = queries[task]
    rows, counts = harness.query_rows(tok, qs, False, pcfg)
    per_task_seed[task] = {}
    for seed in config.data.seeds:
      demos = icl_experiment._demos(root, task, config.data.k, seed)  # pylint: disable=protected-access
      s_d, n_tok, kept = runner.distill(tok, demos)
      rows_len = scorer.rows_len(rows)
      if (task, rows_len) not in warm:  # Compile outside the meter.
        scorer.score_with_prefix(scorer.prefill(prefix_embeds=s_d, rows_len=rows_len), rows)
        warm.add((task, rows_len))
      f0, s0 = _meter(scorer)
      prefix = scorer.prefill(prefix_embeds=s_d, rows_len=rows_len)
      f1, s1 = _meter(scorer)
      nll = harness.split_rows(scorer.score_with_prefix(prefix, rows), counts)
      f2, s2 = _meter(scorer)
      cost["prefill_flops"] += f1 - f0
      cost["prefill_s"] += s1 - s0
      cost["rows_flops"] += f2 - f1
      cost["rows_s"] += s2 - s1
      cost["queries"] += len(qs)
      cost["prefixes"] += 1
      cost["demo_tokens"].append(n_tok)
      cost["kept"].append(kept)
      preds = harness.predict(nll, qs)
      per_task_seed[task][seed] = harness.task_metric(preds, [q["output"] for q in qs],
                                                      is_cls[task])
  agg = harness.aggregate(per_task_seed)
  agg["per_task_seed"] = {t: {str(s): v for s, v in d.items()} for t, d in per_task_seed.items()}
  nq, npfx = max(cost["queries"], 1), max(cost["prefixes"], 1)
  q_per_prefix = nq / npfx
  d_flops = runner.flops_per_call
  d_s = runner.seconds / max(runner.timed_calls, 1)
  rows_f, rows_s = cost["rows_flops"] / nq, cost["rows_s"] / nq
  pre_f, pre_s = cost["prefill_flops"] / npfx, cost["prefill_s"] / npfx
  agg["efficiency"] = {
      # The harness's columns: S_D reused per task (the distiller's cost included).
      "flops_per_query": rows_f + (pre_f + d_flops) / q_per_prefix,
      "seconds_per_query": rows_s + (pre_s + d_s) / q_per_prefix,
      "prefix_tokens": float(runner.num_vectors), "queries": cost["queries"],
      "demos_kept": float(np.mean(cost["kept"])),
      "demo_tokens": float(np.mean(cost["demo_tokens"])),
      "llm_flops_reuse": rows_f + pre_f / q_per_prefix,
      "llm_flops_per_query": rows_f + pre_f,
      "distiller_flops_per_call": d_flops,
      "total_flops_reuse": rows_f + (pre_f + d_flops) / q_per_prefix,
      "total_flops_per_query": rows_f + pre_f + d_flops,
      "seconds_reuse": rows_s + (pre_s + d_s) / q_per_prefix,
      "seconds_per_query_sd": rows_s + pre_s + d_s,
      "compression": float(np.mean(cost["demo_tokens"])) / runner.num_vectors,
  }
  return agg


def icl_prefill_costs(config, root, scorer, tok, test_tasks, queries, pcfg) -> dict:
  """Mean LLM FLOPs / seconds of one demonstration-prefix prefill (the ICL prompt)."""
  flops, secs, n, tokens = 0.0, 0.0, 0, []
  warm = set()
  for task in test_tasks:
    rows, _ = harness.query_rows(tok, queries[task], False, pcfg)
    for seed in config.data.seeds:
      demos = icl_experiment._demos(root, task, config.data.k, seed)  # pylint: disable=protected-access
      prefix, _ = harness.build_prefix(tok, demos, harness._icl_budget(rows, pcfg), pcfg)  # pylint: disable=protected-access
      if not prefix:
        continue
      key = (len(prefix) // scorer.quantum, scorer.rows_len(rows))
      if key not in warm:
        scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
        warm.add(key)
      f0, s0 = _meter(scorer)
      scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
      f1, s1 = _meter(scorer)
      flops, secs, n = flops + f1 - f0, secs + s1 - s0, n + 1
      tokens.append(len(prefix))
  n = max(n, 1)
  return {"flops": flops / n, "seconds": secs / n, "tokens": float(np.mean(tokens or [0]))}


def efficiency_table(results) -> str:
  """Markdown: LLM / total FLOPs and wall time per query, per strategy."""
  lines = ["| strategy | LLM GFLOPs / query | total GFLOPs / query | ms / query | "
           "prefix tokens into the LLM | compression |", "|---|---|---|---|---|---|"]
  m = results["methods"]
  for name in ("zero_shot", "icl", "prompt_tuning"):
    if name in m:
      e = m[name]["efficiency"]
      lines.append(f"| {name} | {e['flops_per_query'] / 1e9:.3f} | "
                   f"{e['flops_per_query'] / 1e9:.3f} | {1e3 * e['seconds_per_query']:.2f} | "
                   f"{e.get('prefix_tokens', 0):.0f} | |")
  icl_pq = results.get("icl_per_query")
  if icl_pq:
    lines.append(f"| icl, prefix prefilled per query | {icl_pq['flops'] / 1e9:.3f} | "
                 f"{icl_pq['flops'] / 1e9:.3f} | {1e3 * icl_pq['seconds']:.2f} | "
                 f"{icl_pq['prefix_tokens']:.0f} | |")
  for name in results.get("mend_methods", []):
    e = m[name]["efficiency"]
    for label, lf, tf, s in (("S_D reused per task", e["llm_flops_reuse"],
                              e["total_flops_reuse"], e["seconds_reuse"]),
                             ("S_D per query", e["llm_flops_per_query"],
                              e["total_flops_per_query"], e["seconds_per_query_sd"])):
      lines.append(f"| {name}, {label} | {lf / 1e9:.3f} | {tf / 1e9:.3f} | {1e3 * s:.2f} | "
                   f"{e['prefix_tokens']:.0f} | {e['compression']:.1f}× |")
  return "\n".join(lines)


def _check(config) -> None:
  from research.config import require  # pylint: disable=import-outside-toplevel
  icl_experiment._check(config)  # pylint: disable=protected-access
  runs = parse_runs(config.mend.runs)
  for name, path in runs.items():
    require(name not in icl_experiment.METHODS,
            f"config.mend.runs name {name!r} collides with a harness method")
    require(os.path.isdir(path), f"config.mend.runs: {name}={path} is not a directory "
            "(train it with experiments/mend/finetune.py first)")


def run(config, workdir: str) -> dict[str, Any]:
  from research import metrics  # pylint: disable=import-outside-toplevel
  _check(config)
  os.makedirs(workdir, exist_ok=True)
  root = mend_experiment.task_root(config)
  adapter, params, tok, vocab_size = icl_experiment.load_model(config)
  writer = metrics.MetricWriter(workdir, tensorboard=config.tensorboard)
  start = time.perf_counter()
  try:
    icl_cfg = ml_collections.ConfigDict(config.to_dict())
    icl_cfg.methods = tuple(m for m in config.methods if m in icl_experiment.METHODS)
    results = icl_experiment.evaluate(icl_cfg, root, adapter, params, tok, vocab_size, writer)

    pcfg = harness.PromptConfig(max_length=config.prompt.max_length,
                                max_length_per_example=config.prompt.max_length_per_example)
    scorer = harness.Scorer(adapter, params, batch_rows=config.scorer.batch_rows)
    test_tasks = results["tasks"]
    queries = {t: icl_data.load_task(root, t, "test")[:config.data.n_test] for t in test_tasks}
    is_cls = {t: icl_data.load_task_config(root, t).is_classification for t in test_tasks}
    if "icl" in results["methods"]:
      pre = icl_prefill_costs(config, root, scorer, tok, test_tasks, queries, pcfg)
      e = results["methods"]["icl"]["efficiency"]
      q_per_prefix = e["queries"] / max(len(test_tasks) * len(config.data.seeds), 1)
      rows_f = e["flops_per_query"] - pre["flops"] / q_per_prefix
      rows_s = e["seconds_per_query"] - pre["seconds"] / q_per_prefix
      results["icl_per_query"] = {"flops": rows_f + pre["flops"],
                                  "seconds": rows_s + pre["seconds"],
                                  "prefix_tokens": pre["tokens"]}
    results["mend_methods"] = []
    for name, path in parse_runs(config.mend.runs).items():
      runner = DistillerRunner(path, adapter.config, config.model.source)
      agg = evaluate_distiller(name, runner, config, root, scorer, tok, test_tasks, queries,
                               is_cls, pcfg)
      agg["workdir"] = path
      results["methods"][name] = agg
      results["mend_methods"].append(name)
      icl_experiment.write_method(writer, name, agg)
    # Partition means again, now with the distillers (each belongs to its partition).
    results["partitions"] = icl_experiment.partition_means(
        root, results["methods"], test_tasks, config.data.partition,
        trained=("prompt_tuning", *results["mend_methods"]))
    results["wall_seconds"] = time.perf_counter() - start
    results["config"] = json.loads(config.to_json())
    js, md = harness.write_results(results, os.path.join(workdir, "mend_results"))
    eff = efficiency_table(results)
    with open(md, "a") as f:
      f.write("\n" + eff + "\n")
  finally:
    writer.close()
  print(harness.results_table(results))
  print()
  print(eff)
  print(f"wrote {js} and {md}")
  return results
