"""Faults a long run meets: preemption, SIGKILL, corrupt checkpoints, another
device count, a dead peer, non-determinism, unsafe loading. Each test would fail
without the mechanism it names (see the fault table in README.md)."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from research import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "experiments/gpicl/digits.py:tiny", "--config.train.progress=False",
        "--config.train.log_every=1", "--config.train.eval_every=1000",
        "--config.train.checkpoint_every=4",
        # What these tests check does not read the transfer sets or the classical
        # baselines (1.1-1.3 s of each ~5.5 s run); tests/gpicl covers both.
        "--config.eval.datasets=()", "--config.eval.classical=()"]


def _popen(workdir, *extra, devices=1):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "launch.main", *TINY, "--workdir", workdir,
                           f"--local_devices={devices}", *extra], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(workdir, *extra, devices=1, timeout=300):
  p = _popen(workdir, *extra, devices=devices)
  out, err = p.communicate(timeout=timeout)
  return p.returncode, out, err


def _wait_for_step(workdir, step, proc, timeout=240):
  path = os.path.join(workdir, "metrics.jsonl")
  t0 = time.monotonic()
  while time.monotonic() - t0 < timeout:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    rows = metrics_lib.read_metrics(workdir, "train") if os.path.exists(path) else []
    if rows and rows[-1]["step"] >= step:
      return rows[-1]["step"]
    time.sleep(0.05)
  raise TimeoutError(f"run did not reach step {step}")


def _params(workdir, step=None):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = mngr.latest_step() if step is None else step
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return out["state"]["params"]


def _assert_same_params(a, b, exact=True):
  for x, y in zip(jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b))):
    if exact:
      np.testing.assert_array_equal(x, y)
    else:
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 40-step run to compare against."""
  w = str(tmp_path_factory.mktemp("ref") / "w")
  rc, _, err = _run(w, "--config.train.num_steps=40")
  assert rc == 0, err[-3000:]
  return w


@pytest.mark.slow
def test_sigterm_saves_and_exits_then_resumes(tmp_path, reference):
  w = str(tmp_path / "w")
  p = _popen(w, "--config.train.num_steps=40")
  _wait_for_step(w, 6, p)
  t0 = time.monotonic()
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=60)
  assert time.monotonic() - t0 < 30
  assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
  assert "stopped by SIGTERM" in out and "checkpoint saved" in out
  stopped_at = ocp.CheckpointManager(os.path.join(w, "checkpoints")).latest_step()
  assert 6 <= stopped_at < 40  # Saved where it stopped, not only at the periodic steps.
  rc, _, err = _run(w, "--config.train.num_steps=40")
  assert rc == 0, err[-3000:]
  _assert_same_params(w, reference)


