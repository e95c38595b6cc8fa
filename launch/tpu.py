"""Cloud TPU VMs: prints (and with --run, runs) the `gcloud` command that starts
`launch.main` on every worker of a TPU slice. On TPU VMs
`jax.distributed.initialize()` discovers the slice by itself (--distributed).

  python -m launch.tpu --tpu my-v5e-32 --zone us-west4-a --repo_dir ~/research [--run] -- \
      --config experiments/gpicl/mnist_paper.py --workdir gs://bucket/runs/mnist
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def gcloud_command(main_args, *, tpu, zone, project=None, repo_dir="~/research",
                   setup="source .venv/bin/activate", python="python"):
  remote = " && ".join(filter(None, [
      f"cd {repo_dir}", setup,
      shlex.join([python, "-m", "launch.main", "--distributed", *main_args])]))
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}"]
  if project:
    cmd.append(f"--project={project}")
  cmd += ["--worker=all", f"--command={remote}"]
  return cmd


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tpu", required=True)
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None)
  p.add_argument("--repo_dir", default="~/research")
  p.add_argument("--setup", default="source .venv/bin/activate")
  p.add_argument("--run", action="store_true", help="run the command instead of printing it")
  p.add_argument("main_args", nargs=argparse.REMAINDER)
  a = p.parse_args()
  main_args = a.main_args[1:] if a.main_args[:1] == ["--"] else a.main_args
  cmd = gcloud_command(main_args, tpu=a.tpu, zone=a.zone, project=a.project,
                       repo_dir=a.repo_dir, setup=a.setup)
  print(shlex.join(cmd))
  if a.run:
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
  main()
