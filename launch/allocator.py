"""jemalloc for XLA on CPU, wherever the framework is launched.

glibc's malloc hands XLA's large per-step temporaries back to the kernel and
page-faults them in again on the next step; under jemalloc the same GPICL train
step ran 2x faster on the 2-core dev machine (README, Machine notes). The entry
points (`launch.main`, `launch.bench`, `launch.sweep`, `launch.local`) call
`ensure_jemalloc(__name__)` first thing: when jemalloc is installed and not yet
loaded, the process re-executes itself once with LD_PRELOAD and MALLOC_CONF set.

  RESEARCH_NO_JEMALLOC=1   keep the current allocator (no re-exec)
  MALLOC_CONF=...          your own jemalloc settings (kept as they are)

Elsewhere:
  eval "$(python launch/allocator.py --shell)"   # what launch/env.sh does (make, CI)
  python -m launch.allocator --install-kernel     # Jupyter kernels of this venv too

Standard library only: this runs before anything heavy is imported.
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import sys
import time

# Chosen by `python -m launch.bench --only allocator_settings,allocator_settings_b512`
# (README, Machine notes): never purge (decay -1), so a step reuses the previous
# step's temporaries without page faults, but in one arena for every thread and
# size, so that what one step freed serves the next wherever it allocates. A positive
# decay re-faulted ~45k pages per step of `make train` (18M faults, 37 s of system
# time in 400 steps, as many as glibc) whenever the large allocations shared an arena
# (jemalloc's dedicated >8 MiB arena, or narenas:1); with one arena per thread
# (jemalloc's default) nothing is re-faulted but freed memory stays with the thread
# that freed it: 2.2x XLA's estimate at batch 256, 1.25x in one arena.
MALLOC_CONF = "narenas:1,oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
OFF = "RESEARCH_NO_JEMALLOC"
_GUARD = "RESEARCH_JEMALLOC_REEXEC"  # Set on the re-exec: never loop.
_PATTERNS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
             "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2",
             "/usr/local/lib/libjemalloc.so.2", "/opt/homebrew/lib/libjemalloc.2.dylib")


def library() -> str | None:
  """Path of an installed jemalloc shared library, or None."""
  for pattern in (os.environ.get("RESEARCH_JEMALLOC", ""), *_PATTERNS):
    for path in glob.glob(pattern) if pattern else ():
      return path
  return None


def loaded() -> bool:
  """Whether this process already runs on jemalloc."""
  try:
    with open("/proc/self/maps") as f:
      return "libjemalloc" in f.read()
  except OSError:
    return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def environment(env=None) -> dict:
  """`env` (default: os.environ) with jemalloc preloaded and configured, if installed."""
  env = dict(os.environ if env is None else env)
  lib = library()
  if lib and env.get(OFF) != "1":
    preload = env.get("LD_PRELOAD", "")
    if lib not in preload.split(":"):
      env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
    env.setdefault("MALLOC_CONF", MALLOC_CONF)
  return env


def purge() -> bool:
  """Returns every freed page jemalloc holds to the kernel (decay -1 keeps them until
  then): between benchmarks, or before a process hands the memory to others."""
  if not loaded():
    return False
  import ctypes  # pylint: disable=import-outside-toplevel
  try:
    mallctl = ctypes.CDLL(None).mallctl
  except AttributeError:
    return False
  mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.c_size_t]
  return mallctl(b"arena.4096.purge", None, None, None, 0) == 0  # 4096: all arenas.


PURGE_EVERY_S = 30.0


def start_purger(every_s: float = PURGE_EVERY_S) -> None:
  """A daemon thread that calls `purge` every `every_s` seconds: with decay off,
  memory freed once (compilation, evaluation, a larger earlier phase) would otherwise
  stay resident for the whole run; a step's own working set is re-faulted once per
  period, not once per step."""
  import threading  # pylint: disable=import-outside-toplevel

  def loop():
    while True:
      time.sleep(every_s)
      purge()
  threading.Thread(target=loop, name="jemalloc-purge", daemon=True).start()


def ensure_jemalloc(name: str) -> None:
  """Re-executes the running `python -m <entry point>` under jemalloc (once); once on
  it with these settings, starts the periodic purge (`start_purger`).

  Does nothing unless `name` is "__main__" (so importing an entry point is
  harmless), jemalloc is installed, and RESEARCH_NO_JEMALLOC is unset.
  """
  if name != "__main__" or os.environ.get(OFF) == "1" or sys.platform != "linux":
    return
  if loaded():
    if os.environ.get("MALLOC_CONF") == MALLOC_CONF:  # Not with a user's own settings.
      start_purger()
    return
  if os.environ.get(_GUARD) or library() is None:
    return
  env = environment()
  env[_GUARD] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def install_kernel(prefix: str = sys.prefix) -> str | None:
  """Adds jemalloc to the environment of this venv's Jupyter `python3` kernel, so
  notebooks run as the launchers do. Returns the kernel.json path (None if no jemalloc)."""
  env = environment({})
  if "LD_PRELOAD" not in env:
    return None
  path = os.path.join(prefix, "share", "jupyter", "kernels", "python3", "kernel.json")
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "Python 3 (ipykernel)", "language": "python",
          "metadata": {"debugger": True}}
  if os.path.exists(path):
    with open(path) as f:
      spec = json.load(f)
  spec["env"] = {**spec.get("env", {}), "LD_PRELOAD": env["LD_PRELOAD"],
                 "MALLOC_CONF": env["MALLOC_CONF"]}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(spec, f, indent=1)
  return path


def main(argv=None) -> int:
  args = sys.argv[1:] if argv is None else argv
  if args == ["--shell"]:  # Lines for a shell to eval (launch/env.sh).
    env = environment({k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "MALLOC_CONF", OFF)})
    for key in ("LD_PRELOAD", "MALLOC_CONF"):
      if key in env:
        print(f"export {key}={shlex.quote(env[key])}")
    return 0
  if args == ["--install-kernel"]:
    path = install_kernel()
    print(f"jemalloc added to the Jupyter kernel {path}" if path else
          "jemalloc not installed: the Jupyter kernel keeps glibc malloc (" + HOW_TO + ")")
    return 0
  if args == ["--hint"]:  # One line for `make train` when jemalloc is missing.
    if library() is None:
      print(f"note: jemalloc is not installed, so XLA runs on glibc malloc here; {HOW_TO}")
    return 0
  print(__doc__)
  return 2


HOW_TO = ("`sudo apt-get install libjemalloc2` (Debian/Ubuntu) makes CPU training up to 2x "
          "faster")

if __name__ == "__main__":
  sys.exit(main())
