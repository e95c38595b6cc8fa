"""The trainer: end to end, resume bit for bit, sharding invariance, one trace."""
import json
import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
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


def _tiny_step():
  """(mesh, experiment, train step, fresh state) of the tiny config, on one device."""
  config = tiny()
  mesh = sharding.make_mesh(config.mesh)
  exp = train.build_experiment(config, mesh)
  tx = optim.make_optimizer(config)
  state = nn.unbox(train.new_state_fn(exp, tx)(jax.random.key(1)))
  return mesh, exp, train.make_train_step(exp, tx, sharding.replicated(mesh)), state


def test_train_step_traces_once():
  mesh, exp, step, state = _tiny_step()
  step = chex.assert_max_traces(step, n=1)
  rep = sharding.replicated(mesh)
  state = jax.device_put(state, rep)
  frozen = jax.device_put(exp.frozen or {}, rep)
  jitted = jax.jit(step, in_shardings=(rep, rep, None, rep), out_shardings=(rep, rep),
                   donate_argnums=0)
  for _ in range(3):
    state, m = jitted(state, frozen, None, jax.random.key(0))
  assert int(state["step"]) == 3 and np.isfinite(float(m["loss"]))


def test_finite_check_is_computed_once_not_fused_into_every_leaf():
  """The skip-a-bad-update flag is one value: XLA once fused the whole finiteness
  reduction into every leaf's select (a program quadratic in the number of leaves
  that took twice as long to compile)."""
  _, exp, step, state = _tiny_step()
  hlo = jax.jit(step).lower(state, exp.frozen or {}, None, jax.random.key(0)).compile().as_text()
  checked = [x for x in jax.tree.leaves((state["params"], state["opt_state"]))
             if jnp.issubdtype(x.dtype, jnp.inexact)]
  # Each checked array once (new params, new optimizer state), plus the loss metrics.
  count = hlo.count("is-finite(")
  assert count <= len(checked) + 8, count


def test_grad_accumulation_matches_full_batch(tmp_path):
  # SGD: Adam would amplify float noise in exactly-zero gradients (attention key bias).
  sgd = {"train.num_steps": 2, "optimizer.name": "sgd", "optimizer.learning_rate": 0.5}
  train.train_and_evaluate(tiny(**sgd), str(tmp_path / "a"))
  train.train_and_evaluate(tiny(**sgd, **{"train.grad_accum_steps": 2}), str(tmp_path / "b"))
  np.testing.assert_allclose(losses(str(tmp_path / "a")), losses(str(tmp_path / "b")), rtol=1e-5)
  # The same work per update: XLA's cost analysis sees one micro-batch of the loop (28 %
  # low here before the trainer scaled it back), 3 % off after.
  flops = [metrics_lib.read_metrics(str(tmp_path / w), "train")[-1]["flops_per_step"]
           for w in "ab"]
  np.testing.assert_allclose(flops[1], flops[0], rtol=0.05)
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
def test_devices_processes_and_pipelines_agree(tmp_path):
  """The same config on 1 device, a 4x2 (data x model) mesh, and 2 processes; then the host
  pipeline (each process builds only its rows: make_array_from_process_local_data) on 1 and
  2 processes. The losses do not depend on the devices or the process count. Evaluation
  sets and classical learners off: only the training losses are compared."""
  common = ["--config", "experiments/gpicl/digits.py:tiny", "--config.train.progress=False",
            "--config.tasks.sequences_per_task=2", "--config.eval.datasets=()",
            "--config.eval.classical=()"]
  main = ["launch.main", "--local_devices=1"]
  local = ["launch.local", "--num_processes=2", "--local_devices=1", "--timeout=400", "--"]
  eight = ["launch.main", "--local_devices=8"]
  host, tp = ["--config.data.pipeline=host"], ["--config.sharding.rules=tp",
                                              "--config.mesh=((\"data\", 4), (\"model\", 2))"]
  runs = {"one": (main, []), "eight": (eight, tp), "two": (local, []),
          "host_one": (main, host), "host_two": (local, host)}
  for name, (launcher, extra) in runs.items():
    r = _run_cli([*launcher, *common, *extra, "--workdir", str(tmp_path / name)])
    assert r.returncode == 0, (name, r.stderr[-3000:])
  ref = losses(str(tmp_path / "one"))
  assert len(ref) == 3 and np.all(np.isfinite(ref))
  for other in ("eight", "two"):
    np.testing.assert_allclose(losses(str(tmp_path / other)), ref, rtol=1e-5, err_msg=other)
  host_ref = losses(str(tmp_path / "host_one"))
  np.testing.assert_allclose(losses(str(tmp_path / "host_two")), host_ref, rtol=1e-5)
  # Not the device pipeline's stream: the batches really came from the host path.
  assert host_ref != ref


