"""One prepared accelerator check: what a GPU machine measures, in one run.

  bash launch/accelerator_check.sh OUT_DIR            # on the GPU machine (< 8 min)
  bash launch/accelerator_check.sh --dry-run OUT_DIR  # CPU, tiny sizes (tests run it)

Sections, each in its own process with its own time limit, so one failure or hang
is recorded and the others still run:
  tests      GPU-relevant tests on the device: attention implementations (cuDNN through
             jax.nn.dot_product_attention), bfloat16, sharding of the train step
  bench      `launch.bench` presets gpicl_transformer_d512_bf16 / _d1024_bf16 (MFU
             against the device's measured bf16 matmul peak) and the paper-size GPICL
             step at batch 512 (MFU against the f32 peak)
  mend       the MEND stage-2 step (experiments/mend/finetune.py, SmolLM2-135M,
             batch 32) built by the trainer: steps/s and the hours 30k steps take
Writes OUT_DIR/accelerator_check.json and OUT_DIR/accelerator_check.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seconds per section: 7.2 min together, leaving the CUDA install (when jax lacks it)
# under a minute of the 8.
LIMITS = {"environment": 30, "tests": 90, "bench": 160, "mend": 150}
PAPER_MEND_STEPS = 30_000


def _run(cmd, limit, env=None):
  t0 = time.perf_counter()
  try:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                       env={**os.environ, **(env or {})})
    code, out, err = r.returncode, r.stdout, r.stderr
  except subprocess.TimeoutExpired as e:
    code, out, err = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(
        e.stdout, bytes) else (e.stdout or ""), f"killed after {limit} s"
  return {"returncode": code, "seconds": time.perf_counter() - t0,
          "stdout_tail": out[-3000:], "stderr_tail": (err or "")[-3000:]}


def _result_line(section):
  for line in reversed(section["stdout_tail"].splitlines()):
    if line.startswith("RESULT"):
      return json.loads(line[6:])
  return None


def environment_section() -> dict:
  code = ("import json, jax; from research import flops; d = jax.devices()[0]; "
          "print('RESULT' + json.dumps({'jax': jax.__version__, 'backend': jax.default_backend(), "
          "'devices': len(jax.devices()), 'device_kind': d.device_kind, **flops.machine_info()}))")
  s = _run([sys.executable, "-c", code], LIMITS["environment"])
  return {**s, "result": _result_line(s)}


def tests_section(dry_run: bool) -> dict:
  # On the device: tests/test_accelerator.py (cuDNN attention, the model's attention
  # implementations in f32 and bf16, the trainer's step sharded over the local devices)
  # and the transformer's own tests (bf16, causality, every attention name).
  if dry_run:
    selection = ["tests/test_accelerator.py", "tests/gpicl/test_transformer.py", "-k",
                 "accelerator or bfloat16 or names_and_fallbacks"]
    env = {}
  else:
    selection = ["tests/test_accelerator.py", "tests/gpicl/test_transformer.py"]
    env = {"JAX_PLATFORMS": ""}  # conftest defaults to cpu; here the device is the point.
  s = _run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
            *selection], LIMITS["tests"], env)
  last = [l for l in s["stdout_tail"].splitlines() if " passed" in l or " failed" in l or
          " error" in l]
  return {**s, "summary": last[-1] if last else None}


def bench_section(out_dir: str, dry_run: bool) -> dict:
  out = os.path.join(out_dir, "bench.json")
  if dry_run:  # The small preset stands in: the accelerator presets need a device.
    cmd = [sys.executable, "-m", "launch.bench", "--only", "gpicl_transformer_small", "--out", out]
  else:
    cmd = [sys.executable, "-m", "launch.bench", "--only",
           "gpicl_transformer_d512_bf16,gpicl_transformer_d1024_bf16,gpicl_transformer_paper",
           "--out", out]
  s = _run(cmd, LIMITS["bench"])
  rows = []
  if os.path.exists(out):
    with open(out) as f:
      res = json.load(f)
    rows = [{k: r.get(k) for k in ("name", "batch_size", "step_time_s", "flops_per_step",
                                   "flops_per_s", "matmul_peak_flops", "mfu",
                                   "peak_memory_bytes")} for r in res["train_steps"]]
    s["matmul_peak_flops_bf16"] = res.get("matmul_peak_flops_bf16")
  return {**s, "train_steps": rows}


def mend_child(dry_run: bool, steps: int) -> None:
  """In its own process: the MEND stage-2 train step, built by the trainer."""
  import jax
  from experiments.mend import finetune
  from research import flops, sharding, train
  config = finetune.get_config("tiny" if dry_run else None)
  config.unlock()
  config.train.batch_size = 2 if dry_run else 32
  config.data.suite_dir = os.environ.get("RESEARCH_SUITE_DIR", config.data.suite_dir)
  config.lock()
  t0 = time.perf_counter()
  _, state, step, inputs = train.fresh_state_and_step(config, sharding.make_mesh(config.mesh))
  build_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = step.lower(state, *inputs(0)).compile()
  compile_s = time.perf_counter() - t0
  state, m = compiled(state, *inputs(0))
  jax.block_until_ready(m)
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, *inputs(i + 1))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = sorted(times)[len(times) // 2]
  print("RESULT" + json.dumps({
      "model": config.model.source, "batch_size": config.train.batch_size, "build_s": build_s,
      "compile_s": compile_s, "step_time_s": step_s, "steps_per_s": 1.0 / step_s,
      "flops_per_step": flops.compiled_flops(compiled),
      f"hours_for_{PAPER_MEND_STEPS}_steps": PAPER_MEND_STEPS * step_s / 3600,
      "loss": float(m["loss"])}))


def mend_section(out_dir: str, dry_run: bool) -> dict:
  code = f"from launch import accelerator_check as a; a.mend_child({dry_run}, {3 if dry_run else 10})"
  s = _run([sys.executable, "-c", code], LIMITS["mend"],
           {"RESEARCH_SUITE_DIR": os.path.join(out_dir, "icl_suite")})
  return {**s, "result": _result_line(s)}


def to_markdown(report) -> str:
  env = report["environment"].get("result") or {}
  lines = [f"Accelerator check ({'dry run, CPU, tiny sizes' if report['dry_run'] else 'device'}): "
           f"{env.get('device_kind', '?')} x{env.get('devices', '?')}, backend {env.get('backend', '?')}, "
           f"jax {env.get('jax', '?')}; host {env.get('cpu_model', '?')}, {env.get('cores', '?')} cores; "
           f"{report['wall_s'] / 60:.1f} min.", "",
           f"Tests: {report['tests'].get('summary') or report['tests']['returncode']}", "",
           "| step | batch | s/step | GFLOP/step | TFLOP/s | peak TFLOP/s | MFU |",
           "|---|---|---|---|---|---|---|"]
  for r in report["bench"].get("train_steps", []):
    lines.append(f"| {r['name']} | {r['batch_size']} | {r['step_time_s']:.4f} | "
                 f"{r['flops_per_step'] / 1e9:.1f} | {r['flops_per_s'] / 1e12:.2f} | "
                 f"{(r['matmul_peak_flops'] or 0) / 1e12:.1f} | {r['mfu']:.2f} |")
  mend = report["mend"].get("result")
  if mend:
    lines.append(f"| mend_finetune ({mend['model']}) | {mend['batch_size']} | "
                 f"{mend['step_time_s']:.4f} | {mend['flops_per_step'] / 1e9:.1f} | "
                 f"{mend['flops_per_step'] / mend['step_time_s'] / 1e12:.2f} | | |")
    lines += ["", f"MEND stage 2: {mend['steps_per_s']:.2f} steps/s; the paper's "
              f"{PAPER_MEND_STEPS} steps take {mend[f'hours_for_{PAPER_MEND_STEPS}_steps']:.1f} h."]
  failed = [k for k in ("environment", "tests", "bench", "mend") if report[k]["returncode"] != 0]
  if failed:
    lines += ["", "Sections that failed (see the JSON for their output): " + ", ".join(failed)]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("out_dir")
  parser.add_argument("--dry-run", action="store_true")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  t0 = time.perf_counter()
  report = {"dry_run": args.dry_run, "limits_s": LIMITS}
  for name, fn in (("environment", environment_section),
                   ("tests", lambda: tests_section(args.dry_run)),
                   ("bench", lambda: bench_section(args.out_dir, args.dry_run)),
                   ("mend", lambda: mend_section(args.out_dir, args.dry_run))):
    report[name] = fn()
    print(f"{name}: exit {report[name]['returncode']} in {report[name]['seconds']:.0f} s", flush=True)
  report["wall_s"] = time.perf_counter() - t0
  with open(os.path.join(args.out_dir, "accelerator_check.json"), "w") as f:
    json.dump(report, f, indent=2, default=str)
  md = to_markdown(report)
  with open(os.path.join(args.out_dir, "accelerator_check.md"), "w") as f:
    f.write(md + "\n")
  print(md)
  return 0 if all(report[k]["returncode"] == 0 for k in ("environment", "tests", "bench", "mend")) else 1


if __name__ == "__main__":
  sys.exit(main())
