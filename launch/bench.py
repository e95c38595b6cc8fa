"""Benchmarks: `make bench` -> bench/results.json and bench/results.md.

For each model family at a small and at the paper's size: step time, FLOPs per
step, achieved FLOP/s, MFU against a float32 2048³ matmul timed in the same
process alternately with the step (the median of per-round ratios, so it holds on a
shared, noisy machine), peak resident memory next to XLA's own estimate, and, for
the paper-size transformer, where the step's time goes (`research.flops.step_profile`)
and what holds it below the 0.8 target. Also: the pool-size benchmark (the same step
with a 60000- or 50000-row pool instead of digits' 1437), the allocator settings
(each in a fresh process), per-device parameter memory for each sharding strategy,
and the benchmarks other subsystems export. Nothing here is asserted: targets are
read off the JSON. Every result records the machine (CPU, cores, allocator and its
settings) and the load average before and after.

  python -m launch.bench --out bench/results.json [--only NAME,...] [--quick]
"""
from __future__ import annotations

from launch import allocator

allocator.ensure_jemalloc(__name__)  # First: may re-exec this process under jemalloc.

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MFU_TARGET = 0.8  # Issue 14: the paper-size GPICL step at >= 0.8 of the in-run matmul peak.


def _median(x):
  return float(np.median(np.asarray(x)))


def _model_flops(step, state, args, compiled, config):
  """FLOPs of one step, counting attention as the einsum form does: XLA cannot see
  inside the fused CPU attention kernel (an FFI call), so its FLOPs are added back
  from the lowered einsum-form step."""
  from research import flops as flops_lib
  from research import sharding, train
  counted = flops_lib.compiled_flops(compiled)
  if config.model.get("attention", "xla") == "xla":
    return counted, counted
  ref = config.copy_and_resolve_references()
  ref.unlock()
  ref.model.attention = "xla"
  ref.lock()
  _, ref_state, ref_step, ref_inputs = train.fresh_state_and_step(ref, sharding.make_mesh(ref.mesh))
  hidden = (flops_lib.compiled_flops(ref_step.lower(ref_state, *ref_inputs(0)))
            - flops_lib.compiled_flops(step.lower(state, *args)))
  return counted + max(hidden, 0.0), counted


def _train_step_bench(config_fn, name, repeats, profile=False):
  """Times the trainer's own jitted train step for a config, alternating with the peak."""
  from research import flops as flops_lib
  from research import sharding
  from research import train

  config = config_fn()
  mesh = sharding.make_mesh(config.mesh)
  exp, state, jitted, inputs = train.fresh_state_and_step(config, mesh)
  t0 = time.perf_counter()
  compiled = jitted.lower(state, *inputs(0)).compile()
  compile_s = time.perf_counter() - t0
  flops, flops_xla = _model_flops(jitted, state, inputs(0), compiled, config)
  memory = flops_lib.compiled_memory(compiled)
  need = 2 * memory.get("peak_estimate", 0)  # Up to 2x was seen: do not push others out.
  if jax.default_backend() == "cpu" and _available_bytes() < need:
    return {"name": name, "skipped": f"{_available_bytes() / 2**30:.1f} GiB free, "
                                     f"{need / 2**30:.1f} GiB needed"}
  box = {"state": state, "i": 0}

  def run():
    box["i"] += 1
    box["state"], metrics = compiled(box["state"], *inputs(box["i"]))
    return metrics

  jax.block_until_ready(run())  # Warm-up.
  allocator.purge()  # What earlier benchmarks freed is not this one's memory.
  rss_before = flops_lib.rss_bytes()
  flops_lib.reset_peak_rss()
  timed = flops_lib.time_against_peak(run, flops=flops, rounds=repeats)
  r = {"name": name, "step_time_s": timed["seconds"], "flops_per_step": flops,
       "flops_per_step_xla_counted": flops_xla, "flops_per_s": flops / timed["seconds"],
       "matmul_peak_flops": timed["peak_flops"], "matmul_peak_n": timed["peak_n"],
       "mfu": timed["fraction_of_peak"], "compile_s": compile_s,
       "num_params": exp.info.get("num_params"), "peak_memory_bytes": memory.get("peak_estimate"),
       "memory": memory, "rss_before_bytes": rss_before,
       "peak_rss_bytes": flops_lib.peak_rss_bytes(), "batch_size": config.train.batch_size,
       "attention": config.model.get("attention")}
  if profile and jax.default_backend() == "cpu":  # Op-time attribution: a CPU notion.
    p = flops_lib.step_profile(compiled, run)
    # Eigen's matmuls run as pool tasks outside their ops' events (research/flops.py).
    matmul_s = p["wall_seconds"]["matmul"] + p["wall_seconds"]["pool_task"]
    p["matmul_fraction_of_peak"] = (p["matmul_flops"] / matmul_s / r["matmul_peak_flops"]
                                    if matmul_s else None)
    r["profile"] = p
    r["holds_back"] = holds_back(r)
  return r