# ---------------------------------------------------------------------------
# Replicas, multi-update calls, phases and inactive steps.
# ---------------------------------------------------------------------------
def test_vmapped_seeds_match_separate_runs(tmp_path):
  """train.num_seeds = 2 trains seeds 0 and 1 in one vmapped step: each replica is the
  run that seed alone gives (to float rounding), with its rows in seed_<s>/."""
  from research import runs
  train.train_and_evaluate(tiny(**{"train.num_seeds": 2}), str(tmp_path / "v"))
  for s in (0, 1):
    train.train_and_evaluate(tiny(seed=s), str(tmp_path / f"s{s}"))
    replica = runs.load(str(tmp_path / "v")).replica(s)
    alone = runs.load(str(tmp_path / f"s{s}"))
    for x, y in zip(jax.tree.leaves(replica.params), jax.tree.leaves(alone.params)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
    assert len(losses(str(tmp_path / "v" / f"seed_{s}"))) == len(losses(str(tmp_path / f"s{s}")))


def test_replica_frozen_slices_replicated_on_the_host_and_sharded_in_a_program():
  """A replica's view of `frozen["per_seed"]`: the same values whether its arrays are
  replicated (sliced on the host, placed replicated again) or sharded (the jitted slice);
  what is not per seed is passed through."""
  mesh = sharding.make_mesh((("data", 8), ("model", 1)))
  x = np.arange(3 * 8 * 2, dtype=np.float32).reshape(3, 8, 2)
  rep = {"x": sharding.put_replicated(x, mesh), "n": sharding.put_replicated(np.arange(3), mesh)}
  sharded = dict(rep, x=sharding.put_global(
      x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))))
  pool = jnp.ones(4)
  for per_seed in (rep, sharded):
    for s in range(3):
      view = train.replica_frozen({"per_seed": per_seed, "pool": pool}, s, 3)
      np.testing.assert_array_equal(np.asarray(view["per_seed"]["x"]), x[s])
      assert int(view["per_seed"]["n"]) == s and view["pool"] is pool
      assert view["per_seed"]["x"].sharding.is_fully_replicated == (per_seed is rep)
  assert train.replica_frozen({"per_seed": rep}, 0, 1)["per_seed"] is rep


def test_seeds_summary_se_is_over_seeds_not_the_mean_of_per_seed_se():
  """`acc_se` in a vmapped-seeds summary is the standard error over seeds; a seed's own
  `acc_se` (over its sequences) must not overwrite it (it once did)."""
  from research import stats
  finals = [{"step": 5, "acc": a, "acc_se": 0.03} for a in (0.96, 0.94, 0.93)]
  out = train.seeds_summary([0, 1, 2], finals)
  mean, se, _ = stats.mean_se([0.96, 0.94, 0.93])
  assert out["acc"] == mean and out["acc_se"] == se and se < 0.01
  assert "acc_se_se" not in out and out["per_seed"][0]["acc_se"] == 0.03


def test_steps_per_call_is_bit_identical_to_one_step_per_call(tmp_path, monkeypatch):
  """Calls of 4 then 2 updates (the log step cuts the second short): the same bits as
  one update per call, from one compiled program for both lengths."""
  every = {"train.log_every": 6, "train.eval_every": 6, "train.checkpoint_every": 6}
  train.train_and_evaluate(tiny(**every), str(tmp_path / "one"))
  built, jitted = [], train.StepFunctions.jitted
  monkeypatch.setattr(train.StepFunctions, "jitted",
                      lambda self, n: built.append(n) or jitted(self, n))
  train.train_and_evaluate(tiny(**every, **{"train.steps_per_call": 4}), str(tmp_path / "four"))
  assert built == [None], built  # One program, the call length its argument.
  for x, y in zip(jax.tree.leaves(restore_params(str(tmp_path / "one"), 6)),
                  jax.tree.leaves(restore_params(str(tmp_path / "four"), 6))):
    np.testing.assert_array_equal(x, y)
  assert losses(str(tmp_path / "one")) == losses(str(tmp_path / "four"))


