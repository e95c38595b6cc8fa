"""FLOPs from XLA's cost analysis and a matmul peak measured on this machine.

Model FLOP utilisation (MFU) = achieved FLOP/s / peak FLOP/s, both measured in the
same process, so the ratio survives a noisy, shared machine.

Caveat: XLA's cost analysis counts the body of a loop (`lax.scan`, `nn.scan`)
once, not once per iteration. Models that stack layers with `nn.scan`
(`models/llm.py`) therefore report ~num_layers× too few FLOPs from a compiled
train step; `LMConfig.for_cost_analysis()` unrolls the layers for counting, and
the LLM benchmarks and the ICL harness use it. The GPICL models unroll their
layers in Python and are counted exactly.
"""
from __future__ import annotations

import collections
import glob
import os
import platform
import re
import resource
import tempfile
import time

import jax
import jax.numpy as jnp

PEAK_N = 2048  # Matrix size of the reference matmul every MFU in the benchmarks is against.


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function (XLA cost analysis; 0 if unknown). A
  `Lowered` works too: its program counted before XLA optimises it."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # Some backends do not implement it.
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def compiled_memory(compiled) -> dict:
  """Peak-memory terms from XLA's memory analysis (bytes per device)."""
  try:
    m = compiled.memory_analysis()
  except Exception:
    return {}
  if m is None:
    return {}
  out = {k: int(getattr(m, k + "_size_in_bytes", 0)) for k in
         ("argument", "output", "temp", "generated_code", "alias")}
  out["peak_estimate"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def time_fn(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time (s) of `fn(*args)`, blocking on the result."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  times.sort()
  return times[len(times) // 2]


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5, device=None) -> float:
  """Measured FLOP/s of an n×n×n matmul on one device: the practical peak."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  b = jax.device_put(jnp.ones((n, n), dtype), device)
  f = jax.jit(lambda a, b: a @ b)
  return 2.0 * n**3 / time_fn(f, a, b, repeats=repeats)


def time_against_peak(fn, *args, flops: float, rounds: int = 3, repeats: int = 1,
                      n: int = PEAK_N) -> dict:
  """Times `fn(*args)` and the n³ f32 matmul alternately, `rounds` times.

  On a shared machine the load changes between two measurements; alternating them
  and taking the median of the per-round ratios keeps the fraction of peak honest.
  Returns seconds (median), the peak (median, FLOP/s, with n) and the fraction.
  """
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(fn(*args))
  seconds, peaks, fractions = [], [], []
  for _ in range(rounds):
    peaks.append(2.0 * n**3 / time_fn(matmul, a, a, repeats=3))
    seconds.append(time_fn(fn, *args, repeats=repeats, warmup=0))
    fractions.append(flops / seconds[-1] / peaks[-1] if flops else 0.0)
  med = lambda x: sorted(x)[len(x) // 2]
  return {"seconds": med(seconds), "peak_flops": med(peaks), "peak_n": n,
          "fraction_of_peak": med(fractions) if flops else None}


# ----------------------------------------------------------------------------
# The machine a measurement ran on.
# ----------------------------------------------------------------------------

def allocator() -> str:
  """The malloc this process runs on: jemalloc / tcmalloc / mimalloc (preloaded or
  linked, as seen in /proc/self/maps) or glibc."""
  try:
    with open("/proc/self/maps") as f:
      maps = f.read()
  except OSError:
    return "unknown"
  for name in ("jemalloc", "tcmalloc", "mimalloc"):
    if f"lib{name}" in maps:
      return name
  return "glibc" if platform.system() == "Linux" else "unknown"


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("model name", "Model", "cpu model")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info() -> dict:
  """CPU model, cores this process may use, allocator and its settings."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count()
  return {"cpu_model": cpu_model(), "cores": cores, "allocator": allocator(),
          "malloc_conf": os.environ.get("MALLOC_CONF", "")}


def peak_rss_bytes() -> int:
  """High-water resident memory of this process (since the last `reset_peak_rss`)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
  """Restarts the high-water mark at the current RSS (Linux >= 4.0); False if not possible."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


# ----------------------------------------------------------------------------
# Where a compiled step spends its time: a profiler trace of one call, by kind of op.
# ----------------------------------------------------------------------------

def _dot_fusions(hlo: str) -> tuple[set, dict]:
  """Names of the instructions that run a matmul, and each one's FLOPs (optimized HLO)."""
  bodies = {m.group(1): m.group(2) for m in
            re.finditer(r"^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M)}

  def dot_flops(text, defs):
    total = 0
    for d in re.finditer(r"= f32\[([\d,]*)\]\S* dot\((%[\w.\-]+), [^)]*\),.*?"
                         r"lhs_contracting_dims=\{([\d,]*)\}", text):
      lhs = re.search(re.escape(d.group(2)) + r" = f32\[([\d,]*)\]", defs)
      if not lhs:
        continue
      dims = [int(x) for x in lhs.group(1).split(",") if x]
      size = 1
      for x in [int(x) for x in d.group(1).split(",") if x]:
        size *= x
      for c in d.group(3).split(","):
        size *= dims[int(c)] if c else 1
      total += 2 * size
    return total

  fused = set(re.findall(r"fusion\([^\n]*?calls=(%[\w.\-]+)", hlo))
  unfused = "\n".join(b for name, b in bodies.items() if name not in fused)
  names, flops = set(), {}
  for m in re.finditer(r"%([\w.\-]+) = [^\n]*? (fusion|dot)\([^\n]*", unfused):
    name, line = m.group(1), m.group(0)
    if m.group(2) == "dot":
      names.add(name)
      flops[name] = dot_flops(line, hlo)
      continue
    called = re.search(r"calls=(%[\w.\-]+)", line)
    body = bodies.get(called.group(1), "") if called else ""
    if " dot(" in body or " convolution(" in body:
      names.add(name)
      flops[name] = dot_flops(body, body)
  return names, flops


# Wall-time priority order; pool_task: a pool thread's work outside every op's event.
KINDS = ("matmul", "custom_kernel", "layout_copy", "other", "pool_task")


def step_profile(compiled, run, threads: int | None = None) -> dict:
  """Calls `run()` (one call of `compiled`, returning its outputs; it owns any donated
  state) three times, the last under the profiler; the time of its ops by kind.

  Kinds: matmul (dots and the fusions around them), custom_kernel (FFI calls such as
  the fused attention), layout_copy (copies and transposes XLA inserts between ops),
  other (elementwise, reductions, random numbers, sorts), idle.

  `wall_seconds`: the step's wall time split by what runs — a moment counts for the
  first kind in `KINDS` with an op running then, idle when none is. It sums to the wall
  time, so it says what a shorter step must cut. (XLA's Eigen matmuls run on pool
  threads outside their op's event: such a dot's time counts for whatever runs beside
  it, mostly another matmul.) `thread_seconds`: the ops' event durations summed over
  threads, and idle the rest of threads × wall; ops run concurrently on XLA's threads,
  so a dot sharing the cores with another shows twice its solo time there.
  `matmul_flops` counts the matmuls' FLOPs in the optimized HLO.
  """
  hlo = compiled.as_text()
  dots, dot_flops = _dot_fusions(hlo)
  threads = threads or len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as tmp:
    for _ in range(2):  # The second settles what the first left (allocator, caches).
      jax.block_until_ready(run())
    with jax.profiler.trace(tmp):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      wall = time.perf_counter() - t0
    files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(files[0])
  ops = set(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = ", hlo, re.M))
  busy = collections.Counter()
  intervals: list[tuple[int, int, str]] = []
  for plane in data.planes:
    for line in plane.lines:
      region = None
      for ev in line.events:
        name = ev.name
        # Work a pool thread does outside any op's event: Eigen's matmuls, dispatched
        # in their op's (short) event and computed in such regions.
        if name == "ThreadpoolListener::StartRegion":
          region = ev.start_ns
        elif name == "ThreadpoolListener::StopRegion" and region is not None:
          intervals.append((region, ev.start_ns, "pool_task"))
          region = None
        if name not in ops:
          continue
        if name in dots:
          kind = "matmul"
        elif name.startswith(("ffi_call", "custom-call", "custom_call")):
          kind = "custom_kernel"
        elif "copy" in name or "transpose" in name:
          kind = "layout_copy"
        else:
          kind = "other"
        busy[kind] += ev.duration_ns / 1e9
        intervals.append((ev.start_ns, ev.start_ns + ev.duration_ns, kind))
  total = threads * wall
  busy["idle"] = max(0.0, total - sum(busy.values()))
  by_kind = _wall_by_kind(intervals)
  by_kind["idle"] = max(0.0, wall - sum(by_kind.values()))
  out = {"wall_s": wall, "threads": threads,
         "wall_seconds": {k: by_kind.get(k, 0.0) for k in KINDS + ("idle",)},
         "thread_seconds": {k: busy.get(k, 0.0) for k in KINDS[:-1] + ("idle",)},
         "matmul_flops": float(sum(dot_flops.values()))}
  out["wall_share"] = {k: v / wall for k, v in out["wall_seconds"].items()}
  return out


def _wall_by_kind(intervals) -> dict[str, float]:
  """Seconds of the timeline covered by each kind, a moment going to the first kind
  in `KINDS` that has an interval (start_ns, end_ns, kind) open then."""
  edges = sorted([(a, 1, k) for a, _, k in intervals] + [(b, -1, k) for _, b, k in intervals])
  open_ = collections.Counter()
  out = collections.Counter()
  last = None
  for t, delta, kind in edges:
    if last is not None and t > last:
      running = next((k for k in KINDS if open_[k] > 0), None)
      if running:
        out[running] += (t - last) / 1e9
    open_[kind] += delta
    last = t
  return dict(out)
