"""In-context-learning evaluation: MetaICL-style "direct" option scoring.

Protocol (MetaICL, kept by MEND):
  * prompt = x1 y1 x2 y2 ... xK yK x, every output with a leading space and every
    input but the first with a leading space, no separators; each example capped at
    `max_length_per_example` tokens (its input is cut, as MetaICL does);
  * each option o is scored by the mean token NLL of " o" given the prompt; the
    argmax of -NLL wins;
  * prompts longer than `max_length` drop whole demonstrations from the left, never
    the query;
  * macro-F1 (MetaICL's definition) for classification tasks, accuracy otherwise,
    averaged over seeds, then over tasks.

Scoring is model-agnostic through a small adapter (`LMAdapter`): a causal LM that
returns hidden states and maps them to logits, with a KV cache. `CausalLMAdapter`
wraps `models.llm.CausalLM`. `Scorer` owns the jitted scoring functions:

  * `score_full(rows)`: every (context, option) row encoded from scratch;
  * `prefill(ids | embeds)` + `score_with_prefix(prefix, rows)`: the shared prefix
    (demonstrations, a soft prompt, MEND's distilled vectors) goes through the LLM
    once into a KV cache; every option of every query is then scored against it.

Every call is an ahead-of-time compiled executable, so its FLOPs come from XLA's
cost analysis of exactly what ran; `Scorer.meter` accumulates FLOPs and wall time.
XLA counts a while loop's body once, so for `nn.scan`-stacked models (CausalLM)
the adapter adds the other num_layers - 1 blocks analytically
(`scan_flops_correction`); a test checks the total grows linearly in the depth.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.icl import data as icl_data

Ids = list[int]


# --------------------------------------------------------------------------------------
# Model adapter.
# --------------------------------------------------------------------------------------

class LMAdapter(Protocol):
  """What the scorer needs from a causal LM (all pure functions of params)."""

  def hidden(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None,
             cache=None) -> tuple[jax.Array, Any]:
    """Final hidden states [b, t, d] and the updated cache (or None)."""

  def logits(self, params, hidden: jax.Array) -> jax.Array:
    """Next-token logits [..., vocab] from hidden states [..., d]."""

  def embed(self, params, input_ids: jax.Array) -> jax.Array:
    """Token embeddings [b, t, d]."""

  def init_cache(self, batch: int, max_len: int) -> Any: ...

  def expand_cache(self, cache: Any, n: int) -> Any: ...


class CausalLMAdapter:
  """`models.llm.CausalLM` behind `LMAdapter` (hidden states, then the LM head only
  where an option token is scored: the vocab projection is 20-30 % of a small LM)."""

  def __init__(self, model):
    from models import llm  # pylint: disable=import-outside-toplevel
    self._llm = llm
    self.model = model
    self.config = model.config

  def hidden(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None,
             cache=None):
    _, new_cache, hidden = self.model.apply(
        params, input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
        cache=cache, return_hidden=True)
    return hidden, new_cache

  def logits(self, params, hidden):
    p = params["params"]
    head = p["embed"].T if self.config.tie_embeddings else p["head"]
    return jnp.einsum("...d,dv->...v", hidden, head.astype(hidden.dtype)).astype(jnp.float32)

  def embed(self, params, input_ids):
    return self.model.apply(params, input_ids, method=self._llm.CausalLM.embed)

  def init_cache(self, batch, max_len):
    return self._llm.init_cache(self.config, batch, max_len)

  def expand_cache(self, cache, n):
    return self._llm.expand_cache(cache, n)

  def layer_flops(self, batch: int, t: int, s: int) -> float:
    """Matmul FLOPs of one block for `batch` rows of t tokens attending s slots."""
    c = self.config
    proj = 2 * t * c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    mlp = 2 * t * c.d_model * c.mlp_dim * (3 if c.arch == "llama" else 2)
    attn = 2 * 2 * t * s * c.num_heads * c.head_dim
    return float(batch * (proj + mlp + attn))

  def scan_flops_correction(self, batch: int, t: int, s: int) -> float:
    """XLA's cost analysis counts the body of `nn.scan`'s while loop once; the
    other num_layers - 1 blocks are added analytically."""
    return (self.config.num_layers - 1) * self.layer_flops(batch, t, s)


# --------------------------------------------------------------------------------------
# The scorer.
# --------------------------------------------------------------------------------------

def _bucket(n: int, quantum: int) -> int:
  """Round a length up so that few distinct shapes get compiled."""
  n = max(n, 1)
  if n <= 4 * quantum:
    return -(-n // quantum) * quantum
  p = 1 << (n - 1).bit_length()  # Powers of two (and 3/4 of them) above 4 quanta.
  return 3 * p // 4 if n <= 3 * p // 4 else p


def _xla_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


@dataclasses.dataclass
class Meter:
  """FLOPs (XLA cost analysis of each executable that ran) and wall seconds."""
  flops: float = 0.0
  seconds: float = 0.0
  calls: int = 0

  def reset(self):
    self.flops, self.seconds, self.calls = 0.0, 0.0, 0


@dataclasses.dataclass(frozen=True)
class Prefix:
  """A prefix held in a batch-1 KV cache, `length` real slots."""
  cache: Any
  length: int
  cache_len: int
  rows_len: int  # Row length (tokens) the cache leaves room for.


def _option_nll(adapter, params, hidden, ids, ctx_len, opt_len, max_opt):
  """Mean NLL of the option tokens of each row.

  Row r holds context tokens [0, ctx_len) then option tokens [ctx_len, ctx_len +
  opt_len); option token j is predicted by the hidden state at ctx_len + j - 1.
  """
  t = ids.shape[1]
  j = jnp.arange(max_opt)
  pred_at = jnp.clip(ctx_len[:, None] - 1 + j, 0, t - 1)  # [b, max_opt]
  tgt = jnp.take_along_axis(ids, jnp.clip(pred_at + 1, 0, t - 1), axis=1)
  h = jnp.take_along_axis(hidden, pred_at[..., None], axis=1)  # [b, max_opt, d]
  logp = jax.nn.log_softmax(adapter.logits(params, h), axis=-1)
  tok = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
  mask = j[None, :] < opt_len[:, None]
  return -(tok * mask).sum(1) / jnp.maximum(opt_len, 1)


class Scorer:
  """Jitted option scoring for one LM (params frozen: they are only ever inputs).

  rows: a list of (context_ids, option_ids); context non-empty.
  """

  def __init__(self, adapter: LMAdapter, params, *, batch_rows: int = 8,
               length_quantum: int = 16):
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    self.adapter = adapter
    self.params = nn.unbox(params)
    self.batch_rows = batch_rows
    self.quantum = length_quantum
    self.meter = Meter()
    self._compiled: dict[tuple, Any] = {}
    self._flops: dict[tuple, float] = {}

    def full(params, ids, mask, ctx_len, opt_len, *, max_opt):
      hidden, _ = adapter.hidden(params, input_ids=ids, attention_mask=mask)
      return _option_nll(adapter, params, hidden, ids, ctx_len, opt_len, max_opt)

    def prefill_ids(params, cache, ids, mask):
      return adapter.hidden(params, input_ids=ids, attention_mask=mask, cache=cache)[1]

    def prefill_embeds(params, cache, embeds):
      return adapter.hidden(params, inputs_embeds=embeds, cache=cache)[1]

    def cached(params, cache, ids, mask, ctx_len, opt_len, *, max_opt):
      cache = adapter.expand_cache(cache, ids.shape[0])
      hidden, _ = adapter.hidden(params, input_ids=ids, attention_mask=mask, cache=cache)
      return _option_nll(adapter, params, hidden, ids, ctx_len, opt_len, max_opt)

    self._fns = {"full": full, "prefill_ids": prefill_ids, "prefill_embeds": prefill_embeds,
                 "cached": cached}

  # -- compilation and metering -----------------------------------------------------
  def _correction(self, batch: int, t: int, s: int) -> float:
    fn = getattr(self.adapter, "scan_flops_correction", None)
    return float(fn(batch, t, s)) if fn else 0.0

  def _run(self, name: str, static: dict, *args, shape_flops: tuple[int, int, int] = (0, 0, 0)):
    key = (name, tuple(sorted(static.items())),
           tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args)))
    if key not in self._compiled:
      fn = jax.jit(lambda *a: self._fns[name](*a, **static))
      compiled = fn.lower(self.params, *args).compile()
      self._compiled[key] = compiled
      self._flops[key] = _xla_flops(compiled) + self._correction(*shape_flops)
    start = time.perf_counter()
    out = jax.block_until_ready(self._compiled[key](self.params, *args))
    self.meter.seconds += time.perf_counter() - start
    self.meter.flops += self._flops[key]
    self.meter.calls += 1
    return out

  def _pack(self, rows: Sequence[tuple[Ids, Ids]], length: int | None = None):
    """Right-padded [n, T] ids, mask, context and option lengths, in chunks."""
    for ctx, opt in rows:
      if not ctx:
        raise ValueError("every row needs at least one context token")
    t = length or _bucket(max(len(c) + len(o) for c, o in rows), self.quantum)
    max_opt = _bucket(max(len(o) for _, o in rows), 4)
    b = self.batch_rows
    n = -(-len(rows) // b) * b
    ids = np.zeros((n, t), np.int32)
    mask = np.zeros((n, t), np.int32)
    ctx_len = np.ones((n,), np.int32)  # Padding rows: one context token, no option.
    opt_len = np.zeros((n,), np.int32)
    mask[:, 0] = 1
    for i, (c, o) in enumerate(rows):
      seq = list(c) + list(o)
      if len(seq) > t:
        raise ValueError(f"row of {len(seq)} tokens exceeds the row length {t}")
      ids[i, :len(seq)] = seq
      mask[i, :len(seq)] = 1
      ctx_len[i], opt_len[i] = len(c), len(o)
    for s in range(0, n, b):
      yield (jnp.asarray(ids[s:s + b]), jnp.asarray(mask[s:s + b]),
             jnp.asarray(ctx_len[s:s + b]), jnp.asarray(opt_len[s:s + b])), max_opt

  # -- public API -------------------------------------------------------------------
  def score_full(self, rows: Sequence[tuple[Ids, Ids]]) -> np.ndarray:
    """Mean option NLL per row, each row encoded from scratch."""
    out = [self._run("full", {"max_opt": m}, *chunk,
                     shape_flops=(chunk[0].shape[0], chunk[0].shape[1], chunk[0].shape[1]))
           for chunk, m in self._pack(rows)]
    return np.concatenate([np.asarray(o) for o in out])[:len(rows)]

  def prefill(self, prefix_ids: Ids | None = None, prefix_embeds=None, *,
              rows_len: int) -> Prefix:
    """Encodes a prefix once into a batch-1 cache with room for rows of `rows_len`."""
    if (prefix_ids is None) == (prefix_embeds is None):
      raise ValueError("pass exactly one of prefix_ids and prefix_embeds")
    if prefix_ids is not None:
      n = len(prefix_ids)
      p = _bucket(n, self.quantum)
      cache = self.adapter.init_cache(1, p + rows_len)
      ids = np.zeros((1, p), np.int32)
      ids[0, :n] = prefix_ids
      mask = (np.arange(p) < n).astype(np.int32)[None]
      cache = self._run("prefill_ids", {}, cache, jnp.asarray(ids), jnp.asarray(mask),
                        shape_flops=(1, p, p + rows_len))
    else:
      embeds = jnp.asarray(prefix_embeds)[None] if prefix_embeds.ndim == 2 else prefix_embeds
      n = p = embeds.shape[1]
      cache = self.adapter.init_cache(1, p + rows_len)
      cache = self._run("prefill_embeds", {}, cache, embeds, shape_flops=(1, p, p + rows_len))
    return Prefix(cache, n, p + rows_len, rows_len)

  def score_with_prefix(self, prefix: Prefix, rows: Sequence[tuple[Ids, Ids]]) -> np.ndarray:
    """Mean option NLL per row, every row attending to the cached prefix."""
    out = [self._run("cached", {"max_opt": m}, prefix.cache, *chunk,
                     shape_flops=(chunk[0].shape[0], chunk[0].shape[1], prefix.cache_len))
           for chunk, m in self._pack(rows, prefix.rows_len)]
    return np.concatenate([np.asarray(o) for o in out])[:len(rows)]

  def rows_len(self, rows: Sequence[tuple[Ids, Ids]]) -> int:
    return _bucket(max(len(c) + len(o) for c, o in rows), self.quantum)


# --------------------------------------------------------------------------------------
# Prompts (MetaICL "direct").
# --------------------------------------------------------------------------------------

class Tokenizer(Protocol):
  def encode(self, text: str) -> Ids: ...


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  max_length: int = 1024  # MetaICL's max_length for GPT-2.
  max_length_per_example: int = 256
  bos_id: int | None = None  # Prepended to every prompt when set.


def encode_demonstration(tok: Tokenizer, ex: icl_data.Example, first: bool,
                         cfg: PromptConfig) -> Ids:
  """Tokens of "x y" (" x y" unless first), the input cut to fit the per-example cap."""
  x = tok.encode(ex["input"] if first else " " + ex["input"])
  y = tok.encode(" " + ex["output"])
  x = x[:max(1, cfg.max_length_per_example - 2 - len(y))]
  return x + y


def encode_query(tok: Tokenizer, ex: icl_data.Example, first: bool, cfg: PromptConfig
                 ) -> tuple[Ids, list[Ids]]:
  """Query input tokens and the tokens of every option (each with a leading space)."""
  opts = [tok.encode(" " + o) for o in ex["options"]]
  x = tok.encode(ex["input"] if first else " " + ex["input"])
  x = x[:max(1, cfg.max_length_per_example - 2 - max(len(o) for o in opts))]
  return x, opts


def build_prefix(tok: Tokenizer, demos: Sequence[icl_data.Example], budget: int,
                 cfg: PromptConfig) -> tuple[Ids, int]:
  """Concatenated demonstrations that fit `budget` tokens, dropping the earliest
  first (the query is never cut: `budget` already excludes it). Returns (ids, kept)."""
  enc = [encode_demonstration(tok, d, i == 0, cfg) for i, d in enumerate(demos)]
  bos = [cfg.bos_id] if cfg.bos_id is not None else []
  kept = len(enc)
  while kept and len(bos) + sum(len(e) for e in enc[len(enc) - kept:]) > budget:
    kept -= 1
  ids = list(bos)
  for e in enc[len(enc) - kept:]:
    ids += e
  return ids, kept


def query_rows(tok: Tokenizer, queries: Sequence[icl_data.Example], first: bool,
               cfg: PromptConfig) -> tuple[list[tuple[Ids, Ids]], list[int]]:
  """Flattened (query, option) rows and the number of options per query."""
  rows, counts = [], []
  bos = [cfg.bos_id] if (first and cfg.bos_id is not None) else []
  for q in queries:
    x, opts = encode_query(tok, q, first, cfg)
    rows += [(bos + x, o) for o in opts]
    counts.append(len(opts))
  return rows, counts


def split_rows(values: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
  return np.split(np.asarray(values), np.cumsum(counts)[:-1])


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


def predict(nlls: Sequence[np.ndarray], queries: Sequence[icl_data.Example]) -> list[str]:
  return [q["options"][int(np.argmin(n))] for n, q in zip(nlls, queries)]


# --------------------------------------------------------------------------------------
# Demonstration sampling.
# --------------------------------------------------------------------------------------

def sample_demonstrations(pool: Sequence[icl_data.Example], k: int, seed: int
                          ) -> list[icl_data.Example]:
  """k rows of `pool` in a seed-determined order (a pure function of (pool, k, seed))."""
  if k > len(pool):
    raise ValueError(f"asked for {k} demonstrations from a pool of {len(pool)}")
  idx = np.random.default_rng(seed).permutation(len(pool))[:k]
  return [pool[i] for i in idx]


# --------------------------------------------------------------------------------------
# Methods: each scores one task's queries and returns per-query option NLLs.
# --------------------------------------------------------------------------------------

def score_zero_shot(scorer: Scorer, tok, queries, cfg: PromptConfig) -> list[np.ndarray]:
  rows, counts = query_rows(tok, queries, True, cfg)
  return split_rows(scorer.score_full(rows), counts)


def _icl_budget(rows, cfg: PromptConfig) -> int:
  """Prefix tokens left once the longest query + option of the task fits."""
  return cfg.max_length - max(len(c) + len(o) for c, o in rows)


def score_icl(scorer: Scorer, tok, queries, demos, cfg: PromptConfig, *,
              cache_prefix: bool = True) -> tuple[list[np.ndarray], dict]:
  """Vanilla ICL with one demonstration set for the task. With `cache_prefix` the
  demonstrations are encoded once into the KV cache; otherwise every row re-encodes
  prompt + option (the naive baseline of the efficiency benchmark)."""
  rows, counts = query_rows(tok, queries, False, cfg)
  prefix, kept = build_prefix(tok, demos, _icl_budget(rows, cfg), cfg)
  info = {"demos_kept": kept, "prefix_tokens": len(prefix)}
  if not prefix:
    return score_zero_shot(scorer, tok, queries, cfg), info
  if cache_prefix:
    p = scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
    nll = scorer.score_with_prefix(p, rows)
  else:
    nll = scorer.score_full([(prefix + c, o) for c, o in rows])
  return split_rows(nll, counts), info


def score_per_query_demos(scorer: Scorer, tok, queries, demos_per_query, cfg: PromptConfig
                          ) -> tuple[list[np.ndarray], dict]:
  """ICL where each query has its own demonstrations (retrieval): one prefill per
  query, its options scored against that cache."""
  out, kept, lengths = [], [], []
  for q, demos in zip(queries, demos_per_query):
    rows, counts = query_rows(tok, [q], False, cfg)
    prefix, n = build_prefix(tok, demos, _icl_budget(rows, cfg), cfg)
    kept.append(n)
    lengths.append(len(prefix))
    if prefix:
      # Fixed row length per task keeps the compiled shapes few.
      p = scorer.prefill(prefix, rows_len=scorer.rows_len(rows))
      out.append(scorer.score_with_prefix(p, rows))
    else:
      out.append(scorer.score_full(rows))
  return out, {"demos_kept": float(np.mean(kept)), "prefix_tokens": float(np.mean(lengths))}


def score_soft_prefix(scorer: Scorer, tok, queries, prefix_embeds, cfg: PromptConfig
                      ) -> list[np.ndarray]:
  """Queries after learned vectors (prompt tuning; MEND's S_D): the vectors are
  prefilled once, the query is the first example (no leading space)."""
  rows, counts = query_rows(tok, queries, True, cfg)
  p = scorer.prefill(prefix_embeds=prefix_embeds, rows_len=scorer.rows_len(rows))
  return split_rows(scorer.score_with_prefix(p, rows), counts)


# --------------------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------------------

def aggregate(per_task_seed: dict[str, dict[int, float]]) -> dict[str, Any]:
  """Mean over seeds per task, then over tasks (MetaICL's order)."""
  per_task = {t: float(np.mean(list(s.values()))) for t, s in per_task_seed.items()}
  return {"per_task": per_task, "mean": float(np.mean(list(per_task.values())))
          if per_task else float("nan")}


def results_table(results: dict[str, Any]) -> str:
  """Markdown: tasks × methods (metric ×100, mean over seeds), then efficiency."""
  methods = list(results["methods"])
  tasks = sorted({t for m in methods for t in results["methods"][m]["per_task"]})
  lines = ["| task | " + " | ".join(methods) + " |",
           "|---|" + "---|" * len(methods)]
  for t in tasks:
    cells = [results["methods"][m]["per_task"].get(t) for m in methods]
    lines.append(f"| {t} | " + " | ".join("" if c is None else f"{100 * c:.1f}"
                                         for c in cells) + " |")
  lines.append("| **mean** | " + " | ".join(
      f"**{100 * results['methods'][m]['mean']:.1f}**" for m in methods) + " |")
  if results.get("partitions"):
    lines += ["", "| partition (meta-test mean) | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for name, means in sorted(results["partitions"].items()):
      lines.append(f"| {name} | " + " | ".join(
          f"{100 * means[m]:.1f}" if m in means else "" for m in methods) + " |")
  lines += ["", "| method | GFLOPs / query | ms / query | prefix tokens |", "|---|---|---|---|"]
  for m in methods:
    e = results["methods"][m].get("efficiency", {})
    lines.append(f"| {m} | {e.get('flops_per_query', 0) / 1e9:.3f} | "
                 f"{1e3 * e.get('seconds_per_query', 0):.2f} | "
                 f"{e.get('prefix_tokens', 0):.0f} |")
  return "\n".join(lines)


def write_results(results: dict[str, Any], path_prefix: str) -> tuple[str, str]:
  """`{prefix}.json` and `{prefix}.md`."""
  with open(path_prefix + ".json", "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  with open(path_prefix + ".md", "w") as f:
    f.write(results_table(results) + "\n")
  return path_prefix + ".json", path_prefix + ".md"
