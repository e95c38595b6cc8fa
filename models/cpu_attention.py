"""Fused float32 attention for XLA:CPU (`cpu_attention.cc`, through `jax.ffi`).

XLA:CPU runs attention at the GPICL paper's shapes (100 tokens, heads of 32) as small
batched dots, transposes and separate softmax passes over memory; the best XLA layout
measured 0.33 of the matmul peak (`research/gpicl/bench.py`). The kernel keeps each
(sequence, head)'s scores in cache, skips fully masked key ranges, and recomputes the
scores in the backward pass from the saved log-sum-exp.

The library is compiled on first use with the system C++ compiler (`CXX`, default
g++) for this CPU and cached under ~/.cache/research/kernels (RESEARCH_KERNEL_CACHE);
`available()` is False where that fails (no compiler, no FFI headers), and callers
fall back to the einsum form.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_attention.cc")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
_TARGETS = ("research_attention_forward", "research_attention_backward")


def _cpu_signature() -> str:
  """What `-march=native` compiles for: a library is reused only on the same CPU."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags", "Features", "CPU part"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor()


def _build() -> str:
  with open(_SOURCE, "rb") as f:
    source = f.read()
  cxx = os.environ.get("CXX", "g++")
  include = jax.ffi.include_dir()
  key = hashlib.sha256(b"\0".join([source, " ".join([cxx, *_FLAGS]).encode(), include.encode(),
                                   _cpu_signature().encode()])).hexdigest()[:16]
  cache = os.environ.get("RESEARCH_KERNEL_CACHE",
                         os.path.expanduser("~/.cache/research/kernels"))
  path = os.path.join(cache, f"cpu_attention-{key}.so")
  if os.path.exists(path):
    return path
  if shutil.which(cxx) is None:
    raise RuntimeError(f"no C++ compiler ({cxx}) to build {_SOURCE}")
  os.makedirs(cache, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
  os.close(fd)
  try:
    subprocess.run([cxx, *_FLAGS, "-isystem", include, _SOURCE, "-o", tmp], check=True,
                   capture_output=True, text=True)
    os.replace(tmp, path)  # Atomic: concurrent builders never load a half-written file.
  except subprocess.CalledProcessError as e:
    raise RuntimeError(f"building {_SOURCE} failed:\n{e.stderr[-2000:]}") from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


@functools.cache
def available() -> bool:
  """Builds (once per CPU and source) and registers the kernel; False if impossible."""
  try:
    lib = ctypes.cdll.LoadLibrary(_build())
  except (OSError, RuntimeError) as e:
    warnings.warn(f"fused CPU attention unavailable, using the einsum form: {e}")
    return False
  for target, symbol in zip(_TARGETS, ("ResearchAttentionForward", "ResearchAttentionBackward")):
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return True


# Longest sequence the kernel takes: each thread keeps up to four T × T float32 squares
# (backward), outside XLA's memory estimate; longer sequences take the einsum form,
# whose T × T logits the trainer's memory check then sees (16 GiB per thread at T 30000).
MAX_LENGTH = 2048


def supports(q, mask) -> bool:
  """Whether `attention` runs the kernel here: float32 on CPU, a [.., T, T] mask,
  T ≤ MAX_LENGTH."""
  return (q.dtype == jnp.float32 and jax.default_backend() == "cpu"
          and q.shape[-3] <= MAX_LENGTH
          and mask.shape[-2:] == (q.shape[-3], q.shape[-3]) and available())


def _flat_mask(mask, batch_shape):
  """[..., T, T] mask with leading dims broadcast to a prefix of the batch dims."""
  mask = mask.astype(bool)
  lead = mask.shape[:-2]
  while lead and lead[-1] == 1:  # [B or 1, 1, T, T]: the heads axis is always 1.
    lead = lead[:-1]
  mask = mask.reshape(*lead, *mask.shape[-2:])
  if lead != batch_shape[:len(lead)]:
    mask = jnp.broadcast_to(mask, (*batch_shape[:len(lead) or 0], *mask.shape[-2:]))
  return mask


def _forward(q, k, v, mask):
  *batch, length, heads, _ = q.shape
  out = (jax.ShapeDtypeStruct(q.shape, q.dtype),
         jax.ShapeDtypeStruct((*batch, heads, length), jnp.float32))
  return jax.ffi.ffi_call(_TARGETS[0], out, vmap_method="broadcast_all")(
      q, k, v, mask, scale=np.float32(q.shape[-1] ** -0.5))


@jax.custom_vjp
def _attention(q, k, v, mask):
  return _forward(q, k, v, mask)[0]


def _attention_fwd(q, k, v, mask):
  o, lse = _forward(q, k, v, mask)
  return o, (q, k, v, mask, o, lse)


def _attention_bwd(res, do):
  q, k, v, mask, o, lse = res
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call(_TARGETS[1], shapes, vmap_method="broadcast_all")(
      q, k, v, mask, o, lse, do, scale=np.float32(q.shape[-1] ** -0.5))
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q, k, v, mask):
  """softmax(q k^T / sqrt(D), masked) v for q, k, v [..., T, H, D] float32 and a bool
  mask [B or 1, 1, T, T] (True = may attend); the same values and gradients as the
  einsum form to float32 rounding. Check `supports(q, mask)` first."""
  if not available():
    raise RuntimeError("the fused CPU attention kernel could not be built (see the warning)")
  return _attention(q, k, v, _flat_mask(mask, q.shape[:-3]))
