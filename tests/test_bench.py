"""`make bench`'s pieces run on the trainer's own step (they broke silently once when the
trainer's step signature changed): a timed step with its MFU and profile, the pool-size
comparison, and the markdown rendering."""
from launch import bench


def test_train_step_bench_reports_mfu_memory_and_what_holds_it_back():
  r = bench._train_step_bench(bench._gpicl("small"), "gpicl_transformer_small", 1, profile=True)
  assert r["step_time_s"] > 0 and 0 < r["mfu"] < 2 and r["matmul_peak_n"] > 0
  assert r["flops_per_step"] > 0 and r["peak_rss_bytes"] > 0
  assert "profile" in r and isinstance(r["holds_back"], list)
  wall = r["profile"]["wall_seconds"]  # The split covers the profiled step's wall time.
  assert 0.999 * r["profile"]["wall_s"] <= sum(wall.values()) <= 1.05 * r["profile"]["wall_s"]
  assert wall["matmul"] > 0
  md = bench.to_markdown({"machine": {"cpu_model": "x", "cores": 2, "allocator": "a",
                                      "malloc_conf": ""}, "train_steps": [r], "other": {},
                          "jax": "0", "load_average_start": [0], "load_average_end": [0],
                          "wall_s": 1.0, "command": "c"})
  assert "gpicl_transformer_small" in md


def test_pool_size_compares_a_large_pool_with_digits():
  out = bench.pool_size(batch=32, rounds=1, pools=((64, 3000),))
  (p,) = out["pools"]
  assert p["large_rows"] == 3000 and p["digits_rows"] > 1000
  assert p["large_step_s"] > 0 and p["digits_step_s"] > 0


def test_wall_split_gives_a_moment_to_the_first_kind_running():
  from research import flops
  ms = 1_000_000
  # A matmul 0-10 ms beside a copy 5-15 ms, then elementwise 20-30 ms beside a copy 25-28.
  got = flops._wall_by_kind([(0, 10 * ms, "matmul"), (5 * ms, 15 * ms, "layout_copy"),
                             (20 * ms, 30 * ms, "other"), (25 * ms, 28 * ms, "layout_copy")])
  assert {k: round(v * 1e3, 6) for k, v in got.items()} == {
      "matmul": 10.0, "layout_copy": 8.0, "other": 7.0}
