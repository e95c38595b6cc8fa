"""Cost of scoring answer options with and without a cached demonstration prefix.

Per query, with D demonstration tokens, a Q-token query and n options of L tokens:

  full           n rows of [demos; query; option]: re-encodes everything per option
                 (what MetaICL's released scorer does).
  cached_prompt  [demos; query] encoded once into the KV cache, options against it.
  cached_demos   demonstrations encoded once per task (cost shared by
                 `num_queries` queries), each query appended to a copy of that
                 cache, options against it. The fair vanilla-ICL baseline for MEND.

All three run through `research.llm.scoring.Scorer` (the code the evaluations
use): FLOPs are its meter (XLA's cost analysis of each executable, the scanned
layers added analytically); times are the median wall-clock of `repeats` calls
after a warm-up call, on whatever backend runs. Ratios are measured in the same
run, never asserted. Rows are padded to the scorer's length buckets, and in
cached_demos each (query, option) row carries its query, as the evaluation scores.

Measured (`python -m research.llm.bench`, defaults: SmolLM2-135M architecture,
256 demonstration + 32 query tokens, 4 options of 4 tokens, 8 queries per task;
2-core shared CPU, float32), per query:

  full           368 GFLOPs   9.57 s
  cached_prompt  108 GFLOPs   1.49 s   (FLOPs x0.29, time x0.16)
  cached_demos    53 GFLOPs   0.71 s   (FLOPs x0.14, time x0.07)
All three gave the same option log-likelihoods (max diff 4e-6).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.llm import CausalLM, LMConfig
from research.llm import scoring


def _measure(scorer: scoring.Scorer, fn, repeats: int) -> tuple[float, float, np.ndarray]:
  """(FLOPs of one call, median seconds of `repeats` calls, result): the first call
  compiles and warms up; FLOPs and times are the scorer's meter over each call."""
  out = fn()
  flops, times = [], []
  for _ in range(repeats):
    f0, s0 = scorer.meter.flops, scorer.meter.seconds
    out = fn()
    flops.append(scorer.meter.flops - f0)
    times.append(scorer.meter.seconds - s0)
  return flops[0], float(np.median(times)), out


def bench_prefix_cache(config: LMConfig | None = None, params=None, *, demo_len: int = 256,
                       query_len: int = 32, num_options: int = 4, option_len: int = 4,
                       num_queries: int = 8, repeats: int = 3, seed: int = 0) -> dict:
  """Times and FLOPs per query of the three scoring strategies (see module doc).

  Defaults: SmolLM2-135M's architecture with random weights (cost does not
  depend on the values; pass `params` to use real ones), 256 demonstration tokens.
  """
  config = config or LMConfig.smollm2_135m()
  rng = np.random.default_rng(seed)
  if params is None:
    params = nn.unbox(jax.jit(CausalLM(config).init)(jax.random.key(seed),
                                                     jnp.zeros((1, 8), jnp.int32)))
  scorer = scoring.Scorer(scoring.CausalLMAdapter(CausalLM(config)), params,
                          batch_rows=num_options)
  tokens = lambda n: rng.integers(3, config.vocab_size, size=n).astype(np.int32).tolist()
  demos, query = tokens(demo_len), tokens(query_len)
  options = [tokens(option_len) for _ in range(num_options)]
  prompt = demos + query
  query_rows = [(query, o) for o in options]
  rows_len = scorer.rows_len(query_rows)

  full = lambda: scorer.score_full([(prompt, o) for o in options], reduce="sum")
  cached_prompt = lambda: scorer.score_options(prompt, options, reduce="sum")
  prefill = lambda: scorer.prefill(demos, rows_len=rows_len)
  demo_cache = prefill()
  per_query = lambda: scorer.score_with_prefix(demo_cache, query_rows, reduce="sum")

  flops, seconds, scores = {}, {}, {}
  for name, fn in (("full", full), ("cached_prompt", cached_prompt),
                   ("demo_prefill", prefill), ("cached_demos_query", per_query)):
    flops[name], seconds[name], out = _measure(scorer, fn, repeats)
    if name != "demo_prefill":
      scores[name] = np.asarray(out)
  scores["cached_demos"] = scores.pop("cached_demos_query")
  # Per query, the demonstration prefill is shared by the task's queries.
  flops["cached_demos"] = flops["cached_demos_query"] + flops["demo_prefill"] / num_queries
  seconds["cached_demos"] = seconds["cached_demos_query"] + seconds["demo_prefill"] / num_queries
  return {
      "backend": jax.default_backend(),
      "arch": config.arch, "num_layers": config.num_layers, "d_model": config.d_model,
      "demo_len": demo_len, "query_len": query_len, "num_options": num_options,
      "option_len": option_len, "num_queries": num_queries,
      "flops_per_query": flops, "seconds_per_query": seconds,
      "flops_ratio_cached_prompt_vs_full": flops["cached_prompt"] / flops["full"],
      "flops_ratio_cached_demos_vs_full": flops["cached_demos"] / flops["full"],
      "time_ratio_cached_prompt_vs_full": seconds["cached_prompt"] / seconds["full"],
      "time_ratio_cached_demos_vs_full": seconds["cached_demos"] / seconds["full"],
      # All three compute the same log-likelihoods (sanity, float32 rounding only).
      "max_score_diff": float(max(np.abs(scores[k] - scores["full"]).max() for k in scores)),
  }


if __name__ == "__main__":
  import json
  print(json.dumps(bench_prefix_cache(), indent=1))
