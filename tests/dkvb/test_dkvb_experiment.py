"""Every DKVB config end to end in tiny form, and the toy as a real learning test."""
import importlib.util
import json
import os

import numpy as np
import pytest

from research.dkvb import experiment
from research.metrics import read_metrics

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "dkvb")


def _config(name, arg="tiny"):
  spec = importlib.util.spec_from_file_location(f"dkvb_cfg_{name}", os.path.join(CONFIGS, name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def _check_outputs(workdir, cfg, res):
  assert set(res) == set(cfg.models)
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f).keys() == res.keys()
  assert json.load(open(os.path.join(workdir, "config.json")))["task"] == "dkvb"
  rows = read_metrics(workdir)
  for name, r in res.items():
    assert any(r_["kind"] == f"{name}/s{cfg.seeds[0]}" and "acc" in r_ for r_ in rows)
    for s in r["per_seed"]:
      m = np.asarray(s["acc_matrix"])
      n_stages = 1 if cfg.models[name].iid else len(m[0])
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


def test_unknown_model_name_is_rejected(workdir):
  cfg = _config("toy2d.py")
  with cfg.unlocked():
    cfg.only = "dkvb_1x400,nope"
  with pytest.raises(ValueError, match="nope"):
    experiment.run(cfg, workdir)


def test_bad_choice_is_rejected_naming_the_key(workdir):
  cfg = _config("digits.py")
  with cfg.unlocked():
    cfg.models.dkvb.projection = "randm"
  with pytest.raises(ValueError, match="models.dkvb.projection"):
    experiment.run(cfg, workdir)


def test_toy_dkvb_learns_continually_and_baselines_forget(workdir):
  """Fig. 2: after 4 stages DKVB keeps every class, the probes only the last two."""
  cfg = _config("toy2d.py", "")
  with cfg.unlocked():
    cfg.seeds = (0,)
  res = experiment.run(cfg, workdir)
  for name in ("dkvb_1x400", "dkvb_20x20"):
    assert res[name]["final_acc_mean"] >= 0.99, (name, res[name]["final_acc_mean"])
  for name in ("linear", "mlp"):
    assert abs(res[name]["final_acc_mean"] - 0.25) < 0.03, (name, res[name]["final_acc_mean"])
    assert res[name]["forgetting_mean"] > 0.9
  grid = np.load(os.path.join(workdir, "grid_dkvb_1x400_s0.npz"), allow_pickle=False)
  assert grid["preds"].shape == (4, 100 * 100)
