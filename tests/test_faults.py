"""Fault injection, second pass: a workdir belongs to one experiment and one live run;
divergence never saves NaN; every bad input is one line, exit 2, nothing written; failed
writes and unreadable checkpoints lose nothing. Each test fails without the mechanism
it names (README.md, the fault table)."""
import hashlib
import json
import os
import subprocess
import sys
import time

import filelock
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.gpicl import digits
from research import checkpoint
from research import errors
from research import metrics as metrics_lib
from research import train
from research import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "experiments/gpicl/digits.py:tiny", "--config.train.progress=False",
        "--config.train.log_every=1", "--config.train.eval_every=1000",
        # What these tests check does not read the transfer sets or the classical
        # baselines (1.1-1.3 s of each ~5.5 s run); tests/gpicl covers both.
        "--config.eval.datasets=()", "--config.eval.classical=()"]


def tiny(**overrides):
  c = digits.get_config("tiny")
  c.update_from_flattened_dict(overrides)
  return c


def digest(path):
  """Every file under `path` (names and bytes): "nothing was changed"."""
  h = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    for f in sorted(files):
      p = os.path.join(root, f)
      h.update(os.path.relpath(p, path).encode())
      with open(p, "rb") as fh:
        h.update(fh.read())
  return h.hexdigest()


# Runs a command with files capped at argv[1] bytes: a write past the cap fails with
# EFBIG ("File too large"), a real failed write (SIGXFSZ ignored, inherited by exec).
LIMITED = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
           "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")


def cli(workdir, *extra, config=TINY, file_limit=0, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT)
  cmd = ["-m", "launch.main", *config, "--workdir", workdir, "--local_devices=1", *extra]
  if file_limit:  # No preexec_fn: forking a multithreaded (JAX) process can deadlock.
    cmd = ["-c", LIMITED, str(file_limit), *cmd]
  return subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def params(workdir, step=None):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = mngr.latest_step() if step is None else step
  return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"][
      "params"]


def one_line_error(r, code=2):
  lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
  assert r.returncode == code, (r.returncode, r.stderr[-3000:])
  assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  return lines[0]


# ----------------------------------------------------------------------------
# 1-2. Another experiment's checkpoints are never touched.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("forget", ["config.json", "config.json+identity.json"])
def test_other_model_is_refused_even_without_config_json(tmp_path, forget):
  """config.json gone (and the identity record too: a workdir from before it existed):
  the checkpoints' own shapes decide; nothing is deleted by retention."""
  w = str(tmp_path / "w")
  train.train_and_evaluate(tiny(**{"train.num_steps": 20, "train.checkpoint_every": 4}), w)
  for name in forget.split("+"):
    os.remove(os.path.join(w, name))
  before = digest(w)
  with pytest.raises(errors.ConfigError, match="other shapes"):
    train.train_and_evaluate(tiny(**{"train.num_steps": 40, "model.d_model": 32}), w)
  assert digest(w) == before


def test_another_experiment_never_writes_over_a_workdir(tmp_path):
  """A DKVB config on a GPICL workdir and a GPICL config on a DKVB workdir: refused,
  byte-identical afterwards."""
  from research.dkvb import defaults as dkvb_defaults  # noqa: F401  (registers the task)
  import importlib.util
  spec = importlib.util.spec_from_file_location("toy", os.path.join(ROOT, "experiments", "dkvb",
                                                                    "toy2d.py"))
  toy = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(toy)
  g, d = str(tmp_path / "gpicl"), str(tmp_path / "dkvb")
  train.run(tiny(), g)
  cfg = toy.get_config("tiny")
  cfg.only = "linear"
  train.run(cfg, d)
  for workdir, config in ((g, cfg), (d, tiny())):
    before = digest(workdir)
    with pytest.raises(errors.ConfigError, match="holds a"):
      train.run(config, workdir)
    assert digest(workdir) == before


# ----------------------------------------------------------------------------
# 3. One live run per workdir.
# ----------------------------------------------------------------------------
def test_a_live_run_owns_its_workdir(tmp_path):
  w = str(tmp_path / "w")
  os.makedirs(w)
  lock = filelock.FileLock(os.path.join(w, workdir_lib.LOCK))
  with lock:  # Another run holds it.
    with pytest.raises(workdir_lib.WorkdirInUse, match="in use"):
      train.run(tiny(), w)
    assert not os.path.exists(os.path.join(w, "metrics.jsonl"))
  assert train.run(tiny(), w)["step"] == 6  # Released: it runs.


