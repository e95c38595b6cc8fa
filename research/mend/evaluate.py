"""`config.task == "mend_eval"`: MEND next to the ICL baselines, on the meta-test tasks.

  python -m launch.main --config experiments/mend/evaluate.py --workdir DIR \
      --config.methods="('zero_shot','icl','prompt_tuning','mend=runs/mend_ft','hypertuning=runs/ht')"

The shared evaluation (`research.llm.metaicl.evaluation.run_directory`): every entry of
`config.methods` through the method registry — zero-shot, ICL with the demonstration
prefix in the KV cache, prompt tuning (trained in `<workdir>/prompt_tuning`), and every
trained distiller given as LABEL=RUN_DIR (`research/mend/method.py`); mean ± standard
error over demonstration seeds. Then MEND's efficiency table:

  icl            LLM FLOPs / time per query with the prefix prefilled once per (task,
                 seed) and amortised over its queries (the harness's number);
  icl_per_query  the same prompt with the prefix prefilled for every query;
  <mend>, S_D reused per task / per query (`research/mend/method.py`).
The per-query rows are composed from the measured per-call costs (the calls are
identical for every query of a task).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from research import experiment as experiment_lib
from research.llm.metaicl import evaluation
from research.llm.metaicl import prompts
from research.mend import defaults


def icl_prefill_costs(ctx, tasks, seeds) -> dict:
  """Mean LLM FLOPs / seconds of one demonstration-prefix prefill (the ICL prompt)."""
  scorer = ctx.scorer
  flops, secs, n, tokens = 0.0, 0.0, 0, []
  warm = set()
  for task in tasks:
    rows, _ = prompts.query_rows(ctx.lm.tokenizer, task.queries, False, ctx.prompt)
    for seed in seeds:
      prefix, _ = prompts.build_prefix(ctx.lm.tokenizer, task.demonstrations(ctx.k, seed),
                                       prompts.prefix_budget(rows, ctx.prompt), ctx.prompt)
      if not prefix:
        continue
      key = (len(prefix) // scorer.quantum, scorer.rows_len(rows))
      if key not in warm:
        scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
        warm.add(key)
      f0, s0 = scorer.meter.flops, scorer.meter.seconds
      scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
      flops, secs, n = flops + scorer.meter.flops - f0, secs + scorer.meter.seconds - s0, n + 1
      tokens.append(len(prefix))
  n = max(n, 1)
  return {"flops": flops / n, "seconds": secs / n, "tokens": float(np.mean(tokens or [0]))}


def is_distiller(record: dict) -> bool:
  return "llm_flops_reuse" in record["efficiency"]


def efficiency_table(results) -> str:
  """Markdown: LLM / total FLOPs and wall time per query, per strategy."""
  lines = ["| strategy | LLM GFLOPs / query | total GFLOPs / query | ms / query | "
           "prefix tokens into the LLM | compression |", "|---|---|---|---|---|---|"]
  m = results["methods"]
  for name, r in m.items():
    if not is_distiller(r):
      e = r["efficiency"]
      lines.append(f"| {name} | {e['flops_per_query'] / 1e9:.3f} | "
                   f"{e['flops_per_query'] / 1e9:.3f} | {1e3 * e['seconds_per_query']:.2f} | "
                   f"{e.get('prefix_tokens', 0):.0f} | |")
  icl_pq = results.get("icl_per_query")
  if icl_pq:
    lines.append(f"| icl, prefix prefilled per query | {icl_pq['flops'] / 1e9:.3f} | "
                 f"{icl_pq['flops'] / 1e9:.3f} | {1e3 * icl_pq['seconds']:.2f} | "
                 f"{icl_pq['prefix_tokens']:.0f} | |")
  for name, r in m.items():
    if is_distiller(r):
      e = r["efficiency"]
      for label, lf, tf, s in (("S_D reused per task", e["llm_flops_reuse"],
                                e["total_flops_reuse"], e["seconds_reuse"]),
                               ("S_D per query", e["llm_flops_per_query"],
                                e["total_flops_per_query"], e["seconds_per_query_sd"])):
        lines.append(f"| {name}, {label} | {lf / 1e9:.3f} | {tf / 1e9:.3f} | {1e3 * s:.2f} | "
                     f"{e['prefix_tokens']:.0f} | {e['compression']:.1f}× |")
  return "\n".join(lines)


def efficiency(results: dict, ctx, tasks) -> str:
  """MEND's additions to the shared results: the per-query ICL cost and the table."""
  results["mend_methods"] = [n for n, r in results["methods"].items() if is_distiller(r)]
  if "icl" in results["methods"]:
    pre = icl_prefill_costs(ctx, tasks, results["seeds"])
    e = results["methods"]["icl"]["efficiency"]
    q_per_prefix = e["queries"] / max(len(tasks) * len(results["seeds"]), 1)
    rows_f = e["flops_per_query"] - pre["flops"] / q_per_prefix
    rows_s = e["seconds_per_query"] - pre["seconds"] / q_per_prefix
    results["icl_per_query"] = {"flops": rows_f + pre["flops"],
                                "seconds": rows_s + pre["seconds"],
                                "prefix_tokens": pre["tokens"]}
  return efficiency_table(results)


@experiment_lib.EXPERIMENTS.register("mend_eval", defaults=defaults.eval_config, runner=True,
                                     validate=evaluation.check)
def run(config, workdir: str) -> dict[str, Any]:
  return evaluation.run_directory(config, workdir, "mend_results", extra=efficiency)