def holds_back(r) -> list[str]:
  """What keeps a step below MFU_TARGET, from its profile: the step's wall time split by
  what runs (`research.flops.step_profile`), and the matmuls' own speed."""
  p = r.get("profile")
  if not p or "wall_share" not in p or r["mfu"] >= MFU_TARGET:  # Or a profile of before.
    return []
  share = dict(p["wall_share"])
  share["matmul"] += share.pop("pool_task")  # Eigen's matmuls, outside their events.
  names = {"matmul": "matmuls", "other": "other XLA ops (elementwise, reductions, RNG, sort)",
           "custom_kernel": "custom kernels (fused attention)",
           "layout_copy": "layout copies/transposes", "idle": "nothing"}
  rest = sorted(((v, k) for k, v in share.items() if k != "matmul"), reverse=True)
  lines = [f"MFU {r['mfu']:.2f} < {MFU_TARGET}: {r['flops_per_step'] / 1e9:.0f} GFLOP, of which "
           f"{p['matmul_flops'] / 1e9:.0f} in matmuls. Wall time of the profiled step "
           f"({p['wall_s']:.2f} s) by what runs: " + ", ".join(
               f"{names[k]} {v:.0%}" for k, v in sorted(share.items(), key=lambda kv: -kv[1]))
           + (f"; the matmuls run at {p['matmul_fraction_of_peak']:.2f} of the peak while they "
              f"run (at most {p['matmul_fraction_of_peak'] * r['flops_per_step'] / p['matmul_flops']:.2f}"
              f" MFU if nothing else took time)" if p.get("matmul_fraction_of_peak") else "") + ".",
           f"Holding it back: {names[rest[0][1]]} ({rest[0][0]:.0%} of the wall time), then "
           + ", ".join(f"{names[k]} ({v:.0%})" for v, k in rest[1:]) + "; the target needs the "
           f"step {1 - r['mfu'] / MFU_TARGET:.0%} shorter."]
  if p["wall_s"] > 1.2 * r["step_time_s"]:
    lines.append(f"The profiled step took {p['wall_s'] / r['step_time_s']:.1f}x the timed one: "
                 f"its split may not be the timed steps'.")
  return lines


def _gpicl(size, learner="transformer", d_model=None, dtype=None, batch=None, attention=None):
  def make():
    from experiments.gpicl import digits
    from research.gpicl import defaults
    c = digits.get_config(f"learner={learner}")
    c.unlock()
    c.tasks.sequences_per_task = 1
    if size == "paper":
      # Paper scale (Kirsch et al.): model 256, 4 layers, 8 heads x 32, 512 sequences of 100,
      # 196-dim inputs (14x14). Digits padded to 196 dims: the data do not change the cost
      # (gpicl_pool_size measures that).
      c.model = defaults.get_config(learner, "paper", "paper").model
      c.data.update(input_dim=196, seq_len=100)
      c.train.batch_size = 512
      c.tasks.sequences_per_task = 32  # The paper's batch: 16 tasks × 32 sequences.
    if batch:
      c.train.batch_size = batch
    if attention and "attention" in c.model:
      c.model.attention = attention
    if d_model:  # Accelerator sizes: width d_model, heads of 64, bf16, fused attention.
      c.model.update(d_model=d_model, num_heads=d_model // 64, head_dim=64, dtype=dtype,
                     attention="jax")
    c.eval.datasets = ()
    c.lock()
    return c
  return make


