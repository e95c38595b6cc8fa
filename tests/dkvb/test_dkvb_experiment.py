"""Every DKVB config end to end in tiny form, the toy as a real learning test, and the
stream through the trainer: stages as phases, vmapped seeds, kill -9 and resume."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from research import errors
from research import metrics as metrics_lib
from research import runs
from research.dkvb import evaluation
from research.dkvb import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "experiments", "dkvb")


def _config(name, arg="tiny"):
  spec = importlib.util.spec_from_file_location(f"dkvb_cfg_{name}", os.path.join(CONFIGS, name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def _check_outputs(workdir, cfg, res):
  names = [n for n in cfg.only.split(",") if n] or list(cfg.models)
  assert set(res) == set(names)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f).keys() == res.keys()
  assert json.load(open(os.path.join(workdir, "config.json")))["task"] == "dkvb"
  for name, r in res.items():
    run_dir = os.path.join(workdir, name)
    assert json.load(open(os.path.join(run_dir, "config.json")))["task"] == "dkvb_stream"
    rows = metrics_lib.read_metrics(run_dir if cfg.num_seeds == 1 else
                                    os.path.join(run_dir, f"seed_{cfg.seed}"), "eval")
    assert rows and all("acc" in r_ and "acc_se" in r_ for r_ in rows)
    assert r["num_seeds"] == cfg.num_seeds == len(r["per_seed"])
    for s in r["per_seed"]:
      m = np.asarray(s["acc_matrix"])
      n_stages = 1 if cfg.models[name].iid else m.shape[1]
      assert m.shape[0] == n_stages and 0.0 <= s["final_acc"] <= 1.0


@pytest.mark.parametrize("name", ["toy2d.py",
                                  pytest.param("digits.py", marks=pytest.mark.slow)])
def test_config_tiny_end_to_end(name, workdir):
  cfg = _config(name)
  assert cfg.task == "dkvb"
  res = experiment.run(cfg, workdir)
  _check_outputs(workdir, cfg, res)


@pytest.mark.slow
def test_cifar10_config_tiny_on_mock_tfds(workdir):
  tfds = pytest.importorskip("tensorflow_datasets")
  cfg = _config("cifar10.py")
  assert cfg.task == "dkvb"
  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    res = experiment.run(cfg, workdir)
  _check_outputs(workdir, cfg, res)


@pytest.mark.parametrize("key,value,fragment", [
    ("only", "dkvb_1x400,nope", "nope"),
    ("models.dkvb_1x400.projection", "randm", "models.dkvb_1x400.projection"),
    ("models.dkvb_1x400.num_heads", 0, "num_heads"),
    ("models.linear.lr", -1.0, "models.linear.lr"),
    ("stream.classes_per_task", 3, "classes_per_task"),
])
def test_bad_values_are_rejected_naming_the_key(key, value, fragment, workdir):
  cfg = _config("toy2d.py")
  cfg.update_from_flattened_dict({key: value})
  with pytest.raises(errors.ConfigError, match=fragment):
    experiment.run(cfg, workdir)
  assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))


def test_toy_dkvb_learns_continually_and_baselines_forget(workdir):
  """Fig. 2: after 4 stages DKVB keeps every class, the probes only the last two;
  two seeds in one vmapped step."""
  cfg = _config("toy2d.py", "")
  cfg.num_seeds = 2
  res = experiment.run(cfg, workdir)
  for name in ("dkvb_1x400", "dkvb_20x20"):
    assert res[name]["final_acc_mean"] >= 0.99, (name, res[name]["final_acc_mean"])
  for name in ("linear", "mlp"):
    assert abs(res[name]["final_acc_mean"] - 0.25) < 0.03, (name, res[name]["final_acc_mean"])
    assert res[name]["forgetting_mean"] > 0.9
  # The two seeds are different runs (class data differ), not copies.
  a, b = (s["acc_matrix"] for s in res["linear"]["per_seed"])
  assert a != b or res["mlp"]["per_seed"][0] != res["mlp"]["per_seed"][1]
  grid = np.load(os.path.join(workdir, "dkvb_1x400", "seed_0", "grid.npz"), allow_pickle=False)
  assert grid["preds"].shape == (4, 100 * 100)


def test_stream_run_loads_and_evaluates_any_arrays(workdir):
  """runs.load on a model's run; the open evaluation on arrays of your own."""
  cfg = _config("toy2d.py")
  cfg.only = "dkvb_1x400"
  res = experiment.run(cfg, workdir)
  run = runs.load(os.path.join(workdir, "dkvb_1x400"))
  stream = experiment.load_stream(run.config, run.config.seed)
  x, y = stream.test
  out = evaluation.accuracy(run, x, y)
  assert out["n"] == len(y) and 0 <= out["se"] < 0.05
  assert abs(out["balanced_acc"] - res["dkvb_1x400"]["final_acc_mean"]) < 1e-6
  # Only the classes of the first stage, as raw arrays: all right.
  first = np.isin(y, [0, 4])
  assert evaluation.accuracy(run, x[first], y[first])["acc"] > 0.95


