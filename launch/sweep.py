r"""Sweeps: expand a grid into runs, run them locally or print one command per run.

  python -m launch.sweep experiments/gpicl/sweep_num_tasks.py --run   [--root runs/sweeps]
  python -m launch.sweep experiments/gpicl/sweep_num_tasks.py --print [--arg tiny]

A sweep file defines `get_sweep(arg) -> (config, overrides)`: `config` is a
config spec as `launch.main` takes it (`experiments/gpicl/digits.py[:arg]`), and
`overrides` a list of dicts, one per run, of dotted config keys to values
(`{"tasks.num_tasks": 256, "seed": 1}`). A dict may carry the reserved key
"config" to use another config spec for that run (learners whose model
sub-configs differ in shape cannot be reached by key overrides).

Each run lives in `<root>/<sweep>/<readable name>-<hash>`: the hash is over the
config spec and the overrides, so the same run always lands in the same
directory, and `--run` skips every run whose `final_metrics.json` exists (a run
that was interrupted resumes from its checkpoint). Each run directory also gets
`sweep_run.json` (sweep, config spec, overrides), which is what the analysis
code groups runs by.
"""
from __future__ import annotations

from launch import allocator

allocator.ensure_jemalloc(__name__)  # First: may re-exec this process under jemalloc.

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Iterable

from research import config as config_lib

FINAL_METRICS = "final_metrics.json"  # Written by research/train.py at the end of a run.
RUN_INFO = "sweep_run.json"
RESERVED = ("config",)


@dataclasses.dataclass(frozen=True)
class Run:
  name: str                   # Readable name + hash: the run directory's basename.
  config: str                 # Config spec: path[:arg].
  overrides: dict[str, Any]   # Dotted config key -> value.
  workdir: str

  @property
  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, FINAL_METRICS))


def load_sweep(path: str, arg: str | None = None) -> tuple[str, list[dict[str, Any]]]:
  """Imports a sweep file and returns its (config spec, list of override dicts)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep file {path!r} does not exist")
  module = config_lib.load_module(path, "_sweep")
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(arg) -> (config, overrides)")
  config, overrides = module.get_sweep(arg)
  overrides = [dict(o) for o in overrides]
  if not overrides:
    raise ValueError(f"{path}: get_sweep({arg!r}) returned no runs")
  return config, overrides


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _format(value: Any) -> str:
  """A value as `--config.key=` takes it (strings bare, everything else a literal)."""
  return value if isinstance(value, str) else repr(value)


def run_name(config: str, overrides: dict[str, Any], shown: Iterable[str] | None = None) -> str:
  """`<readable overrides>-<8 hex digits>`, stable across invocations.

  The hash covers the config spec and every override; the readable part shows
  only the keys in `shown` (by default all), e.g. those that vary in the sweep.
  """
  payload = json.dumps({"config": config, "overrides": overrides}, sort_keys=True, default=str)
  digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
  parts = []
  for key in sorted(k for k in overrides if shown is None or k in shown):
    value = overrides[key]
    if key == "config":  # The config's arg, e.g. "learner=lstm".
      parts.append(value.split(":", 1)[1] if ":" in value else _stem(value))
      continue
    parts.append(f"{key.rsplit('.', 1)[-1]}{_format(value)}")
  readable = re.sub(r"[^A-Za-z0-9.=+-]+", "_", "_".join(parts)).strip("_")[:80]
  return f"{readable}-{digest}" if readable else digest


def expand(sweep_path: str, arg: str | None = None, root: str = "runs/sweeps") -> list[Run]:
  """The sweep's runs, in the order the file lists them. Duplicates are refused."""
  base, overrides = load_sweep(sweep_path, arg)
  sweep_dir = os.path.join(root, _stem(sweep_path) + (f"_{arg}" if arg else ""))
  all_keys = set().union(*overrides)
  varying = {k for k in all_keys
             if len({json.dumps(o.get(k, None), default=str) for o in overrides}) > 1}
  runs, seen = [], set()
  for o in overrides:
    config = o.get("config", base)
    keys = {k: v for k, v in o.items() if k not in RESERVED}
    name = run_name(config, o, varying)
    if name in seen:
      raise ValueError(f"{sweep_path}: two runs with the same overrides {o}")
    seen.add(name)
    runs.append(Run(name, config, keys, os.path.join(sweep_dir, name)))
  return runs


def command(run: Run, python: str = sys.executable) -> list[str]:
  """The `launch.main` command line of one run."""
  cmd = [python, "-m", "launch.main", "--config", run.config, "--workdir", run.workdir]
  cmd += [f"--config.{k}={_format(v)}" for k, v in sorted(run.overrides.items())]
  return cmd


def resolve_config(run: Run):
  """The run's locked ConfigDict, built in this process (tests, notebooks).

  Equivalent to what `launch.main` builds from `command(run)`: the config file's
  `get_config(arg)` with the overrides set key by key (type-checked by the lock).
  """
  path, _, arg = run.config.partition(":")
  module = config_lib.load_module(path)
  config = module.get_config(arg or None)
  for key, value in run.overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"{run.name}: override {key!r} names no key of {run.config}")
    node[leaf] = value
  return config


def write_info(run: Run, sweep_path: str) -> None:
  """Writes `sweep_run.json` (sweep, name, config spec, overrides) into the run directory."""
  os.makedirs(run.workdir, exist_ok=True)
  info = {"sweep": _stem(sweep_path), "name": run.name, "config": run.config,
          "overrides": run.overrides}
  with open(os.path.join(run.workdir, RUN_INFO), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True, default=str)


def run_all(runs: list[Run], sweep_path: str, *, extra_args=(), log=print) -> dict[str, list[str]]:
  """Runs unfinished runs one after another, each in its own `launch.main` process.

  Returns {"ran": [...], "skipped": [...], "failed": [...]} (run names). A failed
  run does not stop the sweep; its output is in `<workdir>/launch.log`.
  """
  out = {"ran": [], "skipped": [], "failed": []}
  for i, run in enumerate(runs):
    if run.finished:
      out["skipped"].append(run.name)
      continue
    write_info(run, sweep_path)
    cmd = command(run) + list(extra_args)
    log(f"[{i + 1}/{len(runs)}] {run.name}")
    t0 = time.perf_counter()
    with open(os.path.join(run.workdir, "launch.log"), "a") as f:
      rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    status = "ok" if rc == 0 and run.finished else f"FAILED (rc={rc}, see {run.workdir}/launch.log)"
    log(f"    {status} in {time.perf_counter() - t0:.0f}s")
    out["ran" if status == "ok" else "failed"].append(run.name)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("sweep", help="sweep file defining get_sweep(arg)")
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--run", action="store_true", help="run unfinished runs here, one by one")
  mode.add_argument("--print", action="store_true", help="print one command per run (default)")
  p.add_argument("--root", default="runs/sweeps", help="directory holding one folder per sweep")
  p.add_argument("--arg", default=None, help="argument for get_sweep (e.g. tiny)")
  p.add_argument("--python", default="python", help="interpreter named in --print commands")
  args = p.parse_args(argv)
  runs = expand(args.sweep, args.arg, args.root)
  if not args.run:
    for run in runs:  # The info file lets the analysis group runs made elsewhere.
      write_info(run, args.sweep)
      print(shlex.join(command(run, python=args.python)))
    return 0
  out = run_all(runs, args.sweep)
  print(f"{len(out['ran'])} ran, {len(out['skipped'])} already finished, "
        f"{len(out['failed'])} failed", flush=True)
  return 1 if out["failed"] else 0


if __name__ == "__main__":
  sys.exit(main())
