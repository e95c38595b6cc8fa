"""The in-framework pretrained encoder: a trainer run that trains, embeds, is reused
from its cache directory, and runs inside the DKVB protocol."""
import importlib.util
import os

import numpy as np
import pytest

from research import encoders, errors
from research import metrics as metrics_lib
from research.dkvb import data, experiment, pretrain

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "dkvb")


def _pool():
  _, _, x_key = data.digits(0)  # The unlabelled, transformed pool: no stream sample.
  return x_key


def test_autoencoder_trains_embeds_and_is_deterministic(tmp_path):
  x = _pool()
  settings = dict(hidden=64, steps=300)
  run, final = pretrain.pretrained_autoencoder(x, dim=8, seed=1, settings=settings,
                                               cache_dir=str(tmp_path / "a"))
  losses = [r["loss"] for r in metrics_lib.read_metrics(run.workdir, "train")]
  assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]  # Reconstruction is learned.
  assert final["val_loss"] < 0.5 * final["loss_first"]
  embed = pretrain.embed_fn(run)
  (x_tr, _), _, _ = data.digits(0)
  z = embed(x_tr)
  assert z.shape == (len(x_tr), 8) and z.dtype == np.float32
  assert (z.std(0) > 1e-3).all()  # No dead embedding dimension.
  again, _ = pretrain.pretrained_autoencoder(x, dim=8, seed=1, settings=settings,
                                             cache_dir=str(tmp_path / "b"))
  np.testing.assert_array_equal(pretrain.embed_fn(again)(x_tr), z)  # Deterministic in the seed.


def test_autoencoder_run_is_reused_and_keyed_by_settings_and_data(tmp_path):
  x = _pool()
  make = lambda data, **kw: encoders.make(
      "autoencoder", data, dim=4, pretrain=dict(hidden=16, steps=20, **kw), cache_dir=str(tmp_path))
  enc1 = make(x)
  rows = len(metrics_lib.read_metrics(enc1.info["pretrain_workdir"]))
  enc2 = make(x)  # A finished run: nothing trains again.
  assert len(metrics_lib.read_metrics(enc2.info["pretrain_workdir"])) == rows
  assert enc1.info["pretrain_workdir"] == enc2.info["pretrain_workdir"]
  assert enc1.fingerprint == enc2.fingerprint
  np.testing.assert_array_equal(enc1(x), enc2(x))
  # Other settings or other data: another run.
  make(x, noise=0.2)
  other = make(x[1:])
  assert len([d for d in os.listdir(tmp_path) if d.startswith("autoencoder-")]) == 3
  assert other.fingerprint != enc1.fingerprint


def _digits_config(arg):
  spec = importlib.util.spec_from_file_location("dkvb_cfg_digits", os.path.join(CONFIGS, "digits.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_digits_experiment_with_pretrained_encoder(tmp_path):
  cfg = _digits_config("tiny,encoder=autoencoder")
  cfg.only = "dkvb,linear"
  cfg.encoder.pretrain.steps = 20
  cfg.encoder.cache_dir = str(tmp_path / "cache")
  first = experiment.run(cfg, str(tmp_path / "a"))
  assert set(first) == {"dkvb", "linear"}
  assert "pretrain_loss_last" in first["dkvb"]["per_seed"][0]
  assert any(f.startswith("autoencoder-") for f in os.listdir(tmp_path / "cache"))
  second = experiment.run(cfg, str(tmp_path / "b"))  # Same cache: the pretrained run reused.
  assert second["dkvb"]["final_acc_mean"] == first["dkvb"]["final_acc_mean"]
  cfg.only, cfg.encoder.cache_dir = "linear", ""  # No cache dir: <workdir>/cache.
  experiment.run(cfg, str(tmp_path / "c"))
  assert any(f.startswith("autoencoder-") for f in os.listdir(tmp_path / "c" / "cache"))


def test_unknown_pretrain_key_is_rejected(tmp_path):
  cfg = _digits_config("tiny,encoder=autoencoder")
  with cfg.unlocked():
    cfg.encoder.pretrain.stepz = 3
  with pytest.raises(errors.ConfigError, match="stepz"):
    experiment.run(cfg, str(tmp_path))