@pytest.mark.slow
def test_two_identical_commands_one_runs_the_other_refuses(tmp_path):
  """Started together: one trains, the other exits 2 at once; metrics.jsonl holds the
  rows of one run only. A kill -9 leaves no stale lock."""
  w = str(tmp_path / "w")
  env = dict(os.environ, PYTHONPATH=ROOT)
  cmd = [sys.executable, "-m", "launch.main", *TINY, "--workdir", w, "--local_devices=1",
         "--config.train.num_steps=30"]
  procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  codes = sorted(p.returncode for p in procs)
  assert codes == [0, 2], [o[1][-2000:] for o in outs]
  assert any("in use" in o[1] for o in outs)
  rows = metrics_lib.read_metrics(w, "train")
  with open(os.path.join(w, "metrics.jsonl")) as f:
    raw = [json.loads(line) for line in f if '"kind": "train"' in line]
  assert len(raw) == len(rows) == 30  # No second writer: no duplicated or interleaved rows.
  # The owner dies: the lock dies with it.
  p = subprocess.Popen(cmd[:-1] + ["--config.train.num_steps=100000"], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  t0 = time.monotonic()
  while time.monotonic() - t0 < 120 and metrics_lib.read_metrics(w, "train")[-1]["step"] <= 31:
    time.sleep(0.05)
  p.kill()
  p.communicate()
  with filelock.FileLock(os.path.join(w, workdir_lib.LOCK)).acquire(timeout=1):
    pass  # Acquired at once: the killed owner's lock went with it.


# ----------------------------------------------------------------------------
# 4. Divergence: skipped, halted in one line, never saved as NaN.
# ----------------------------------------------------------------------------
def test_an_update_that_makes_parameters_infinite_is_skipped_and_the_halt_is_one_line(tmp_path):
  """A finite gradient with a learning rate of 1e30 makes the parameters infinite: the
  update counts as non-finite, the saved state is the last finite one, exit code 3."""
  w = str(tmp_path / "w")
  r = cli(w, "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=1e38",
          "--config.optimizer.grad_clip=0", "--config.train.num_steps=40",
          "--config.train.max_nonfinite_steps=3")
  line = one_line_error(r, code=3)
  assert "non-finite" in line and "last good state is saved" in line
  for leaf in jax.tree.leaves(params(w)):
    assert np.all(np.isfinite(leaf))
  rows = metrics_lib.read_metrics(w, "train")
  assert rows[-1]["nonfinite_total"] >= 3
  assert not os.path.exists(os.path.join(w, "final_metrics.json"))


def test_a_run_that_ends_on_skipped_updates_says_so(tmp_path):
  """6 steps, all skipped (fewer than max_nonfinite_steps): no quiet exit 0."""
  w = str(tmp_path / "w")
  r = cli(w, "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=1e38",
          "--config.optimizer.grad_clip=0", "--config.train.num_steps=6")
  assert "non-finite" in one_line_error(r, code=3)
  assert not os.path.exists(os.path.join(w, "final_metrics.json"))


def test_final_metrics_never_hold_a_bare_nan():
  text = train.final_json({"step": 3, "loss": float("nan"), "curve": [0.5, float("inf")]})
  out = json.loads(text)  # Valid JSON (a bare NaN is not).
  assert out["loss"] is None and out["curve"] == [0.5, None]
  assert out["nonfinite_metrics"] == ["curve", "loss"]


# ----------------------------------------------------------------------------
# 5-6. Bad input: one line, exit 2, nothing written.
# ----------------------------------------------------------------------------
BAD_VALUES = [
    ("optimizer.grad_clip", "-1", "optimizer.grad_clip"),
    ("optimizer.b1", "1.5", "optimizer.b1"),
    ("schedule.warmup_steps", "-5", "warmup_steps"),
    ("train.max_nonfinite_steps", "0", "max_nonfinite_steps"),
    ("seed", "-1", "config.seed"),
    ("data.num_classes", "100", "num_classes"),
    ("data.num_classes", "1", "num_classes"),
    ("optimizer.learning_rate", "inf", "learning_rate"),
]


@pytest.mark.parametrize("key,value,fragment", BAD_VALUES)
def test_values_that_cannot_work_are_one_line_and_write_nothing(tmp_path, key, value, fragment):
  w = str(tmp_path / "w")
  line = one_line_error(cli(w, f"--config.{key}={value}"))
  assert fragment in line, line
  assert not os.path.exists(w) or not os.listdir(w)


@pytest.mark.parametrize("config,fragment", [
    (["--config", "experiments/gpicl/nope.py"], "does not exist"),
    (["--config", "experiments/dkvb/toy2d.py:tiny", "--config.models.dkvb_1x400.projection=foo"],
     "projection"),
    (["--config", "experiments/dkvb/toy2d.py:tiny", "--config.models.dkvb_1x400.num_heads=0"],
     "num_heads"),
    (["--config", "experiments/mend/finetune.py:tiny", "--config.loss.foo=1"], "loss.foo"),
])
def test_bad_files_and_keys_are_one_line(tmp_path, config, fragment):
  w = str(tmp_path / "w")
  line = one_line_error(cli(w, config=config))
  assert fragment in line, line
  assert not os.path.exists(w) or not os.listdir(w)


def test_config_file_with_a_syntax_error_is_one_line(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(:\n")
  line = one_line_error(cli(str(tmp_path / "w"), config=["--config", str(bad)]))
  assert "syntax error at line 1" in line


def test_a_step_that_cannot_fit_in_memory_is_refused_before_anything_is_written(tmp_path):
  """XLA's estimate against the memory there is: refused after compiling, before the
  first step, and the corrected command then runs in the same workdir."""
  w = str(tmp_path / "w")
  line = one_line_error(cli(w, "--config.data.seq_len=30000", "--config.train.batch_size=64",
                            timeout=600))
  assert "XLA's estimate" in line and "GiB" in line
  assert not os.path.exists(w) or not os.listdir(w)
  assert cli(w).returncode == 0


# ----------------------------------------------------------------------------
# 7. Failed writes: one line naming the path, nothing lost, the rerun resumes.
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_the_rerun_resumes_bit_identical(tmp_path):
  ref, w = str(tmp_path / "ref"), str(tmp_path / "w")
  every = ["--config.train.checkpoint_every=4"]
  assert cli(ref, *every, "--config.train.num_steps=8").returncode == 0
  assert cli(w, *every, "--config.train.num_steps=4").returncode == 0
  good = sorted(os.listdir(os.path.join(w, "checkpoints")))
  # Files may not grow past 20 kB: the next checkpoint's data cannot be written.
  r = cli(w, *every, "--config.train.num_steps=8", file_limit=20_000)
  line = one_line_error(r, code=74)
  assert "checkpoint" in line and "File too large" in line and "intact" in line, line
  assert set(good) <= set(os.listdir(os.path.join(w, "checkpoints")))
  r = cli(w, *every, "--config.train.num_steps=8")
  assert r.returncode == 0 and "resuming from step 4" in r.stdout, r.stderr[-2000:]
  for x, y in zip(jax.tree.leaves(params(ref)), jax.tree.leaves(params(w))):
    np.testing.assert_array_equal(x, y)


# TensorStore's messages for a write that hit the file-size limit: the one most saves fail
# with (recorded from this test's run), the same failure met while opening an array (its
# first 200 characters seen in CI; the rest in the form of the first), and that over lines.
_D = "/w/checkpoints/8.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/"
_FAILED = (f'Failed writing: "{_D}d/c4aa": Failed to write 7375 bytes to file 11: '
           f"File too large [os_error_code='27']")
TS_ERRORS = [
    f'OUT_OF_RANGE: Error writing "nonfinite_total/0" in OCDBT database at local file "{_D}": '
    + _FAILED,
    f'OUT_OF_RANGE: Error opening "zarr" driver: Error writing "params.block_0.value.kernel/'
    f'.zarray" in OCDBT database at local file "{_D}": ' + _FAILED,
    f'OUT_OF_RANGE: Error opening "zarr" driver: Error writing "params.b/.zarray" in OCDBT '
    f'database at local file "{_D}":\n' + _FAILED.replace("11: ", "11:\n"),
]


@pytest.mark.parametrize("message", TS_ERRORS)
def test_a_tensorstore_write_error_names_the_file_and_the_reason(message):
  mngr = type("Manager", (), {"directory": "/w/checkpoints"})()
  line = str(checkpoint._write_error(ValueError(message), mngr))
  assert "\n" not in line
  assert f"failed: File too large ({_D}d/c4aa); the previous checkpoints are intact" in line


def test_an_unparsed_error_keeps_the_end_of_its_message():
  mngr = type("Manager", (), {"directory": "/w/checkpoints"})()
  line = str(checkpoint._write_error(ValueError("x" * 500 + ": disk quota exceeded"), mngr))
  assert line.count("x") < 300 and "disk quota exceeded" in line


def test_a_failed_metrics_write_is_one_line_and_a_torn_row_is_repaired(tmp_path):
  w = str(tmp_path / "w")
  os.makedirs(w)
  code = (
      "import resource, signal, sys\n"
      "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
      "from research import metrics, workdir\n"
      "writer = metrics.MetricWriter(sys.argv[1], tensorboard=False)\n"
      "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
      "try:\n"
      "  for i in range(100):\n"
      "    writer.write(i, {'loss': 0.123456789, 'padding': 'x' * 50})\n"
      "except workdir.WriteError as e:\n"
      "  print(e)\n")
  r = subprocess.run([sys.executable, "-c", code, w], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert "could not append to" in r.stdout and "metrics.jsonl" in r.stdout, r.stderr[-2000:]
  path = os.path.join(w, "metrics.jsonl")
  with open(path, "rb") as f:
    assert not f.read().endswith(b"\n")  # The last row was cut mid-line.
  writer = metrics_lib.MetricWriter(w, tensorboard=False)  # A resumed run opens it.
  writer.write(999, {"loss": 1.0})
  writer.close()
  with open(path) as f:
    lines = f.read().splitlines()
  assert all(json.loads(line) for line in lines)  # Every line whole: nothing glued.
  assert json.loads(lines[-1])["step"] == 999


def test_the_write_probe_leaves_nothing_behind(tmp_path):
  w = str(tmp_path / "w")
  workdir_lib.check_workdir(w)
  assert os.listdir(w) == []


# ----------------------------------------------------------------------------
# 8-9. Unreadable checkpoints, a torn config.json.
# ----------------------------------------------------------------------------
def _corrupt(step_dir):
  for root, _, files in os.walk(step_dir):
    for f in files:
      path = os.path.join(root, f)
      with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 3)


def test_all_checkpoints_unreadable_stops_unless_asked_then_sets_them_aside(tmp_path):
  w = str(tmp_path / "w")
  assert cli(w, "--config.train.checkpoint_every=3", "--config.train.num_steps=6").returncode == 0
  for step in os.listdir(os.path.join(w, "checkpoints")):
    _corrupt(os.path.join(w, "checkpoints", step))
  before = digest(w)
  line = one_line_error(cli(w, "--config.train.num_steps=12"))
  assert "no checkpoint" in line and "restart_if_unreadable" in line
  assert digest(w) == before
  r = cli(w, "--config.train.num_steps=12", "--config.train.checkpoint_every=3",
          "--config.train.keep_checkpoints=10", "--config.train.restart_if_unreadable=True")
  assert r.returncode == 0, r.stderr[-2000:]
  aside = [d for d in os.listdir(w) if d.startswith("checkpoints.unreadable-")]
  assert len(aside) == 1 and sorted(os.listdir(os.path.join(w, aside[0]))) == ["3", "6"]
  # Started over, and every periodic save happened (none skipped below the old steps).
  assert {"3", "6", "9", "12"} <= set(os.listdir(os.path.join(w, "checkpoints")))


def test_a_corrupt_latest_checkpoint_is_reported_in_one_line(tmp_path):
  w = str(tmp_path / "w")
  assert cli(w, "--config.train.checkpoint_every=3", "--config.train.num_steps=6").returncode == 0
  _corrupt(os.path.join(w, "checkpoints", "6"))
  r = cli(w, "--config.train.num_steps=9")
  assert r.returncode == 0 and "resuming from step 3" in r.stdout, r.stderr[-2000:]
  warning = [l for l in r.stderr.splitlines() if "could not be read" in l]
  assert len(warning) == 1 and len(warning[0]) < 600, r.stderr[-3000:]


def test_a_torn_config_json_is_one_line(tmp_path):
  w = str(tmp_path / "w")
  assert cli(w).returncode == 0
  path = os.path.join(w, "config.json")
  with open(path, "r+") as f:
    f.truncate(os.path.getsize(path) // 2)
  assert "not valid JSON" in one_line_error(cli(w))
