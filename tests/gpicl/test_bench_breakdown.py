"""The step-breakdown benchmark runs and accounts for its parts (tiny batch)."""
from models import cpu_attention
from research.gpicl import bench


def test_step_breakdown_reports_every_part():
  r = bench.bench_step_breakdown(batch=2, rounds=1)
  shares = [r[p]["share_of_parts_time"] for p in ("dense", "attention", "elementwise")]
  assert abs(sum(shares) - 1.0) < 1e-6 and min(shares) > 0
  # FLOP counts are exact formulas; the model's comes from XLA (einsum attention) and
  # must exceed its weight matmuls' alone.
  assert r["model"]["flops"] > 3 * 2 * 2 * 100 * 4 * (256 * 768 + 256 * 256 + 2 * 256 * 1024)
  assert 0 < r["dense"]["fraction_of_peak"] and r["elementwise"]["fraction_of_peak"] is None
  # Every attention implementation is timed against the same in-run peak; the part
  # called "attention" is what the model runs by default.
  impls = {"xla", "jax"} | ({"cpu_fused"} if cpu_attention.available() else set())
  assert set(r["attention_by_implementation"]) == impls
  assert all(v["fraction_of_peak"] > 0 and v["peak_n"] == 2048
             for v in r["attention_by_implementation"].values())
  assert r["attention"]["implementation"] == ("cpu_fused" if cpu_attention.available() else "xla")
  assert r["model"]["attention"] == r["attention"]["implementation"]
  # The kernel gradient of each dense shape, as the model's layers and as
  # lax.dot_general compute it, against the same kind of in-run peak.
  assert set(r["kernel_gradients"]) == {"256x256", "256x1024", "1024x256"}
  assert all(v[form]["fraction_of_peak"] > 0
             for v in r["kernel_gradients"].values() for form in ("model", "plain"))
