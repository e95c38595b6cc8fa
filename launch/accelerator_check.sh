#!/usr/bin/env bash
# One prepared accelerator check (issue 14, item 7): on a machine with a GPU,
#   bash launch/accelerator_check.sh OUT_DIR
# installs the CUDA build of jax from the registry if this venv lacks it, then runs
# the GPU-relevant tests, the bf16 bench presets (MFU against the device's bf16 peak),
# the paper-size GPICL step at batch 512 and the MEND stage-2 step with SmolLM2 at
# batch 32 (launch/accelerator_check.py), writing OUT_DIR/accelerator_check.{json,md};
# under 8 minutes. `--dry-run` does the same at tiny sizes on CPU, installs nothing
# (tests/test_accelerator_check.py runs it in `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; shift; fi
OUT="${1:?usage: launch/accelerator_check.sh [--dry-run] OUT_DIR}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { make install >/dev/null && PY=.venv/bin/python; }
mkdir -p "$OUT"
if [ -z "$DRY" ]; then
  if ! "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
    command -v nvidia-smi >/dev/null || { echo "no GPU found (nvidia-smi missing)"; exit 2; }
    # The CUDA plugin must match the installed jaxlib exactly; CUDA 12 wheels bring
    # their own libraries (override with JAX_CUDA_EXTRA=cuda13).
    VER=$("$PY" -c 'import jaxlib; print(jaxlib.__version__)')
    echo "installing jax[${JAX_CUDA_EXTRA:-cuda12}]==$VER"
    "$PY" -m pip install -q "jax[${JAX_CUDA_EXTRA:-cuda12}]==$VER"
    "$PY" -c 'import jax, sys; print(jax.devices()); sys.exit(jax.default_backend() != "gpu")'
  fi
else
  echo "dry run: CPU, tiny sizes, nothing installed"
fi
export JAX_PLATFORMS="${JAX_PLATFORMS-}"
exec "$PY" -m launch.accelerator_check $DRY "$OUT"
