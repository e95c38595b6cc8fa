"""Golden text of the SLURM and TPU-VM launch commands."""
import shlex

from launch import local, slurm, tpu

ARGS = ["--config", "experiments/gpicl/digits.py:num_tasks=4096", "--workdir", "runs/x"]


def test_sbatch_script_golden():
  text = slurm.sbatch_script(ARGS, nodes=2, gpus_per_node=4, partition="gpu", time="01:00:00",
                             job_name="gpicl", output="runs/x/slurm-%j.out",
                             setup="source .venv/bin/activate")
  assert text == """#!/bin/bash
#SBATCH --job-name=gpicl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --partition=gpu
#SBATCH --output=runs/x/slurm-%j.out

set -euo pipefail
source .venv/bin/activate
# One process per GPU; jax.distributed.initialize() finds the coordinator,
# process count and index in SLURM's environment.
srun --kill-on-bad-exit=1 python -m launch.main --distributed --config experiments/gpicl/digits.py:num_tasks=4096 --workdir runs/x
"""


def test_gcloud_command_golden():
  cmd = tpu.gcloud_command(ARGS, tpu="v5e-32", zone="us-west4-a", project="proj")
  assert shlex.join(cmd) == (
      "gcloud compute tpus tpu-vm ssh v5e-32 --zone=us-west4-a --project=proj --worker=all "
      "'--command=cd ~/research && source .venv/bin/activate && python -m launch.main "
      "--distributed --config experiments/gpicl/digits.py:num_tasks=4096 --workdir runs/x'")


def test_local_commands():
  cmds = local.commands(ARGS, 2, 1234, local_devices=4)
  assert [c[-1] for c in cmds] == ["--process_id=0", "--process_id=1"]
  for c in cmds:
    assert "--coordinator=127.0.0.1:1234" in c and "--num_processes=2" in c
    assert "--local_devices=4" in c