# name: (config, timed steps, profile). The paper-size transformer uses the fused CPU
# attention ("auto": the einsum form where the kernel cannot run).
BENCHES = {
    "gpicl_transformer_small": (_gpicl("small"), 10, False),
    "gpicl_transformer_paper_b128": (_gpicl("paper", batch=128, attention="auto"), 5, True),
    "gpicl_transformer_paper": (_gpicl("paper", attention="auto"), 3, True),
    "gpicl_lstm_small": (_gpicl("small", "lstm"), 10, False),
    "gpicl_lstm_paper": (_gpicl("paper", "lstm"), 3, False),
}
# Only on an accelerator (CPU bf16 is emulated and slower than float32 there).
ACCELERATOR_BENCHES = {
    "gpicl_transformer_d512_bf16": (_gpicl("paper", d_model=512, dtype="bfloat16"), 10, False),
    "gpicl_transformer_d1024_bf16": (_gpicl("paper", d_model=1024, dtype="bfloat16"), 10, False),
}


# ----------------------------------------------------------------------------
# Pool size: the same paper-size step, a small and a large data pool, steps alternated.
# ----------------------------------------------------------------------------

POOLS = ((196, 60000), (784, 60000), (3072, 50000))  # MNIST 14x14, MNIST 28x28, CIFAR-10.


def pool_size(batch: int = 128, rounds: int = 5, pools=POOLS) -> dict:
  """Step time with digits' pool vs a large random pool of the same width (the
  sampler's cost must not grow with the pool: issue 14, within 5 %)."""
  from research import sharding
  from research import train
  allocator.purge()
  out = {"batch": batch, "rounds": rounds, "pools": []}
  for dim, rows in pools:
    config = _gpicl("paper", batch=batch, attention="auto")()
    config.unlock()
    config.data.input_dim = dim
    config.lock()
    mesh = sharding.make_mesh(config.mesh)
    _, state, jitted, inputs = train.fresh_state_and_step(config, mesh)
    frozen, batch_rows, keys = inputs(0)
    small = frozen["train"]
    rng = np.random.default_rng(0)
    large = (sharding.put_replicated(rng.standard_normal((rows, dim), np.float32), mesh),
             sharding.put_replicated(rng.integers(0, 10, rows).astype(np.int32), mesh))
    steps = {}
    for key, pool in (("digits", small), ("large", large)):
      fz = dict(frozen, train=pool)
      steps[key] = (jitted.lower(state, fz, batch_rows, keys).compile(), fz)
    times = {"digits": [], "large": []}
    box = {"state": state}
    for r in range(rounds + 1):  # The first round warms up.
      for key, (compiled, fz) in steps.items():
        t0 = time.perf_counter()
        box["state"], m = compiled(box["state"], fz, inputs(r + 1)[1], keys)
        jax.block_until_ready(m)
        if r:
          times[key].append(time.perf_counter() - t0)
    d, big = _median(times["digits"]), _median(times["large"])
    out["pools"].append({"input_dim": dim, "digits_rows": int(small[0].shape[0]),
                         "large_rows": rows, "digits_step_s": d, "large_step_s": big,
                         "large_over_digits": big / d})
    print(f"pool {rows}x{dim} vs digits {small[0].shape[0]}x{dim}: {big:.3f} vs {d:.3f} s/step "
          f"({big / d:.3f})", flush=True)
  return out


# ----------------------------------------------------------------------------
# Allocator settings: each in a fresh process (an allocator is chosen at start-up).
# ----------------------------------------------------------------------------

