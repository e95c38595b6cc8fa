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

import logging
import os
import sys
import threading

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


def _thread_error(args) -> None:
  """A background thread's failure (an asynchronous checkpoint write) in one line: the
  main thread reports what it means when it waits for that thread."""
  absl_logging.warning("background thread %s: %s: %s", getattr(args.thread, "name", "?"),
                       args.exc_type.__name__, str(args.exc_value).strip().splitlines()[:1])


def _unraisable(u) -> None:
  """After a failed checkpoint write, orbax's event loop closes while tensorstore still
  holds callbacks for the cancelled writes; each raises "Event loop is closed", which
  tensorstore reports as unraisable (a bare traceback). They echo the failure the
  trainer reports in one line: drop them, and hand everything else to Python's hook."""
  if u.exc_type is RuntimeError and str(u.exc_value) == "Event loop is closed":
    return
  sys.__unraisablehook__(u)


class _OrbaxOneLine(logging.Filter):
  """Orbax logs a failed save's traceback from each of its threads; the trainer turns
  the failure into one line of its own (`research.checkpoint`). Keep orbax's warnings,
  one line each, without tracebacks; drop its error records."""

  def filter(self, record: logging.LogRecord) -> bool:
    # Orbax's own records, and asyncio's "Task exception was never retrieved" for its tasks.
    if "orbax" not in record.pathname and "orbax" not in str(record.msg):
      return True
    if record.levelno >= logging.ERROR:
      return False
    from research import errors  # pylint: disable=import-outside-toplevel
    record.exc_info, record.exc_text = None, None
    record.msg, record.args = errors.first_line(record.getMessage()), ()
    return True


def main(argv):
  del argv
  threading.excepthook = _thread_error
  sys.unraisablehook = _unraisable
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_OrbaxOneLine())
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
  from research import compiling
  compiling.use_persistent_cache()
  config, workdir = _CONFIG.value, _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required")
  from research import checkpoint, errors, train, workdir as workdir_lib
  compiling.freeze_startup_objects()
  try:
    train.run(config, workdir)
  except errors.BAD_INPUT as e:
    # Bad input: one clear line, nothing saved is touched.
    return _fail(e, 2)
  except train.NonFiniteError as e:
    return _fail(e, EXIT_DIVERGED)
  except workdir_lib.WriteError as e:
    return _fail(e, EXIT_IO)
  del checkpoint
  return 0


EXIT_DIVERGED = 3   # The run halted on non-finite updates (its last good state is saved).
EXIT_IO = 74        # A write failed (disk full, permissions): EX_IOERR.


def _fail(e: BaseException, code: int) -> int:
  text = " ".join(str(e).split("\n"))
  print(f"error: {text}", file=sys.stderr, flush=True)
  return code


def _config_spec(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _check_config_file(spec: str) -> None:
  """A config file that is missing or does not parse: one line, exit 2."""
  path = spec.split(":", 1)[0]
  if not os.path.isfile(path):
    _exit(f"config file {path} does not exist; pass --config=experiments/<paper>/<name>.py")
  try:
    with open(path) as f:
      compile(f.read(), path, "exec")
  except SyntaxError as e:
    _exit(f"config file {path} has a syntax error at line {e.lineno}: {e.msg}")


def _unknown_override(spec: str, argv) -> str | None:
  """The first `--config.a.b=v` naming a key the config does not have, described."""
  from research import config as config_lib
  path, _, arg = spec.partition(":")
  try:
    module = config_lib.load_module(path, "_config_for_errors")
    config = module.get_config(arg or None) if arg else module.get_config()
  except Exception as e:  # The config's own error (e.g. an unknown :arg): its message.
    return f"{path}:{arg}: {type(e).__name__}: {e}"
  for a in argv:
    if not a.startswith("--config."):
      continue
    key = a[len("--config."):].split("=", 1)[0]
    node, walked = config, "config"
    for part in key.split("."):
      children = list(node.keys()) if hasattr(node, "keys") else []
      if part not in children:
        near = ", ".join(sorted(children)[:12])
        return (f"config key {key!r} does not exist: {walked} has no {part!r}"
                + (f" (it has: {near})" if near else "") + f"; check --config.{key}")
      node, walked = node[part], f"{walked}.{part}"
  return None


def _exit(msg: str) -> None:
  print(f"error: {msg}", file=sys.stderr, flush=True)
  sys.exit(2)


def _parse_flags(argv):
  """absl parsing, with config errors (missing file, syntax error, unknown key, wrong
  type) as one clear line and exit code 2."""
  spec = _config_spec(argv)
  if spec:
    _check_config_file(spec)
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    unknown = _unknown_override(spec, argv) if spec else None
    if unknown:
      _exit(unknown)
    msg = str(e).strip().strip("'").replace("\\'", "'")
    if "Traceback" in msg:  # A config file's own error: keep its last line.
      msg = msg.splitlines()[0] + " " + msg.strip().splitlines()[-1]
    msg = msg.replace("\\n", " ").replace("\n", " ")
    _exit(f"bad flag or config override: {msg}")


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  sys.exit(run())