def _popen(workdir, *extra):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "launch.main", "--config",
                           "experiments/dkvb/toy2d.py:tiny", "--workdir", workdir,
                           "--config.only=dkvb_20x20,linear", "--config.steps_per_call=10",
                           "--config.stream.epochs_per_task=120",
                           "--config.stream.checkpoint_every_stages=1", *extra], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_in_the_middle_of_a_stream_resumes_bit_identical(tmp_path):
  """kill -9 after stage 2 of 4 (first model), rerun: every final accuracy and the
  parameters are bit-identical to an uninterrupted run."""
  ref = str(tmp_path / "ref")
  p = _popen(ref)
  _, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  w = str(tmp_path / "w")
  p = _popen(w)
  ckpts = os.path.join(w, "dkvb_20x20", "checkpoints")
  t0 = time.monotonic()
  while time.monotonic() - t0 < 300:
    assert p.poll() is None, p.communicate()[1][-3000:]
    # Stage 2 (steps 121-240) done and its checkpoint finalized: killed in stage 3 or 4.
    if os.path.isdir(ckpts) and any(d.isdigit() and int(d) >= 240 for d in os.listdir(ckpts)):
      break
    time.sleep(0.01)
  p.kill()
  p.communicate()
  assert not os.path.exists(os.path.join(w, "final_metrics.json"))
  p = _popen(w)
  out, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  assert "resuming from step 240" in out or "resuming from step 360" in out, out[:300]
  a = json.load(open(os.path.join(ref, "final_metrics.json")))
  b = json.load(open(os.path.join(w, "final_metrics.json")))
  for name in a:
    for x, y in zip(a[name]["per_seed"], b[name]["per_seed"]):
      assert x["acc_matrix"] == y["acc_matrix"] and x["final_acc"] == y["final_acc"], name
  for name in a:
    pa, pb = runs.load(os.path.join(ref, name)).params, runs.load(os.path.join(w, name)).params
    import jax
    for u, v in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("config,batch_size", [("toy2d.py", 0), ("digits.py", 64)])
def test_each_epoch_visits_every_row_once(config, batch_size, tmp_path):
  """A full batch (toy) is the stage's rows in order, unshuffled (the loss does not depend
  on their order); minibatches are a fresh permutation of the valid rows each epoch."""
  import jax
  from research import sharding
  cfg = _config(config)
  with cfg.unlocked():
    cfg.stream.batch_size = batch_size
    cfg.only = "linear"
  sub = experiment.model_run_config(cfg, "linear", str(tmp_path))
  exp = experiment.build(sub, sharding.make_mesh(sub.mesh))
  ps = exp.frozen["per_seed"]
  slots, sps = exp.info["batch_slots_per_epoch"], exp.info["steps_per_stage"]
  assert (slots == 1) == (batch_size == 0)
  n = int(ps["count"][1])
  y_stage = np.asarray(ps["y"][1])
  for epoch in range(2):
    batches = [exp.sample_batch(exp.frozen, jax.random.key(0), sps + epoch * slots + j)
               for j in range(slots)]
    w = np.concatenate([np.asarray(x["w"]) for x in batches])
    y = np.concatenate([np.asarray(x["y"]) for x in batches])[w > 0]
    assert w.sum() == n and sorted(y.tolist()) == sorted(y_stage[:n].tolist())
    if slots == 1:
      np.testing.assert_array_equal(np.asarray(batches[0]["x"]), np.asarray(ps["x"][1]))
    elif epoch == 0:
      first = y
    else:
      assert len(y) == len(first) and (y != first).any()  # Reshuffled each epoch.