@pytest.mark.slow
def test_sigkill_at_three_random_points_resumes_bit_identical(tmp_path, reference):
  w = str(tmp_path / "w")
  rng = random.Random(os.getpid())
  points = sorted(rng.sample(range(3, 36), 3))
  for point in points:
    p = _popen(w, "--config.train.num_steps=40")
    _wait_for_step(w, point, p)
    p.kill()
    p.communicate()
  rc, _, err = _run(w, "--config.train.num_steps=40")
  assert rc == 0, err[-3000:]
  _assert_same_params(w, reference)
  ref = {r["step"]: r["loss"] for r in metrics_lib.read_metrics(reference, "train")}
  got = {r["step"]: r["loss"] for r in metrics_lib.read_metrics(w, "train")}
  assert got == ref, points


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, reference):
  w = str(tmp_path / "w")
  rc, _, err = _run(w, "--config.train.num_steps=20")
  assert rc == 0, err[-3000:]
  latest = os.path.join(w, "checkpoints", "20")
  # Corrupt every data file of the latest checkpoint (a half-written disk).
  for root, _, files in os.walk(latest):
    for f in files:
      path = os.path.join(root, f)
      with open(path, "r+b") as fh:
        fh.truncate(max(0, os.path.getsize(path) // 3))
  rc, out, err = _run(w, "--config.train.num_steps=40")
  assert rc == 0, err[-3000:]
  assert "could not be read" in err
  assert "resuming from step 16" in out
  assert os.path.exists(os.path.join(w, "checkpoints", "40"))
  _assert_same_params(w, reference)


@pytest.mark.slow
def test_restore_onto_a_different_device_count(tmp_path, reference):
  w = str(tmp_path / "w")
  rc, _, err = _run(w, "--config.train.num_steps=20", devices=8)
  assert rc == 0, err[-3000:]
  rc, out, err = _run(w, "--config.train.num_steps=40", devices=1)
  assert rc == 0, err[-3000:]
  assert "resuming from step 20" in out
  _assert_same_params(w, reference, exact=False)  # Reductions split differently on 8.


def test_a_replicated_state_on_cpu_devices_saves_without_compiling_a_slice_per_array(tmp_path):
  """On 8 CPU devices a replicated state is written whole by one replica: orbax's
  replica-parallel writes compiled one slice program per array shape (82 in a tiny GPICL
  run's first save, 1.75 s). Restored bit-identical, replicated again."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  from research import checkpoint
  assert jax.device_count() == 8
  rep = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
  # Shapes no other test saves, so no slice program is in the in-memory cache already.
  state = {f"w{i}": jax.device_put(np.arange(8 * (i + 13), dtype=np.float32).reshape(8, -1), rep)
           for i in range(6)}
  slices = []
  listen = lambda e, d, **kw: slices.append(kw.get("fun_name")) if (
      e.endswith("backend_compile_duration") and "slice" in str(kw.get("fun_name"))) else None
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    mngr = checkpoint.manager(str(tmp_path), max_to_keep=1)
    assert checkpoint.save(mngr, 1, state, {"step": 1}, force=True)
    checkpoint.wait(mngr)
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert slices == []
  abstract = checkpoint.abstract_like(state, jax.tree.map(lambda _: rep, state))
  restored, meta = checkpoint.restore_latest(mngr, abstract)
  assert meta == {"step": 1}
  for k, v in state.items():
    assert restored[k].sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(v))


@pytest.mark.slow
def test_dead_peer_stops_the_survivor(tmp_path):
  w = str(tmp_path / "w")
  port = subprocess.check_output([sys.executable, "-c", "from launch.local import free_port; "
                                  "print(free_port())"], cwd=ROOT, text=True).strip()
  env = dict(os.environ, PYTHONPATH=ROOT)
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.main", *TINY, "--workdir", w, "--config.train.num_steps=100000",
       "--local_devices=1", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}", "--heartbeat_timeout=10"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  _wait_for_step(w, 3, procs[0])
  procs[1].kill()
  t0 = time.monotonic()
  try:
    procs[0].wait(timeout=120)
  finally:
    if procs[0].poll() is None:
      procs[0].kill()
  assert procs[0].returncode not in (0, None)
  assert time.monotonic() - t0 < 120
  err = procs[0].stderr.read()
  assert re.search(r"(heartbeat|unavailable|terminat|connection|coordinat|peer|task)", err, re.I), err[-2000:]


def test_same_config_and_seed_give_identical_metrics(tmp_path):
  from experiments.gpicl import digits
  from research import train
  a = train.train_and_evaluate(digits.get_config("tiny"), str(tmp_path / "a"))
  b = train.train_and_evaluate(digits.get_config("tiny"), str(tmp_path / "b"))
  assert a == b
  strip = lambda rows: [{k: v for k, v in r.items() if k not in ("steps_per_s", "flops_per_s", "mfu",
                                                                "peak_flops_per_device")} for r in rows]
  assert strip(metrics_lib.read_metrics(str(tmp_path / "a"))) == strip(
      metrics_lib.read_metrics(str(tmp_path / "b")))


PICKLE_PATTERNS = re.compile(
    r"^\s*(import pickle|from pickle|import cloudpickle|import dill)|pickle\.loads?\(|"
    r"allow_pickle\s*=\s*True|torch\.load\(|joblib\.load\(", re.M)


def test_nothing_in_the_project_loads_pickle():
  offenders = []
  for top in ("research", "models", "launch", "experiments", "notebooks"):
    for root, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        if f.endswith((".py", ".ipynb")):
          path = os.path.join(root, f)
          with open(path, encoding="utf-8") as fh:
            if PICKLE_PATTERNS.search(fh.read()):
              offenders.append(os.path.relpath(path, ROOT))
  assert not offenders, f"pickle loading found in {offenders}"


def test_paths_from_configs_cannot_escape_the_workdir(tmp_path):
  from research import paths
  w = str(tmp_path / "w")
  assert paths.within(w, "figures/curve.png") == os.path.join(os.path.abspath(w), "figures/curve.png")
  for bad in ("../x", "/etc/passwd", "a/../../x", "~/.ssh/id", ""):
    with pytest.raises(ValueError, match="workdir"):
      paths.within(w, bad)


def _tiny_config(**overrides):
  from experiments.gpicl import digits
  c = digits.get_config("tiny")
  c.update_from_flattened_dict(overrides)
  return c


def test_failed_save_keeps_good_checkpoints(tmp_path, monkeypatch):
  """A save that dies mid-way (disk full, preempted writer) deletes nothing."""
  from research import checkpoint, train
  w = str(tmp_path / "w")
  train.train_and_evaluate(_tiny_config(**{"train.num_steps": 6}), w)
  steps_before = sorted(os.listdir(os.path.join(w, "checkpoints")))
  real_save = checkpoint.save

  def failing_save(mngr, step, *a, **k):
    if step >= 9:
      raise OSError(28, "No space left on device")
    return real_save(mngr, step, *a, **k)

  monkeypatch.setattr(checkpoint, "save", failing_save)
  with pytest.raises(OSError, match="No space"):
    train.train_and_evaluate(_tiny_config(**{"train.num_steps": 12}), w)
  monkeypatch.setattr(checkpoint, "save", real_save)
  assert set(steps_before) <= set(os.listdir(os.path.join(w, "checkpoints")))
  # And the run resumes from the last good checkpoint.
  final = train.train_and_evaluate(_tiny_config(**{"train.num_steps": 12}), w)
  assert final["step"] == 12


def test_half_written_checkpoint_directory_is_ignored(tmp_path, capsys):
  """Orbax writes into a temporary directory and renames it when complete: a
  leftover temporary directory (a writer killed mid-save) is never restored."""
  from research import train
  w = str(tmp_path / "w")
  train.train_and_evaluate(_tiny_config(**{"train.num_steps": 6}), w)
  junk = os.path.join(w, "checkpoints", "9.orbax-checkpoint-tmp-1234", "state")
  os.makedirs(junk)
  with open(os.path.join(junk, "garbage"), "wb") as f:
    f.write(os.urandom(64))
  train.train_and_evaluate(_tiny_config(**{"train.num_steps": 9}), w)
  assert "resuming from step 6" in capsys.readouterr().out
