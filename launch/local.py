"""N processes of one experiment on this machine, joined by `jax.distributed`
over 127.0.0.1 — for tests and workstations. Each process gets its own CPU
devices (or GPUs, via CUDA_VISIBLE_DEVICES when --gpus_per_process is set).

  python -m launch.local --num_processes 2 --local_devices 1 -- \
      --config experiments/gpicl/digits.py:tiny --workdir /tmp/run

Every argument after `--` goes to `launch.main`. Exits non-zero if any process
fails, and stops the others instead of leaving them waiting on a dead peer.
"""
from __future__ import annotations

from launch import allocator

allocator.ensure_jemalloc(__name__)  # First: may re-exec this process under jemalloc.

import argparse
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(main_args, num_processes, port, local_devices=None):
  base = [sys.executable, "-m", "launch.main", *main_args,
          f"--coordinator=127.0.0.1:{port}", f"--num_processes={num_processes}"]
  if local_devices:
    base.append(f"--local_devices={local_devices}")
  return [base + [f"--process_id={i}"] for i in range(num_processes)]


def launch(main_args, num_processes=2, local_devices=None, timeout=None, env=None,
           gpus_per_process=0) -> int:
  port = free_port()
  procs = []
  for i, cmd in enumerate(commands(main_args, num_processes, port, local_devices)):
    penv = dict(os.environ if env is None else env)
    if gpus_per_process:
      penv["CUDA_VISIBLE_DEVICES"] = ",".join(
          str(i * gpus_per_process + g) for g in range(gpus_per_process))
    procs.append(subprocess.Popen(cmd, env=penv))
  deadline = None if timeout is None else time.monotonic() + timeout
  code = 0
  while procs:
    for p in list(procs):
      rc = p.poll()
      if rc is None:
        continue
      procs.remove(p)
      if rc != 0 and code == 0:
        code = rc
        print(f"launch.local: process pid {p.pid} exited with {rc}; stopping the others",
              file=sys.stderr)
        for q in procs:
          q.terminate()
    if deadline is not None and time.monotonic() > deadline:
      for q in procs:
        q.kill()
      print("launch.local: timed out", file=sys.stderr)
      return 124
    time.sleep(0.2)
  return code


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--local_devices", type=int, default=None)
  parser.add_argument("--gpus_per_process", type=int, default=0)
  parser.add_argument("--timeout", type=float, default=None)
  parser.add_argument("main_args", nargs=argparse.REMAINDER)
  a = parser.parse_args()
  args = a.main_args[1:] if a.main_args[:1] == ["--"] else a.main_args
  sys.exit(launch(args, a.num_processes, a.local_devices, a.timeout,
                  gpus_per_process=a.gpus_per_process))


if __name__ == "__main__":
  main()
