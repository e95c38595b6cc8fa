"""XLA compiler options by what a program is for.

On CPU, compiling a small program is mostly LLVM's optimisation passes, and a small
model's run can be more compilation than training (the DKVB toy: 2.7 s of 4 s). A
program that runs once or a few times (state or key-store initialisation, a lookup per
stage, an evaluation of a small model) compiles at XLA's backend level 1 there. Measured
on the 2-core dev machine: the GPICL default's state initialisation compiles in 0.84 s
instead of 1.5 s, a DKVB toy model's in 0.13 s instead of 0.6 s, with bit-identical
results (level 0 is a little faster still but changes initial weights in the last bit:
no contraction into fused multiply-adds). Loops keep XLA's default (level 2): the DKVB
toy's train step compiled no faster at level 1 (within the noise), its key-init loop ran
2× slower. Other backends keep their defaults.
"""
from __future__ import annotations

import jax

OPT_LEVEL = "xla_backend_optimization_level"


def run_once() -> dict[str, int] | None:
  """`compiler_options` for `jax.jit` of a program that runs once or a few times."""
  return {OPT_LEVEL: 1} if jax.default_backend() == "cpu" else None
