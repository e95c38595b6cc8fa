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

import time

import jax
import jax.numpy as jnp


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function (XLA cost analysis; 0 if unknown)."""
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
