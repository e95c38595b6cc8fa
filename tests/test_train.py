"""The trainer: end to end, resume bit for bit, sharding invariance, one trace."""
import json
import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from experiments.gpicl import digits
from research import metrics as metrics_lib
from research import optim
from research import sharding
from research import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  c = digits.get_config("tiny")
  c.update_from_flattened_dict(overrides)
  return c


def restore_params(workdir, step):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return out["state"]["params"]


def losses(workdir):
  return [r["loss"] for r in metrics_lib.read_metrics(workdir, "train")]


def test_end_to_end_writes_everything(workdir):
  final = train.train_and_evaluate(tiny(), workdir)
  for name in ("config.json", "metrics.jsonl", "final_metrics.json", "icl_curves.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert final["step"] == 6
  assert len(final["unseen/acc_curve"]) == 12
  train_rows = metrics_lib.read_metrics(workdir, "train")
  assert [r["step"] for r in train_rows] == [2, 4, 6]
  for r in train_rows:
    assert r["flops_per_step"] > 0 and r["flops_per_s"] > 0 and np.isfinite(r["loss"])
  # Running again says it is finished and returns the same metrics.
  assert train.train_and_evaluate(tiny(), workdir) == final


def test_resume_is_bit_identical(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  train.train_and_evaluate(tiny(), a)
  train.train_and_evaluate(tiny(**{"train.num_steps": 3}), b)  # "Preempted" at step 3.
  train.train_and_evaluate(tiny(), b)                            # Resume to 6.
  pa, pb = restore_params(a, 6), restore_params(b, 6)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(x, y)
  # Same losses at every step both logged (b also logged step 3, where it stopped).
  la = {r["step"]: r["loss"] for r in metrics_lib.read_metrics(a, "train")}
  lb = {r["step"]: r["loss"] for r in metrics_lib.read_metrics(b, "train")}
  assert la == {s: lb[s] for s in la}


def test_train_step_traces_once():
  config = tiny()
  mesh = sharding.make_mesh(config.mesh)
  exp = train.build_experiment(config, mesh)
  tx = optim.make_optimizer(config)
  step = chex.assert_max_traces(train.make_train_step(exp, tx, sharding.replicated(mesh)), n=1)
  params = nn.unbox(exp.init_params(jax.random.key(1)))
  state = {"step": np.int32(0), "params": params, "opt_state": tx.init(params),
           "nonfinite_total": np.int32(0), "nonfinite_run": np.int32(0)}
  rep = sharding.replicated(mesh)
  state = jax.device_put(state, rep)
  frozen = jax.device_put(exp.frozen or {}, rep)
  jitted = jax.jit(step, in_shardings=(rep, rep, None, rep), out_shardings=(rep, rep),
                   donate_argnums=0)
  for _ in range(3):
    state, m = jitted(state, frozen, None, jax.random.key(0))
  assert int(state["step"]) == 3 and np.isfinite(float(m["loss"]))


def test_grad_accumulation_matches_full_batch(tmp_path):
  # SGD: Adam would amplify float noise in exactly-zero gradients (attention key bias).
  sgd = {"train.num_steps": 2, "optimizer.name": "sgd", "optimizer.learning_rate": 0.5}
  train.train_and_evaluate(tiny(**sgd), str(tmp_path / "a"))
  train.train_and_evaluate(tiny(**sgd, **{"train.grad_accum_steps": 2}), str(tmp_path / "b"))
  np.testing.assert_allclose(losses(str(tmp_path / "a")), losses(str(tmp_path / "b")), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(restore_params(str(tmp_path / "a"), 2)),
                  jax.tree.leaves(restore_params(str(tmp_path / "b"), 2))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_nonfinite_steps_are_skipped_then_halt(tmp_path):
  """A NaN learning rate poisons every update: skipped, counted, then a clean stop."""
  c = tiny(**{"train.num_steps": 6, "train.max_nonfinite_steps": 3})
  mesh = sharding.make_mesh(c.mesh)
  exp = train.build_experiment(c, mesh)
  bad_loss = lambda p, f, b, k: (lambda l, m: (l * np.nan, m))(*exp.loss_fn(p, f, b, k))
  import dataclasses
  poisoned = dataclasses.replace(exp, loss_fn=bad_loss)
  orig = train.build_experiment
  train.build_experiment = lambda config, mesh: poisoned
  try:
    with pytest.raises(train.NonFiniteError, match="consecutive"):
      train.train_and_evaluate(c, str(tmp_path / "w"))
  finally:
    train.build_experiment = orig
  rows = metrics_lib.read_metrics(str(tmp_path / "w"), "train")
  assert rows[-1]["nonfinite_total"] >= 3
  # The saved state is the initial (last good) one: updates were skipped.
  mngr = ocp.CheckpointManager(os.path.join(str(tmp_path / "w"), "checkpoints"))
  assert mngr.latest_step() is not None


def _run_cli(args, env_extra=None, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.slow
def test_one_device_eight_devices_and_two_processes_agree(tmp_path):
  """The same config on 1 device, a 4x2 (data x model) mesh, and 2 processes."""
  common = ["--config", "experiments/gpicl/digits.py:tiny", "--config.train.progress=False"]
  one = _run_cli(["launch.main", *common, "--workdir", str(tmp_path / "one"),
                  "--local_devices=1"])
  assert one.returncode == 0, one.stderr[-3000:]
  eight = _run_cli(["launch.main", *common, "--workdir", str(tmp_path / "eight"),
                    "--local_devices=8", "--config.mesh=((\"data\", 4), (\"model\", 2))",
                    "--config.sharding.rules=tp"])
  assert eight.returncode == 0, eight.stderr[-3000:]
  two = _run_cli(["launch.local", "--num_processes=2", "--local_devices=1", "--timeout=400", "--",
                  *common, "--workdir", str(tmp_path / "two")])
  assert two.returncode == 0, two.stderr[-3000:]
  ref = losses(str(tmp_path / "one"))
  assert len(ref) == 3
  for other in ("eight", "two"):
    np.testing.assert_allclose(losses(str(tmp_path / other)), ref, rtol=1e-5, err_msg=other)


@pytest.mark.slow
def test_host_pipeline_one_and_two_processes_agree(tmp_path):
  """Host pipeline: each process builds only its rows (make_array_from_process_local_data);
  the global batch, hence the losses, do not depend on the process count."""
  common = ["--config", "experiments/gpicl/digits.py:tiny", "--config.train.progress=False",
            "--config.data.pipeline=host", "--config.tasks.sequences_per_task=2"]
  one = _run_cli(["launch.main", *common, "--workdir", str(tmp_path / "one"),
                  "--local_devices=1"])
  assert one.returncode == 0, one.stderr[-3000:]
  two = _run_cli(["launch.local", "--num_processes=2", "--local_devices=1", "--timeout=400", "--",
                  *common, "--workdir", str(tmp_path / "two")])
  assert two.returncode == 0, two.stderr[-3000:]
  ref = losses(str(tmp_path / "one"))
  assert len(ref) == 3 and np.all(np.isfinite(ref))
  np.testing.assert_allclose(losses(str(tmp_path / "two")), ref, rtol=1e-5)
  # Not the device pipeline's stream: the batches really came from the host path.
  dev = _run_cli(["launch.main", *common[:-2], "--config.tasks.sequences_per_task=2",
                  "--workdir", str(tmp_path / "dev"), "--local_devices=1"])
  assert dev.returncode == 0, dev.stderr[-3000:]
  assert losses(str(tmp_path / "dev")) != ref
