"""launch.sweep: grid expansion, stable run directories, print mode, and an
idempotent local run (a second invocation runs nothing)."""
import os
import shlex
import subprocess
import sys

import pytest

from launch import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEPS = ["sweep_num_tasks", "sweep_plateau", "sweep_learners", "sweep_state_size"]


def _path(name):
  return os.path.join(ROOT, "experiments", "gpicl", f"{name}.py")


@pytest.fixture
def toy_sweep(tmp_path):
  path = tmp_path / "toy.py"
  path.write_text(
      "def get_sweep(arg=None):\n"
      "  runs = [{'tasks.num_tasks': n, 'seed': s} for s in (0, 1) for n in (1, 16, 256)]\n"
      "  runs.append({'config': 'experiments/gpicl/digits.py:learner=lstm', 'seed': 0})\n"
      "  return 'experiments/gpicl/digits.py:tiny', runs\n")
  return str(path)


def test_expand_grid_names_and_commands(toy_sweep, tmp_path):
  runs = sweep.expand(toy_sweep, root=str(tmp_path / "root"))
  assert len(runs) == 7
  assert len({r.workdir for r in runs}) == 7
  assert runs[1].overrides == {"tasks.num_tasks": 16, "seed": 0}
  assert os.path.basename(runs[1].workdir).startswith("seed0_num_tasks16-")
  assert runs[-1].config.endswith(":learner=lstm") and "config" not in runs[-1].overrides
  cmd = sweep.command(runs[1])
  assert cmd[1:3] == ["-m", "launch.main"]
  assert "--config.tasks.num_tasks=16" in cmd and "--config.seed=0" in cmd
  # Same file, same runs, same directories; a changed override changes the hash.
  assert [r.workdir for r in sweep.expand(toy_sweep, root=str(tmp_path / "root"))] == \
      [r.workdir for r in runs]
  assert sweep.run_name("c.py", {"seed": 0}) != sweep.run_name("c.py", {"seed": 1})
  assert sweep.run_name("c.py", {"seed": 0}) != sweep.run_name("d.py", {"seed": 0})


def test_duplicate_runs_refused(tmp_path):
  path = tmp_path / "dup.py"
  path.write_text("def get_sweep(arg=None):\n  return 'c.py', [{'seed': 0}, {'seed': 0}]\n")
  with pytest.raises(ValueError, match="same overrides"):
    sweep.expand(str(path), root=str(tmp_path))


@pytest.mark.parametrize("name", SWEEPS)
def test_project_sweeps_expand(name, tmp_path):
  full = sweep.expand(_path(name), root=str(tmp_path))
  tiny = sweep.expand(_path(name), "tiny", root=str(tmp_path))
  assert len(full) >= len(tiny) >= 1
  assert all(":tiny" in r.config for r in tiny)
  assert not any(":tiny" in r.config for r in full)
  if name == "sweep_num_tasks":  # Three seeds per run, vmapped in one step.
    assert {r.overrides["train.num_seeds"] for r in full} == {3}
    tasks = {r.overrides["tasks.num_tasks"] for r in full}
    assert min(tasks) == 1 and max(tasks) == 2**16


def test_print_mode_prints_one_command_per_run(toy_sweep, tmp_path):
  root = str(tmp_path / "root")
  out = subprocess.run([sys.executable, "-m", "launch.sweep", toy_sweep, "--print", "--root", root],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  lines = out.strip().splitlines()
  assert len(lines) == 7
  runs = sweep.expand(toy_sweep, root=root)
  for line, run in zip(lines, runs):
    argv = shlex.split(line)
    assert argv[argv.index("--workdir") + 1] == run.workdir
  assert not any(r.finished for r in runs)  # Nothing ran.


def test_run_is_idempotent(tmp_path):
  """Every config the tiny num_tasks sweep names runs end to end, once."""
  root = str(tmp_path / "root")
  runs = sweep.expand(_path("sweep_num_tasks"), "tiny", root=root)
  env_cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    # The tests' 8 devices (extra_args reach every run's command): the runs compile what
    # test_configs.py's in-process runs of this sweep compiled, and read it from the cache.
    first = sweep.run_all(runs, _path("sweep_num_tasks"), extra_args=["--local_devices=8"],
                          log=lambda *_: None)
    second = sweep.run_all(runs, _path("sweep_num_tasks"), log=lambda *_: None)
  finally:
    os.chdir(env_cwd)
  assert first["failed"] == [] and len(first["ran"]) == len(runs)
  assert second == {"ran": [], "skipped": [r.name for r in runs], "failed": []}
  for r in runs:
    assert os.path.exists(os.path.join(r.workdir, sweep.RUN_INFO))


@pytest.mark.parametrize("arg, n, hold", [("curriculum", 4, 1000), ("curriculum_long", 2, 1500)])
def test_state_size_curriculum_stages(arg, n, hold, tmp_path):
  """The recurrent learners' curriculum stages: own directory, the class curriculum on."""
  runs = sweep.expand(_path("sweep_state_size"), arg, root=str(tmp_path))
  assert len(runs) == n and all(f"sweep_state_size_{arg}" in r.workdir for r in runs)
  for r in runs:
    assert r.overrides["curriculum.classes_start"] == 2
    assert r.overrides["curriculum.hold_steps"] == hold
    config = sweep.resolve_config(r)
    assert config.model.name in ("lstm", "outer_lstm")


@pytest.mark.parametrize("arg, n, steps, seeds", [("random", 5, 3000, 3), ("random_long", 2, 10000, 1),
                                                  ("random_attention", 2, 3000, 3)])
def test_state_size_random_stages(arg, n, steps, seeds, tmp_path):
  """The Random-dataset stages: query layout, own directory, step and seed counts."""
  runs = sweep.expand(_path("sweep_state_size"), arg, root=str(tmp_path))
  assert len(runs) == n and all(f"sweep_state_size_{arg}/" in r.workdir for r in runs)
  configs = [sweep.resolve_config(r) for r in runs]
  assert all(c.data.dataset == "random" and c.model.layout == "query" for c in configs)
  assert all(c.train.num_steps == steps and c.train.num_seeds == seeds for c in configs)
  assert len({r.workdir for r in runs}) == n
