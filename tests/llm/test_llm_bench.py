"""The prefix-cache benchmark runs and its three strategies agree (tiny model)."""
import numpy as np

from models.llm import LMConfig
from research.llm import bench


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