ALLOCATOR_SETTINGS = {  # name: MALLOC_CONF ("" = jemalloc's defaults), None = glibc.
    "glibc": None,
    "jemalloc defaults": "",
    "jemalloc decay off": "dirty_decay_ms:-1,muzzy_decay_ms:-1",
    "jemalloc 10 s decay, bg thread": "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0",
    "jemalloc 10 s decay, bg thread, no >8 MiB arena":
        "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0,oversize_threshold:0",
    "jemalloc decay off, one arena (chosen)": allocator.MALLOC_CONF,
}
CHOSEN = "jemalloc decay off, one arena (chosen)"


def _allocator_child(batch: int) -> None:
  """In a fresh process: the paper-size step, run on command from stdin so that the
  parent can alternate the settings' steps ("steps N": N back-to-back steps, the last
  one timed; "done": peak RSS over the timed steps, as JSON)."""
  from research import flops as flops_lib
  from research import sharding, train
  config = _gpicl("paper", batch=batch, attention="auto")()
  _, state, jitted, inputs = train.fresh_state_and_step(config, sharding.make_mesh(config.mesh))
  compiled = jitted.lower(state, *inputs(0)).compile()
  state, m = compiled(state, *inputs(0))
  jax.block_until_ready(m)
  peak_compile = flops_lib.peak_rss_bytes()
  flops_lib.reset_peak_rss()
  print("READY", flush=True)
  i, times = 0, []
  for line in sys.stdin:
    if line.startswith("steps"):
      for _ in range(int(line.split()[1])):
        i += 1
        t0 = time.perf_counter()
        state, m = compiled(state, *inputs(i))
        jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
      print(f"TIME {times[-1]}", flush=True)
    else:
      break
  print("RESULT" + json.dumps({
      "step_time_s": _median(times), "times": times,
      "peak_rss_steps_bytes": flops_lib.peak_rss_bytes(), "rss_end_bytes": flops_lib.rss_bytes(),
      "peak_rss_compile_bytes": peak_compile,
      "xla_peak_estimate_bytes": flops_lib.compiled_memory(compiled).get("peak_estimate"),
      **flops_lib.machine_info()}), flush=True)


def _available_bytes() -> int:
  with open("/proc/meminfo") as f:
    return next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))


def allocator_settings(batch: int = 128, rounds: int = 4, groups=None) -> dict:
  """Step time and peak RSS of the paper-size step under each allocator setting.

  One process per setting (the allocator is chosen at start-up). The settings of a
  group are alive at once and their steps alternated round by round, so that they
  see the same load; each turn runs two back-to-back steps and times the second
  (steady state, as in training). Groups keep the memory of the processes alive at
  once within what the machine has free; each group holds the chosen setting, so
  every setting is compared with it in the same group (`vs_chosen`).
  """
  groups = groups or (("glibc", "jemalloc defaults", CHOSEN),
                      ("jemalloc decay off", "jemalloc 10 s decay, bg thread", CHOSEN),
                      ("jemalloc 10 s decay, bg thread, no >8 MiB arena", CHOSEN))
  out = {"batch": batch, "rounds": rounds, "runs": {}, "groups": []}
  allocator.purge()
  for group in groups:
    need = len(group) * (2.5 if batch <= 128 else 9.0) * 2**30
    if _available_bytes() < need + 2 * 2**30:
      out["groups"].append({"settings": group, "skipped": f"{_available_bytes() / 2**30:.1f} GiB "
                            f"free, {need / 2**30:.0f} GiB needed"})
      print(f"allocator settings {group}: skipped, {out['groups'][-1]['skipped']}", flush=True)
      continue
    runs = _allocator_group(batch, rounds, group)
    for name, r in runs.items():
      if len(runs) > 1 and "error" not in r and "error" not in runs.get(CHOSEN, {"error": 1}):
        r["vs_chosen"] = r["step_time_s"] / runs[CHOSEN]["step_time_s"]
      key = name if name not in out["runs"] else f"{name} (group {len(out['groups']) + 1})"
      out["runs"][key] = r
      if "error" not in r:
        print(f"{key}: {r['step_time_s']:.3f} s/step ({r.get('vs_chosen', float('nan')):.2f}x the chosen), "
              f"peak RSS {r['peak_rss_steps_bytes'] / 2**30:.2f} GiB (XLA estimate "
              f"{r['xla_peak_estimate_bytes'] / 2**30:.2f} GiB)", flush=True)
    out["groups"].append({"settings": group})
  return out


