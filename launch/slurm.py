"""SLURM: writes (and with --submit, submits) an sbatch script that runs one
`launch.main` process per GPU with `srun`; `jax.distributed.initialize()` reads
the SLURM environment (--distributed), so no addresses are passed by hand.

  python -m launch.slurm --nodes 2 --gpus_per_node 8 --partition gpu --time 04:00:00 \
      --script runs/mnist/job.sbatch [--submit] -- \
      --config experiments/gpicl/mnist_paper.py --workdir runs/mnist
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys


def sbatch_script(main_args, *, nodes=1, gpus_per_node=1, partition=None, time="04:00:00",
                  job_name="research", cpus_per_task=8, output=None, setup="", python="python"):
  """The sbatch script text: one task per GPU, each a JAX process."""
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name={job_name}",
           f"#SBATCH --nodes={nodes}",
           f"#SBATCH --ntasks-per-node={gpus_per_node}",
           f"#SBATCH --gpus-per-node={gpus_per_node}",
           f"#SBATCH --cpus-per-task={cpus_per_task}",
           f"#SBATCH --time={time}"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  if output:
    lines.append(f"#SBATCH --output={output}")
  lines += ["", "set -euo pipefail"]
  if setup:
    lines.append(setup)
  lines += [
      "# One process per GPU; jax.distributed.initialize() finds the coordinator,",
      "# process count and index in SLURM's environment.",
      "srun --kill-on-bad-exit=1 " + shlex.join(
          [python, "-m", "launch.main", "--distributed", *main_args]),
      ""]
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus_per_node", type=int, default=1)
  p.add_argument("--partition", default=None)
  p.add_argument("--time", default="04:00:00")
  p.add_argument("--job_name", default="research")
  p.add_argument("--cpus_per_task", type=int, default=8)
  p.add_argument("--setup", default="", help="shell line run first, e.g. 'source .venv/bin/activate'")
  p.add_argument("--script", default="job.sbatch", help="where to write the sbatch script")
  p.add_argument("--submit", action="store_true", help="run sbatch on the script")
  p.add_argument("main_args", nargs=argparse.REMAINDER)
  a = p.parse_args()
  main_args = a.main_args[1:] if a.main_args[:1] == ["--"] else a.main_args
  text = sbatch_script(main_args, nodes=a.nodes, gpus_per_node=a.gpus_per_node,
                       partition=a.partition, time=a.time, job_name=a.job_name,
                       cpus_per_task=a.cpus_per_task, setup=a.setup,
                       output=os.path.join(os.path.dirname(os.path.abspath(a.script)), "slurm-%j.out"))
  os.makedirs(os.path.dirname(os.path.abspath(a.script)), exist_ok=True)
  with open(a.script, "w") as f:
    f.write(text)
  print(text)
  if a.submit:
    sys.exit(subprocess.call(["sbatch", a.script]))


if __name__ == "__main__":
  main()
