"""Benchmarks: `make bench` -> bench/results.json and bench/results.md.

For each model family at a small and at the paper's size: step time, FLOPs per
step (XLA cost analysis), achieved FLOP/s, MFU against a float32 matmul peak
measured in the same run, and peak memory (XLA memory analysis). Every ratio is
measured in one process, so it holds on a shared, noisy machine. Nothing here is
asserted: targets are read off the JSON.

  python -m launch.bench --out bench/results.json [--only gpicl_transformer_small] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax


def _train_step_bench(config_fn, name, repeats):
  """Times the trainer's own jitted train step for a config."""
  from research import flops as flops_lib
  from research import sharding
  from research import train

  config = config_fn()
  mesh = sharding.make_mesh(config.mesh)
  exp, state, jitted, inputs = train.fresh_state_and_step(config, mesh)
  t0 = time.perf_counter()
  compiled = jitted.lower(state, *inputs(0)).compile()
  compile_s = time.perf_counter() - t0
  flops = flops_lib.compiled_flops(compiled)
  memory = flops_lib.compiled_memory(compiled)
  state, _ = compiled(state, *inputs(0))  # Warm-up.
  jax.block_until_ready(state)
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    state, m = compiled(state, *inputs(i + 1))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  times.sort()
  step_s = times[len(times) // 2]
  return {"name": name, "step_time_s": step_s, "flops_per_step": flops,
          "flops_per_s": flops / step_s, "compile_s": compile_s,
          "num_params": exp.info.get("num_params"), "peak_memory_bytes": memory.get("peak_estimate"),
          "memory": memory, "batch_size": config.train.batch_size}


def _gpicl(size, learner="transformer", d_model=None, dtype=None):
  def make():
    from experiments.gpicl import digits
    from research.gpicl import defaults
    c = digits.get_config(f"learner={learner}")
    c.unlock()
    c.tasks.sequences_per_task = 1
    if size == "paper":
      # Paper scale (Kirsch et al.): model 256, 4 layers, 8 heads x 32, 512 sequences of 100,
      # 196-dim inputs (14x14). Digits padded to 196 dims: the data do not change the cost.
      c.model = defaults.get_config(learner, "paper", "paper").model
      c.data.update(input_dim=196, seq_len=100)
      c.train.batch_size = 512
      c.tasks.sequences_per_task = 32  # The paper's batch: 16 tasks × 32 sequences.
    if d_model:  # Accelerator sizes: width d_model, heads of 64, bf16, fused attention.
      c.model.update(d_model=d_model, num_heads=d_model // 64, head_dim=64, dtype=dtype,
                     attention="jax")
    c.eval.datasets = ()
    c.lock()
    return c
  return make


BENCHES = {
    "gpicl_transformer_small": (_gpicl("small"), 10),
    "gpicl_transformer_paper": (_gpicl("paper"), 3),
    "gpicl_lstm_small": (_gpicl("small", "lstm"), 10),
    "gpicl_lstm_paper": (_gpicl("paper", "lstm"), 3),
}
# Only on an accelerator (CPU bf16 is emulated and slower than float32 there).
ACCELERATOR_BENCHES = {
    "gpicl_transformer_d512_bf16": (_gpicl("paper", d_model=512, dtype="bfloat16"), 10),
    "gpicl_transformer_d1024_bf16": (_gpicl("paper", d_model=1024, dtype="bfloat16"), 10),
}


def _optional_benches():
  """Benchmarks that other subsystems export as `bench_*() -> dict`."""
  out = {}
  for module, fn in (("research.dkvb.bench", "bench_lookup"),
                     ("research.llm.bench", "bench_prefix_cache"),
                     ("research.gpicl.bench", "bench_step_breakdown")):
    try:
      mod = __import__(module, fromlist=[fn])
      out[f"{module.split('.')[1]}_{fn[6:]}"] = getattr(mod, fn)
    except (ImportError, AttributeError):
      pass
  return out


def param_memory_by_strategy() -> dict:
  """Per-device parameter + optimizer bytes for DP / FSDP / TP on 8 fake devices.

  Runs in a subprocess: fake devices must be configured before JAX starts.
  """
  code = r"""
import json, jax
jax.config.update("jax_num_cpu_devices", 8)
import flax.linen as nn
from experiments.gpicl import digits
from research import optim, sharding, train
from research.gpicl import defaults
out = {}
for rules, mesh_axes in (("dp", (("data", 8), ("model", 1))), ("fsdp", (("data", 8), ("model", 1))),
                         ("tp", (("data", 4), ("model", 2))), ("fsdp_tp", (("data", 4), ("model", 2)))):
  c = digits.get_config(); c.unlock()
  c.model = defaults.get_config("transformer", "paper", "paper").model
  c.data.update(input_dim=196, seq_len=100); c.eval.datasets = (); c.mesh = mesh_axes
  c.sharding.rules = rules; c.lock()
  mesh = sharding.make_mesh(c.mesh)
  exp = train.build_experiment(c, mesh); tx = optim.make_optimizer(c)
  def init(k):
    p = exp.init_params(k); return {"params": p, "opt_state": tx.init(p)}
  abstract = jax.eval_shape(init, jax.random.key(0))
  sh = sharding.tree_shardings(abstract, sharding.rules_from_config(rules), mesh)
  state = jax.jit(lambda k: nn.unbox(init(k)), out_shardings=sh)(jax.random.key(0))
  out[rules] = {"mesh": dict(mesh.shape), "bytes_per_device": sharding.bytes_per_device(state),
                "bytes_total": sum(x.nbytes for x in jax.tree.leaves(state))}
print("RESULT" + json.dumps(out))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for line in r.stdout.splitlines():
    if line.startswith("RESULT"):
      return json.loads(line[6:])
  return {"error": r.stderr[-2000:]}


def to_markdown(results) -> str:
  lines = ["| benchmark | step (s) | GFLOP/step | GFLOP/s | MFU vs measured f32 peak | peak mem (MiB) |",
           "|---|---|---|---|---|---|"]
  for r in results["train_steps"]:
    lines.append(f"| {r['name']} | {r['step_time_s']:.3f} | {r['flops_per_step'] / 1e9:.2f} | "
                 f"{r['flops_per_s'] / 1e9:.1f} | {r['mfu']:.2f} | "
                 f"{(r['peak_memory_bytes'] or 0) / 2**20:.0f} |")
  mem = results.get("param_memory_by_strategy", {})
  if mem and "error" not in mem:
    lines += ["", "| strategy (paper-size GPICL transformer, 8 fake devices) | params+Adam bytes per device | total |",
              "|---|---|---|"]
    for k, v in mem.items():
      lines.append(f"| {k} {v['mesh']} | {v['bytes_per_device'] / 2**20:.2f} MiB | "
                   f"{v['bytes_total'] / 2**20:.2f} MiB |")
  for k, v in results.get("other", {}).items():
    lines += ["", f"**{k}**: `{json.dumps(v, default=str)[:600]}`"]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="bench/results.json")
  parser.add_argument("--only", default="", help="comma-separated benchmark names")
  parser.add_argument("--quick", action="store_true", help="small sizes only, fewer repeats")
  args = parser.parse_args()
  from research import flops as flops_lib

  only = set(filter(None, args.only.split(",")))
  peak = flops_lib.matmul_peak(n=2048, repeats=5)
  results = {"device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
             "platform": platform.platform(), "jax": jax.__version__,
             "matmul_peak_flops_f32": peak, "train_steps": [], "other": {}}
  print(f"measured f32 matmul peak: {peak / 1e9:.1f} GFLOP/s on {results['device_kind']}", flush=True)
  benches = dict(BENCHES)
  if jax.default_backend() != "cpu":
    benches.update(ACCELERATOR_BENCHES)
    results["matmul_peak_flops_bf16"] = flops_lib.matmul_peak(n=8192, dtype=jax.numpy.bfloat16)
  for name, (config_fn, repeats) in benches.items():
    if (only and name not in only) or (args.quick and "paper" in name):
      continue
    r = _train_step_bench(config_fn, name, 2 if args.quick else repeats)
    if name.endswith("bf16"):
      r["matmul_peak_flops"] = results["matmul_peak_flops_bf16"]
    else:  # Peak again right after: the machine's load may have changed meanwhile.
      r["matmul_peak_flops"] = max(peak, flops_lib.matmul_peak(n=2048, repeats=3))
    r["mfu"] = r["flops_per_s"] / r["matmul_peak_flops"]
    results["train_steps"].append(r)
    print(f"{name}: {r['step_time_s']:.3f} s/step, {r['flops_per_s'] / 1e9:.1f} GFLOP/s, "
          f"MFU {r['mfu']:.2f}", flush=True)
  if not only:
    results["param_memory_by_strategy"] = param_memory_by_strategy()
  for name, fn in _optional_benches().items():
    if args.quick or (only and name not in only):
      continue
    try:
      results["other"][name] = fn()
    except Exception as e:  # A broken optional bench must not hide the others.
      results["other"][name] = {"error": f"{type(e).__name__}: {e}"}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2, default=str)
  md = to_markdown(results)
  with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
    f.write(md + "\n")
  print(md)


if __name__ == "__main__":
  main()