def _allocator_group(batch, rounds, names) -> dict:
  lib = allocator.library()
  children = {}
  for name in names:
    conf = ALLOCATOR_SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env[allocator.OFF] = "1"  # The child must not re-exec: it runs exactly this setting.
    if conf is not None:
      if lib is None:
        continue
      env["LD_PRELOAD"] = lib
      if conf:
        env["MALLOC_CONF"] = conf
    children[name] = subprocess.Popen(
        [sys.executable, "-c", f"from launch import bench; bench._allocator_child({batch})"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)

  def reply(proc, prefix):
    for line in proc.stdout:
      if line.startswith(prefix):
        return line[len(prefix):].strip()
    raise RuntimeError(f"benchmark child exited ({proc.wait()})")

  runs = {}
  try:
    for proc in children.values():
      reply(proc, "READY")
    for _ in range(rounds):
      for proc in children.values():
        proc.stdin.write("steps 2\n")
        proc.stdin.flush()
        reply(proc, "TIME")
    for name, proc in children.items():
      proc.stdin.write("done\n")
      proc.stdin.flush()
      runs[name] = json.loads(reply(proc, "RESULT"))
  except RuntimeError as e:
    runs = {name: {"error": str(e)} for name in children}
  finally:
    for proc in children.values():
      if proc.poll() is None:
        proc.kill()
      proc.wait()
  return runs


def allocator_settings_b512(rounds: int = 3) -> dict:
  """The same at the paper's batch of 512, where decay off held 2x XLA's estimate;
  one setting at a time (each may need ~2x the estimate)."""
  return allocator_settings(512, rounds, groups=((CHOSEN,), ("jemalloc decay off",),
                                                 ("jemalloc 10 s decay, bg thread",), ("glibc",)))


def _optional_benches():
  """Benchmarks that other subsystems export as `bench_*() -> dict`."""
  out = {}
  for module, fn in (("research.dkvb.bench", "bench_lookup"),
                     ("research.llm.bench", "bench_prefix_cache"),
                     ("research.dkvb.bench", "bench_toy"),
                     ("research.gpicl.bench", "bench_step_breakdown"),
                     ("research.mend.bench", "bench_stage2_breakdown")):
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
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
  for line in r.stdout.splitlines():
    if line.startswith("RESULT"):
      return json.loads(line[6:])
  return {"error": r.stderr[-2000:]}


def to_markdown(results) -> str:
  from research import stats
  m = results["machine"]
  gib = lambda b: f"{(b or 0) / 2**30:.2f}"
  lines = [f"Machine: {m['cpu_model']}, {m['cores']} cores, allocator {m['allocator']} "
           f"({m['malloc_conf'] or 'defaults'}); jax {results['jax']}; load average "
           f"{results['load_average_start'][0]:.1f} at the start, {results['load_average_end'][0]:.1f} "
           f"at the end (1-min); {results['wall_s'] / 60:.1f} min in all. Command: "
           f"`{results['command']}`.", "",
           "| benchmark | batch | step (s) | GFLOP/step | GFLOP/s | in-run f32 peak (GFLOP/s, n) "
           "| MFU | RSS before → peak over the steps (GiB) | XLA estimate (GiB) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results["train_steps"]:
    lines.append(f"| {r['name']} | {r['batch_size']} | {r['step_time_s']:.3f} | "
                 f"{r['flops_per_step'] / 1e9:.1f} | {r['flops_per_s'] / 1e9:.1f} | "
                 f"{r['matmul_peak_flops'] / 1e9:.0f}, {r['matmul_peak_n']} | {r['mfu']:.2f} | "
                 f"{gib(r['rss_before_bytes'])} → {gib(r['peak_rss_bytes'])} | "
                 f"{gib(r['peak_memory_bytes'])} |")
  for r in results.get("skipped", []):
    lines.append(f"| {r['name']} | skipped: {r['skipped']} | | | | | | | |")
  for r in results["train_steps"]:
    if r.get("holds_back"):
      lines += ["", f"**{r['name']}**:", "```", *r["holds_back"], "```"]
  pools = results["other"].get("gpicl_pool_size", {}).get("pools")
  if pools:
    lines += ["", "| pool (paper-size step, batch "
              f"{results['other']['gpicl_pool_size']['batch']}) | step (s) | digits pool, same width "
              "(s) | ratio |", "|---|---|---|---|"]
    for p in pools:
      lines.append(f"| {p['large_rows']} x {p['input_dim']} | {p['large_step_s']:.3f} | "
                   f"{p['digits_step_s']:.3f} ({p['digits_rows']} rows) | {p['large_over_digits']:.3f} |")
  for key in ("allocator_settings", "allocator_settings_b512"):
    alloc = results["other"].get(key, {}).get("runs")
    if alloc:
      lines += ["", f"| allocator (paper-size step, batch {results['other'][key]['batch']}; a "
                "process each, alternated within a group) | step (s) | vs the chosen setting, "
                "same group | peak RSS over the steps (GiB) | XLA estimate (GiB) |",
                "|---|---|---|---|---|"]
      for name, a in alloc.items():
        if "error" not in a:
          vs = f"{a['vs_chosen']:.2f}" if "vs_chosen" in a else "alone"
          lines.append(f"| {name} | {a['step_time_s']:.3f} | {vs} | "
                       f"{gib(a['peak_rss_steps_bytes'])} | {gib(a['xla_peak_estimate_bytes'])} |")
      for g in results["other"][key].get("groups", []):
        if "skipped" in g:
          lines.append(f"| {', '.join(g['settings'])} | skipped: {g['skipped']} | | | |")
  toy = results["other"].get("dkvb_toy", {})
  if "models" in toy:  # An entry of before lists no models: shown as JSON below.
    n = toy["num_seeds"]
    lines += ["", f"| DKVB toy ({n} seeds vmapped, key init + 4 × 1000 steps; warm process) "
              f"| s per seed, cold | CPU s per seed, cold (all threads) | compilations (s) "
              f"| s per seed, persistent cache | cache reads of compilations "
              f"| final accuracy ± se (n = {n} seeds) |", "|---|---|---|---|---|---|---|"]
    for name in toy["models"]:
      k = f"toy_{name}"
      cached = (f"{toy[k + '_cached_s_per_seed']:.2f} | {toy[k + '_cached_cache_hits']} of "
                f"{toy[k + '_cached_compiles']}" if f"{k}_cached_s" in toy else "— | —")
      cpu = f"{toy[k + '_cpu_s_per_seed']:.2f}" if f"{k}_cpu_s_per_seed" in toy else "—"
      acc = stats.fmt(toy[k + "_final_acc"], toy.get(k + "_final_acc_se", float("nan")), digits=3)
      lines.append(f"| {name} | {toy[k + '_s_per_seed']:.2f} | {cpu} | {toy[k + '_compiles']} "
                   f"({toy[k + '_compile_s']:.2f}) | {cached} | {acc} |")
  grads = results["other"].get("gpicl_step_breakdown", {}).get("kernel_gradients")
  if grads:
    lines += ["", "| dense kernel gradient x^T·g (K×N, breakdown batch) | as the model's layers "
              "(fraction of peak) | lax.dot_general |", "|---|---|---|"]
    for shape, v in grads.items():
      lines.append(f"| {shape} | {v['model']['fraction_of_peak']:.2f} | "
                   f"{v['plain']['fraction_of_peak']:.2f} |")
  mem = results.get("param_memory_by_strategy", {})
  if mem and "error" not in mem:
    lines += ["", "| strategy (paper-size GPICL transformer, 8 fake devices) | params+Adam bytes per device | total |",
              "|---|---|---|"]
    for k, v in mem.items():
      lines.append(f"| {k} {v['mesh']} | {v['bytes_per_device'] / 2**20:.2f} MiB | "
                   f"{v['bytes_total'] / 2**20:.2f} MiB |")
  for k, v in results.get("other", {}).items():
    if k not in ("gpicl_pool_size", "allocator_settings", "allocator_settings_b512") and not (
        k == "dkvb_toy" and "models" in v):
      lines += ["", f"**{k}**: `{json.dumps(v, default=str)[:1500]}`"]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="bench/results.json")
  parser.add_argument("--only", default="", help="comma-separated benchmark names")
  parser.add_argument("--quick", action="store_true", help="small sizes only, fewer repeats")
  parser.add_argument("--render", action="store_true",
                      help="rewrite the markdown (and what holds steps back) from --out's JSON")
  args = parser.parse_args()
  if args.render:
    with open(args.out) as f:
      results = json.load(f)
    for r in results["train_steps"]:
      r["holds_back"] = holds_back(r)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2, default=str)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
      f.write(to_markdown(results) + "\n")
    return
  from research import compiling
  from research import flops as flops_lib
  compiling.freeze_startup_objects()  # As launch.main does before a run.

  t_start = time.perf_counter()
  only = set(filter(None, args.only.split(",")))
  results = {"command": " ".join(["python -m launch.bench", *sys.argv[1:]]),
             "machine": flops_lib.machine_info(), "load_average_start": os.getloadavg(),
             "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
             "platform": platform.platform(), "jax": jax.__version__,
             "train_steps": [], "other": {}}
  peak = flops_lib.matmul_peak(n=flops_lib.PEAK_N, repeats=5)
  results.update(matmul_peak_flops_f32=peak, matmul_peak_n=flops_lib.PEAK_N)
  m = results["machine"]
  print(f"{m['cpu_model']}, {m['cores']} cores, {m['allocator']} ({m['malloc_conf']}); "
        f"f32 {flops_lib.PEAK_N}³ matmul {peak / 1e9:.1f} GFLOP/s; load {os.getloadavg()[0]:.1f}",
        flush=True)
  benches = dict(BENCHES)
  if jax.default_backend() != "cpu":
    benches.update(ACCELERATOR_BENCHES)
    results["matmul_peak_flops_bf16"] = flops_lib.matmul_peak(n=8192, dtype=jax.numpy.bfloat16)
  for name, (config_fn, repeats, profile) in benches.items():
    if (only and name not in only) or (args.quick and "paper" in name):
      continue
    r = _train_step_bench(config_fn, name, 2 if args.quick else repeats, profile)
    if "skipped" in r:
      print(f"{name}: skipped, {r['skipped']}", flush=True)
      results["skipped"] = results.get("skipped", []) + [r]
      continue
    if name.endswith("bf16"):
      r["matmul_peak_flops"] = results["matmul_peak_flops_bf16"]
      r["mfu"] = r["flops_per_s"] / r["matmul_peak_flops"]
    results["train_steps"].append(r)
    print(f"{name}: {r['step_time_s']:.3f} s/step, {r['flops_per_s'] / 1e9:.1f} GFLOP/s, "
          f"MFU {r['mfu']:.2f}, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    for line in r.get("holds_back", []):
      print(line, flush=True)
  if not only:
    results["param_memory_by_strategy"] = param_memory_by_strategy()
  extra = {"gpicl_pool_size": pool_size, "allocator_settings": allocator_settings,
           "allocator_settings_b512": allocator_settings_b512, **_optional_benches()}
  for name, fn in extra.items():
    if args.quick or (only and name not in only):
      continue
    try:
      results["other"][name] = fn()
    except Exception as e:  # A broken optional bench must not hide the others.
      results["other"][name] = {"error": f"{type(e).__name__}: {e}"}
  results["load_average_end"] = os.getloadavg()
  results["wall_s"] = time.perf_counter() - t_start
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2, default=str)
  md = to_markdown(results)
  with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
    f.write(md + "\n")
  print(md)


if __name__ == "__main__":
  main()
