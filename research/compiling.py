"""XLA compiler options by what a program is for.

On CPU, compiling a small program is mostly LLVM's optimisation passes, and a small
model's run can be more compilation than training (the DKVB toy: 2.7 s of 4 s). A
program that runs once or a few times (state or key-store initialisation, a lookup per
stage, an evaluation of a small model) compiles at XLA's backend level 1 there. Measured
on the 2-core dev machine: the GPICL default's state initialisation compiles in 0.84 s
instead of 1.5 s, a DKVB toy model's in 0.13 s instead of 0.6 s, with bit-identical
results (level 0 is a little faster still but changes initial weights in the last bit:
no contraction into fused multiply-adds). Loops keep XLA's default (level 2) unless they
do little work in all (`SMALL_LOOP_FLOPS`): the DKVB toy's train step compiled no faster
at level 1 (within the noise), its key-init loop does (below). Other backends keep their
defaults. The test suite compiles everything at
level 1 (tests/conftest.py): its hundreds of tiny programs run a few steps each.
"""
from __future__ import annotations

import gc

import jax

from research import paths

OPT_LEVEL = "xla_backend_optimization_level"
# Programs that compile faster than this are not stored in the persistent cache. JAX's
# default, 1 s, would store none of a small model's programs: the DKVB toy's compile in
# 0.02–0.6 s each. Measured on its rerun (DKVB 1×400, 3 seeds, s per seed): 0.64 at a
# 0.1 s threshold, 0.46 at 0.03, 0.45 at 0 (which also stores every eager op's program).
MIN_CACHED_COMPILE_S = 0.03


def use_persistent_cache(path: str | None = None) -> str:
  """Compiled programs are stored in, and read back from, a cache on disk shared by every
  run, test and notebook of this user: `path`, else $RESEARCH_COMPILE_CACHE, else
  ~/.cache/research/jax_compile. Call before the first compilation; returns the path."""
  path = path or paths.user_cache("RESEARCH_COMPILE_CACHE", "jax_compile")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_S)
  return path


# A loop doing less work than this (~0.05-0.1 s on a 2-core CPU) costs more to compile
# than to run, so it compiles with `run_once()`. Measured on the DKVB toy's key
# initialisation (1000 EMA steps, ~2.4e8 FLOPs; 2-core dev machine, 3 compilations each):
# 1×400 keys 0.46-0.52 -> 0.34-0.38 s to compile, bit-identical keys; 20×20 0.51-0.57 ->
# 0.36-0.43 s, keys equal to 1e-6; the loop itself ran no slower (0.04-0.2 s).
SMALL_LOOP_FLOPS = 1e10


def run_once() -> dict[str, int] | None:
  """`compiler_options` for `jax.jit` of a program that runs once or a few times."""
  return {OPT_LEVEL: 1} if jax.default_backend() == "cpu" else None


def freeze_startup_objects() -> None:
  """Takes every object alive now (what the imports of jax, flax, optax, orbax, the
  experiments built) out of the cyclic garbage collector's full passes. Tracing and
  lowering allocate many short-lived objects, and each full pass walked the ~150k
  start-up objects again: in the DKVB toy's 1×400 model (3 seeds, compile cache off)
  63-65 collections took 0.13-0.15 s, 0.012-0.016 s after this call, and jaxpr tracing from
  0.32-0.43 s to 0.18-0.21 s (2-core dev machine). Objects made later are collected as
  before; a reference cycle that is already garbage now is never freed (once, at
  start-up). Entry points call it after their imports, before the run."""
  gc.freeze()
