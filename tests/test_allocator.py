"""jemalloc wherever the framework runs: the launchers re-exec under it, a run's info
row names the allocator, RESEARCH_NO_JEMALLOC=1 turns it off."""
import json
import os
import subprocess
import sys

import pytest

from launch import allocator
from research import flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_JEMALLOC = allocator.library() is not None


def _clean_env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "MALLOC_CONF", allocator.OFF, "RESEARCH_JEMALLOC_REEXEC")}
  env.update(extra)
  return env


def _info_row(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return next(r for r in map(json.loads, f) if r["kind"] == "info")


@pytest.mark.slow
@pytest.mark.parametrize("off", [False, True])
def test_launched_run_reports_its_allocator(tmp_path, off):
  """`python -m launch.main` from a shell without LD_PRELOAD runs on jemalloc when it
  is installed (and on glibc with RESEARCH_NO_JEMALLOC=1); the info row says which."""
  env = _clean_env(**({allocator.OFF: "1"} if off else {}), JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-m", "launch.main", "--config",
                  "experiments/gpicl/digits.py:tiny", "--workdir", str(tmp_path)],
                 cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  info = _info_row(tmp_path)
  expected = "jemalloc" if HAVE_JEMALLOC and not off else "glibc"
  assert info["allocator"] == expected
  assert info["malloc_conf"] == ("" if expected == "glibc" else allocator.MALLOC_CONF)
  assert info["cores"] >= 1 and info["cpu_model"]


def test_reexec_happens_once_and_only_for_main():
  """A child started the way the launchers start reports jemalloc; importing an entry
  point (tests, notebooks) never re-execs."""
  code = ("from launch import allocator; allocator.ensure_jemalloc('launch.main'); "
          "from research import flops; import os; "
          "allocator.ensure_jemalloc('__main__'); "
          "print(flops.allocator(), os.environ.get('RESEARCH_JEMALLOC_REEXEC'))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(),
                       capture_output=True, text=True, check=True).stdout.split()
  assert out == (["jemalloc", "1"] if HAVE_JEMALLOC else ["glibc", "None"])
  # The guard stops a second re-exec even if the preload did not take.
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=_clean_env(RESEARCH_JEMALLOC_REEXEC="1"), check=True).stdout.split()
  assert out == ["glibc", "1"]


def test_environment_keeps_user_settings():
  if not HAVE_JEMALLOC:
    pytest.skip("jemalloc not installed")
  env = allocator.environment({"LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:1"})
  assert env["LD_PRELOAD"] == f"{allocator.library()}:/x/libfoo.so"
  assert env["MALLOC_CONF"] == "narenas:1"
  assert allocator.environment({})["MALLOC_CONF"] == allocator.MALLOC_CONF
  assert "LD_PRELOAD" not in allocator.environment({allocator.OFF: "1"})


def test_notebook_kernel_gets_jemalloc(tmp_path):
  path = allocator.install_kernel(str(tmp_path))
  if not HAVE_JEMALLOC:
    assert path is None
    return
  with open(path) as f:
    spec = json.load(f)
  assert spec["env"]["LD_PRELOAD"] == allocator.library() and "{connection_file}" in spec["argv"]


def test_machine_info_fields():
  info = flops.machine_info()
  assert set(info) == {"cpu_model", "cores", "allocator", "malloc_conf"}
  assert info["allocator"] in ("jemalloc", "glibc", "tcmalloc", "mimalloc", "unknown")
