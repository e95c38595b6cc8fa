"""Benchmark of the DKVB nearest-key search and key initialisation at the paper's size.

`bench_lookup()` times, in one process, for 256 heads × 4096 keys × 14 dims at
batch 256: the tiled top-1 lookup (`models.kv_bottleneck.nearest_keys`), the
same search with all heads in one tile per key chunk (no head groups, as
before tiling), and the naive one (all B×C×J distances at once, as
`torch.cdist` + argmin does); then EMA key-initialisation steps (projection of
a 2048-d embedding + lookup + EMA update + dead-key replacement) inside the
jitted scan, projected to the paper's 1950 steps. `bench_key_init()` runs that
whole initialisation end to end. Ratios are measured in the same run; nothing
is asserted on time.

  python -m research.dkvb.bench [--key_init] [--update bench/results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from models import kv_bottleneck as kvb
from research.dkvb import keys as keys_lib

PAPER = dict(batch=256, num_heads=256, num_keys=4096, dim_key=14, dim_in=2048,
             key_init_examples=50000, key_init_epochs=10)


def _time(fn, *args, repeats: int = 3) -> tuple[float, float]:
  """Best (wall, process CPU) seconds of one call. On a shared machine the CPU
  time (all threads of this process) is the steadier number."""
  jax.block_until_ready(fn(*args))  # Compile + warm up.
  best, best_cpu = float("inf"), float("inf")
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
    best_cpu = min(best_cpu, time.process_time() - c)
  return best, best_cpu


def naive_nearest(q, keys):
  """Unchunked reference: the full (B, C, J) distance tensor, then argmin."""
  d = jnp.sum(q * q, -1)[..., None] - 2 * jnp.einsum("bcd,cjd->bcj", q, keys) \
      + jnp.sum(keys * keys, -1)[None]
  return jnp.argmin(d, -1)


def _ema_setup(rng, n: int, p: dict):
  """Random keys, projection and an (n, D) pool of Gaussian 'embeddings'."""
  r = jax.random.split(rng, 3)
  keys = jax.random.uniform(r[0], (p["num_heads"], p["num_keys"], p["dim_key"]))
  proj = kvb.random_projection(r[1], p["num_heads"], p["dim_in"], p["dim_key"])
  pool = jax.random.normal(r[2], (n, p["dim_in"]))
  to_q = lambda x: jnp.einsum("bd,cdk->bck", x, proj)
  return keys, pool, to_q


def bench_lookup(chunk_size: int = 1024, ema_steps: int = 20, repeats: int = 3,
                 **size) -> dict[str, float]:
  """Lookup timings (seconds) and ratios, and the key initialisation projected
  to the paper's 10 epochs over 50k examples (`key_init_projected_s`: measured
  per-step time × steps + the one-off projection of the pool, compilation not
  included; `bench_key_init` measures it end to end).

  The EMA step is the marginal cost of a step inside the jitted scan: a run of
  2·`ema_steps` steps minus one of `ema_steps` (compilation and set-up cancel).
  Its first steps replace few dead keys, later ones many; the work is the same.
  """
  p = dict(PAPER, **size)
  b, c, j, d = p["batch"], p["num_heads"], p["num_keys"], p["dim_key"]
  r = jax.random.split(jax.random.key(0), 2)
  q = jax.random.normal(r[0], (b, c, d))
  keys = jax.random.normal(r[1], (c, j, d))
  tiled = jax.jit(lambda q, k: kvb.nearest_keys(q, k, k=1, chunk_size=chunk_size)[0])
  one_tile = jax.jit(lambda q, k: kvb.nearest_keys(q, k, k=1, chunk_size=chunk_size,
                                                   tile_bytes=1 << 62)[0])
  naive = jax.jit(naive_nearest)
  t_tiled, c_tiled = _time(tiled, q, keys, repeats=repeats)
  t_one, c_one = _time(one_tile, q, keys, repeats=repeats)
  t_naive, c_naive = _time(naive, q, keys, repeats=repeats)
  want = naive(q, keys)
  same = bool(jnp.all(tiled(q, keys)[..., 0] == want) & jnp.all(one_tile(q, keys)[..., 0] == want))

  # A pool of ema_steps / 2 batches: both runs pass over it more than once, so
  # both project it once and reuse the queries, as the paper-size run does.
  ema_keys, pool, to_q = _ema_setup(jax.random.key(1), ema_steps // 2 * b, p)
  def init(steps):
    return keys_lib.ema_init_keys(jax.random.key(2), pool, to_q, ema_keys, num_steps=steps,
                                  batch_size=b, chunk_size=chunk_size)
  init(2)  # Warm-up: first-call costs that are not the scan's.
  (t1, c1), (t2, c2) = (_time(init, n, repeats=1) for n in (ema_steps, 2 * ema_steps))
  per_step, per_step_cpu = (t2 - t1) / ema_steps, (c2 - c1) / ema_steps
  project = jax.jit(lambda x: keys_lib._project_pool(to_q, x, b))
  t_proj, c_proj = _time(project, pool, repeats=1)
  per_example = t_proj / pool.shape[0]
  steps = keys_lib.ema_num_steps(p["key_init_examples"], b, p["key_init_epochs"])
  return {
      "lookup_tiled_s": t_tiled,
      "lookup_one_tile_s": t_one,
      "lookup_naive_s": t_naive,
      "lookup_tiled_cpu_s": c_tiled,
      "lookup_one_tile_cpu_s": c_one,
      "lookup_naive_cpu_s": c_naive,
      "lookup_speedup_vs_one_tile": t_one / t_tiled,
      "lookup_speedup_vs_naive": t_naive / t_tiled,
      "lookup_matches_naive": same,
      "lookup_naive_distance_bytes": b * c * j * 4,
      "lookup_tile_bytes": kvb.CPU_TILE_BYTES,
      "ema_step_s": per_step,
      "ema_step_cpu_s": per_step_cpu,
      "ema_step_over_lookup": per_step / t_tiled,
      "pool_projection_s_per_example": per_example,
      "key_init_projected_s": per_step * steps + per_example * p["key_init_examples"],
      "key_init_projected_steps": steps,
  }


def bench_key_init(chunk_size: int = 1024, **size) -> dict[str, float]:
  """The paper's key initialisation end to end: 10 EMA epochs (1950 steps of
  batch 256) over 50k × 2048 unlabelled embeddings (Gaussian: the cost does not
  depend on the values), 256 heads × 4096 keys × 14 dims, compilation included."""
  p = dict(PAPER, **size)
  keys, pool, to_q = _ema_setup(jax.random.key(1), p["key_init_examples"], p)
  steps = keys_lib.ema_num_steps(p["key_init_examples"], p["batch"], p["key_init_epochs"])
  jax.block_until_ready(pool)
  load_start = os.getloadavg()[0]  # Other jobs on a shared machine stretch the wall time.
  t, c = time.perf_counter(), time.process_time()
  codebook, state = keys_lib.ema_init_keys(
      jax.random.key(2), pool, to_q, keys, num_steps=steps, batch_size=p["batch"],
      chunk_size=chunk_size, return_state=True)
  jax.block_until_ready(codebook)
  wall, cpu = time.perf_counter() - t, time.process_time() - c
  return {"key_init_e2e_s": wall, "key_init_e2e_cpu_s": cpu, "key_init_e2e_steps": steps,
          "key_init_e2e_dead_keys_replaced": int(state.num_replaced),
          "key_init_e2e_load_avg_1m": [load_start, os.getloadavg()[0]]}


class CompileCounter:
  """Counts XLA compilations (and their seconds) while active: a loop that
  recompiles shows up as a count that grows with the loop. A program read from the
  persistent compile cache counts too (its seconds are the read's); `cache_hits`
  says how many were."""

  def __init__(self):
    self.count, self.seconds, self.cache_hits = 0, 0.0, 0

  def _listen(self, event, duration, **kwargs):
    del kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      self.count += 1
      self.seconds += duration

  def _hit(self, event, **kwargs):
    del kwargs
    if event == "/jax/compilation_cache/cache_hits":
      self.cache_hits += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    jax.monitoring.register_event_listener(self._hit)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._listen)
    jax.monitoring.unregister_event_listener(self._hit)


TOY_MODELS = ("dkvb_1x400", "dkvb_20x20", "linear", "mlp")


def bench_toy(num_seeds: int = 3, max_compiles_per_model: int = 20, arg: str | None = None,
              cached: bool = True) -> dict[str, Any]:
  """End-to-end Fig. 2 toy (`experiments/dkvb/toy2d.py`): per model, key init + 4
  stages × 1000 full-batch steps + evaluations for `num_seeds` seeds vmapped in one
  step, compilation included, and the number of XLA compilations.

  Protocol, in one process: first a warm-up run of a model no timed run shares a program
  with (1 seed, a 3-head × 7-key DKVB, 20 steps per stage) pays what a process pays once
  (imports, the trainer's matmul peak, the kernels of eager RNG ops); then every model
  with the persistent compile cache off (`toy_<model>_s`: every compilation of the model
  paid); then, with `cached`, every model once more after a pass that filled a fresh
  persistent cache (launch.main's settings: programs compiling under
  `compiling.MIN_CACHED_COMPILE_S` are not stored) and the in-memory caches cleared
  (`toy_<model>_cached_s`: a rerun's cost; `_cache_hits` of its compilations are reads).

  Fails loudly when a loop recompiles: a model may compile at most
  `max_compiles_per_model` times in the first pass (measured: 8 to 11 for a DKVB model —
  bottleneck init, key init, lookup, state init, the train call, evaluation, the two
  replica slices and eager ops the warm-up did not meet, for 4 stages and 3 seeds
  vmapped; a per-stage or per-seed recompile adds at least 3). `arg`:
  the config's variant (":tiny" in the test that keeps this bench from rotting)."""
  import tempfile
  from jax.experimental.compilation_cache import compilation_cache
  from research import compiling
  from research import config as config_lib
  from research.dkvb import experiment
  mod = config_lib.load_module(config_lib.experiments_file("dkvb", "toy2d.py"))
  settings = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
              "jax_persistent_cache_min_compile_time_secs")
  saved = {k: getattr(jax.config, k) for k in settings}
  out: dict[str, Any] = {"num_seeds": num_seeds, "models": list(TOY_MODELS)}

  def one(name, seeds, workdir, warmup=False, check=True):
    cfg = mod.get_config(arg)
    cfg.unlock()
    cfg.num_seeds, cfg.only, cfg.stream.save_grid = seeds, name, False
    if warmup:
      cfg.models[name].update(num_heads=3, num_keys=7)
      cfg.models[name].key_init.num_steps = 20
      cfg.stream.epochs_per_task = 20
    with CompileCounter() as counter:
      t0, cpu0 = time.perf_counter(), time.process_time()
      res = experiment.run(cfg, workdir)
      seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    if check and not warmup and counter.count > max_compiles_per_model:
      raise RuntimeError(f"DKVB toy {name}: {counter.count} XLA compilations for one model "
                         f"(limit {max_compiles_per_model}): a loop recompiles")
    return res, seconds, cpu_s, counter

  def each_model(workdir, suffix):
    for name in TOY_MODELS:
      # After `jax.clear_caches` the eager ops the warm-up paid for count again: the
      # recompile check is the first pass's.
      res, seconds, cpu_s, counter = one(name, num_seeds, os.path.join(workdir, name + suffix),
                                  check=not suffix)
      if suffix != "_fill":
        key = f"toy_{name}{suffix}"
        out[f"{key}_s"], out[f"{key}_s_per_seed"] = seconds, seconds / num_seeds
        out[f"{key}_compiles"], out[f"{key}_compile_s"] = counter.count, counter.seconds
        # Every thread's CPU time (XLA compiles and runs on both cores): on c cores a run
        # takes at least cpu_s / c of wall time however its programs overlap.
        out[f"{key}_cpu_s_per_seed"] = cpu_s / num_seeds
        if suffix:
          out[f"{key}_cache_hits"] = counter.cache_hits
        out[f"{key}_final_acc"] = res[name]["final_acc_mean"]
        out[f"{key}_final_acc_se"] = res[name]["final_acc_se"]

  try:
    jax.config.update("jax_enable_compilation_cache", False)
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      one("dkvb_20x20", 1, os.path.join(workdir, "warmup"), warmup=True)
      out["toy_warmup_s"] = time.perf_counter() - t0
      each_model(workdir, "")
      if cached:
        jax.config.update("jax_enable_compilation_cache", True)
        # launch.main's settings, in a fresh directory (opened again there).
        compiling.use_persistent_cache(os.path.join(workdir, "compile_cache"))
        compilation_cache.reset_cache()
        for suffix in ("_fill", "_cached"):
          jax.clear_caches()  # In-memory executables: the next pass compiles or reads.
          each_model(workdir, suffix)
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)
    compilation_cache.reset_cache()
  return out


def _update(path: str, name: str, result: dict) -> None:
  """Replace `path`'s `other[name]` (the `make bench` JSON) by `result`, and its
  one-line entry in the Markdown next to it, leaving every other entry alone."""
  with open(path) as f:
    results = json.load(f)
  results.setdefault("other", {})[name] = result
  with open(path, "w") as f:
    json.dump(results, f, indent=2, default=str)
  md = os.path.splitext(path)[0] + ".md"
  if os.path.exists(md):
    line = f"**{name}**: `{json.dumps(results['other'][name], default=str)[:600]}`"
    with open(md) as f:
      lines = [line if l.startswith(f"**{name}**:") else l for l in f.read().split("\n")]
    with open(md, "w") as f:
      f.write("\n".join(lines))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--key_init", action="store_true",
                      help="also run the full-size key initialisation end to end (minutes)")
  parser.add_argument("--toy", action="store_true", help="also time the Fig. 2 toy end to end")
  parser.add_argument("--update", default="", help="merge into this bench JSON (dkvb_lookup)")
  args = parser.parse_args()
  out = bench_lookup()
  if args.key_init:
    out.update(bench_key_init())
  if args.toy:
    out.update(bench_toy())
  print(json.dumps(out, indent=2))
  if args.update:
    _update(args.update, "dkvb_lookup", out)


if __name__ == "__main__":
  main()
