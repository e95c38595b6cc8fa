"""Entry point: parses flags and calls the trainer (or a paper's own runner).

  python -m launch.main --config experiments/gpicl/digits.py[:arg] --workdir DIR \
      [--config.key=value ...]

Running the same command again on the same workdir resumes; a finished run says so.
Multi-process (one process per host or per local GPU): pass --coordinator,
--num_processes and --process_id, or let `jax.distributed.initialize()` read them
from SLURM / Cloud TPU (--distributed).
"""
from __future__ import annotations

from launch import allocator

allocator.ensure_jemalloc(__name__)  # First: may re-exec this process under jemalloc.

import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (SLURM/TPU fill in the rest).")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout", 60,
                                  "Seconds without a peer's heartbeat before every process "
                                  "exits with an error (a dead peer must not hang the others).")
_LOCAL_DEVICES = flags.DEFINE_integer("local_devices", None,
                                      "CPU only: number of (fake) devices for this process.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file at INFO.
  import jax  # After flag parsing: device flags must be set before backends start.
  if _LOCAL_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _LOCAL_DEVICES.value)
  if _COORDINATOR.value or _DISTRIBUTED.value:
    # Cross-process collectives for the CPU backend (GPUs/TPUs bring their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                               heartbeat_timeout_seconds=_HEARTBEAT.value)
  cache = os.environ.get("RESEARCH_COMPILE_CACHE", os.path.expanduser("~/.cache/research/jax_compile"))
  jax.config.update("jax_compilation_cache_dir", cache)
  config, workdir = _CONFIG.value, _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required")
  from research import checkpoint, config as config_lib, experiment
  try:
    experiment.run(config, workdir)
  except (config_lib.ConfigError, checkpoint.CheckpointMismatch) as e:
    # Bad input: one clear line, nothing saved is touched.
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  return 0


def _parse_flags(argv):
  """absl parsing, with config errors (unknown key, wrong type) as one clear line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    msg = str(e).strip().strip("'").replace("\\'", "'")
    if "Traceback" in msg:  # A config file's own error: keep its last line.
      msg = msg.splitlines()[0] + " " + msg.strip().splitlines()[-1]
    msg = msg.replace("\\n", " ").replace("\n", " ")
    print(f"error: bad flag or config override: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  sys.exit(run())