def _quadratic_experiment(phases=(), reset=False, active=None):
  """w (2,) pulled towards [1, -1]; a batch is the step itself (to see which ran)."""
  import jax.numpy as jnp
  from research import experiment as experiment_lib
  target = jnp.asarray([1.0, -1.0])
  return experiment_lib.Experiment(
      init_params=lambda key: {"w": jnp.zeros(2)},
      sample_batch=lambda frozen, key, step: {"step": jnp.full((2,), step)},
      loss_fn=lambda p, f, b, k: (jnp.sum((p["w"] - target) ** 2), {}),
      evaluate=lambda p, f, s: {}, phases=phases, reset_optimizer=reset, active=active)


def _run_steps(exp, tx, n):
  import jax.numpy as jnp
  mesh = sharding.make_mesh((("data", 1), ("model", 1)))
  step = jax.jit(train.make_train_step(exp, tx, sharding.replicated(mesh)))
  params = exp.init_params(None)
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
           "nonfinite_total": jnp.int32(0), "nonfinite_run": jnp.int32(0)}
  history = []
  for _ in range(n):
    state, _ = step(state, {}, None, jax.random.key(0))
    history.append(state)
  return history


def test_inactive_steps_change_nothing_and_phases_reset_the_optimizer():
  import jax.numpy as jnp
  tx = optax.sgd(0.1, momentum=0.9)
  # Step 1 inactive: parameters and momentum after it equal those after step 0.
  skip = _run_steps(_quadratic_experiment(active=lambda f, s: s != 1), tx, 3)
  np.testing.assert_array_equal(skip[1]["params"]["w"], skip[0]["params"]["w"])
  jax.tree.map(np.testing.assert_array_equal, skip[1]["opt_state"], skip[0]["opt_state"])
  assert int(skip[1]["nonfinite_total"]) == 0  # Inactive is not "bad".
  # A phase starting at step 2 with reset: the update of step 2 uses fresh momentum,
  # i.e. equals plain SGD's first step from the parameters after step 1.
  plain = _run_steps(_quadratic_experiment(), tx, 3)
  reset = _run_steps(_quadratic_experiment(phases=(2,), reset=True), tx, 3)
  np.testing.assert_array_equal(reset[1]["params"]["w"], plain[1]["params"]["w"])
  w1 = plain[1]["params"]["w"]
  fresh = w1 - 0.1 * 2 * (w1 - jnp.asarray([1.0, -1.0]))
  np.testing.assert_allclose(reset[2]["params"]["w"], fresh, rtol=1e-6)
  assert not np.allclose(plain[2]["params"]["w"], fresh)  # Without reset, momentum carries.


def test_host_pipeline_resumes_bit_identical_from_the_checkpointed_iterator(tmp_path):
  """The host pipeline is a grain iterator over steps; its state is saved with the
  checkpoint and a resumed run gets the batches an uninterrupted one got."""
  host = {"data.pipeline": "host"}
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  train.train_and_evaluate(tiny(**host), a)
  train.train_and_evaluate(tiny(**host, **{"train.num_steps": 3}), b)
  mngr = ocp.CheckpointManager(os.path.join(b, "checkpoints"))
  meta = mngr.restore(3, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  assert meta["data"] == {"next_index": 3}
  train.train_and_evaluate(tiny(**host), b)
  for x, y in zip(jax.tree.leaves(restore_params(a, 6)), jax.tree.leaves(restore_params(b, 6))):
    np.testing.assert_array_equal(x, y)


def test_run_once_programs_give_bit_identical_weights():
  """Initialisation compiles at XLA CPU level 1 (`research.compiling.run_once`) because it
  compiles faster; the weights must equal those at XLA's default level bit for bit (level
  0 would not: without fused multiply-adds the normal draws move in the last bit)."""
  from research import compiling

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      for width in (64, 256, 64):
        x = nn.Dense(width)(x)
      return nn.Embed(100, 32)(jnp.zeros((1,), jnp.int32)), x

  init = lambda key: Net().init(key, jnp.zeros((1, 16)))
  # Level 2 named: the tests' own default is level 1 (conftest).
  default = jax.jit(init, compiler_options={compiling.OPT_LEVEL: 2})(jax.random.key(0))
  chex.assert_trees_all_equal(jax.jit(init, compiler_options=compiling.run_once())(
      jax.random.key(0)), default)
