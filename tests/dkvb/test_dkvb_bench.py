"""The DKVB benchmark runs at a tiny size and its three lookups agree."""
from research.dkvb import bench


def test_bench_lookup_and_key_init_tiny():
  size = dict(batch=8, num_heads=4, num_keys=64, dim_key=3, dim_in=16, key_init_examples=40,
              key_init_epochs=2)
  out = bench.bench_lookup(chunk_size=16, ema_steps=4, repeats=1, **size)
  assert out["lookup_matches_naive"] is True
  assert out["key_init_projected_steps"] == 10  # 2 epochs × 40 // 8.
  assert out["lookup_naive_distance_bytes"] == 8 * 4 * 64 * 4
  e2e = bench.bench_key_init(chunk_size=16, **size)
  assert e2e["key_init_e2e_steps"] == 10 and e2e["key_init_e2e_s"] > 0


def test_bench_toy_counts_compiles_and_fails_loudly_when_a_loop_recompiles():
  """The toy bench runs (tiny config, 2 seeds vmapped) and reports compile counts, cold and
  from the persistent cache; a limit below what one model needs raises instead of timing a
  recompiling loop."""
  import pytest
  out = bench.bench_toy(num_seeds=2, arg="tiny", max_compiles_per_model=100)
  for name in ("dkvb_1x400", "dkvb_20x20", "linear", "mlp"):
    assert 0 < out[f"toy_{name}_compiles"] <= 100 and out[f"toy_{name}_s_per_seed"] > 0
    # The rerun reads its train step (and more) from the persistent cache, at launch.main's
    # threshold: a small model's programs are stored.
    assert out[f"toy_{name}_cached_cache_hits"] >= 1
    assert out[f"toy_{name}_cached_final_acc"] == out[f"toy_{name}_final_acc"]
    assert out[f"toy_{name}_cached_final_acc_se"] == out[f"toy_{name}_final_acc_se"] >= 0
    assert out[f"toy_{name}_cpu_s_per_seed"] > 0  # Every thread's, next to the wall time.
  with pytest.raises(RuntimeError, match="a loop recompiles"):
    bench.bench_toy(num_seeds=1, arg="tiny", max_compiles_per_model=1, cached=False)
