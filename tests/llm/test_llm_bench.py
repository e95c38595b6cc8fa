"""The prefix-cache benchmark runs and its three strategies agree (tiny model)."""
import numpy as np

from models.llm import LMConfig
from research.llm import bench, scoring


def test_bench_prefix_cache_tiny():
  cfg = LMConfig(arch="llama", vocab_size=64, d_model=32, num_layers=1, num_heads=4,
                 num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=128)
  out = bench.bench_prefix_cache(cfg, demo_len=48, query_len=6, num_options=3, option_len=3,
                                 num_queries=4, repeats=1)
  assert out["max_score_diff"] < 1e-3
  flops = out["flops_per_query"]
  assert all(v > 0 for v in flops.values())
  # Encoding 57 + 3*3 tokens instead of 3 * 57 must cost fewer FLOPs (not a timing).
  assert out["flops_ratio_cached_prompt_vs_full"] < 0.6
  assert out["flops_ratio_cached_demos_vs_full"] < out["flops_ratio_cached_prompt_vs_full"]
  assert set(out["seconds_per_query"]) == set(flops)


def test_demo_cache_with_padded_query_equals_full():
  """Left-padded query after cached demonstrations: padding in mid-sequence is skipped."""
  import jax
  import flax.linen as nn
  from models.llm import CausalLM
  cfg = LMConfig(arch="gpt2", vocab_size=64, d_model=32, num_layers=2, num_heads=4,
                 num_kv_heads=4, head_dim=8, mlp_dim=64, max_len=64)
  params = nn.unbox(CausalLM(cfg).init(jax.random.key(0), np.zeros((1, 4), np.int32)))
  params = jax.tree_util.tree_map(lambda x: 4 * x, params)
  demos, query, options = [5, 6, 7, 8, 9, 10], [11, 12], [[13, 14], [15], [16, 17]]
  d_ids, d_mask = scoring.pad_prefix(demos, 8)
  q_ids, q_mask = scoring.pad_prefix(query, 4)
  o_ids, o_mask = scoring.pad_options(options)
  cache = scoring.prefill_demos(params, d_ids, d_mask, config=cfg, max_len=14)
  got, _ = scoring.score_query_with_demo_cache(params, cache, q_ids, q_mask, o_ids, o_mask,
                                               config=cfg)
  want, _ = scoring.score_sequences(params, *scoring.full_rows(demos + query, options),
                                    config=cfg)
  np.testing.assert_allclose(got, want, atol=1e-4)
