"""The in-framework pretrained encoder: it trains, embeds, caches, and runs in the experiment."""
import importlib.util
import os

import numpy as np
import pytest

from research.dkvb import data, encoders, experiment, pretrain
from research.metrics import read_metrics

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "dkvb")


def _pool():
  _, _, x_key = data.digits(0)  # The unlabelled, transformed pool: no stream sample.
  return x_key


def test_autoencoder_trains_and_embeds():
  x = _pool()
  cfg = pretrain.PretrainConfig(dim=8, hidden=64, steps=300, seed=1)
  trained, losses = pretrain.train_autoencoder(x, cfg)
  assert losses.shape == (300,) and np.isfinite(losses).all()
  assert losses[-30:].mean() < 0.5 * losses[:30].mean()  # Reconstruction is learned.
  embed = pretrain.embed_fn(trained, 64, cfg)
  (x_tr, _), _, _ = data.digits(0)
  z = embed(x_tr)
  assert z.shape == (len(x_tr), 8) and z.dtype == np.float32
  assert (z.std(0) > 1e-3).all()  # No dead embedding dimension.
  again, _ = pretrain.train_autoencoder(x, cfg)  # Deterministic in the seed.
  np.testing.assert_array_equal(pretrain.embed_fn(again, 64, cfg)(x_tr), z)


def test_autoencoder_cache_reuse_and_keys(tmp_path, monkeypatch):
  x = _pool()
  calls = []
  train = pretrain.train_autoencoder
  monkeypatch.setattr(pretrain, "train_autoencoder",
                      lambda x, cfg: calls.append(cfg) or train(x, cfg))
  cfg = pretrain.PretrainConfig(dim=4, hidden=16, steps=20)
  enc1 = encoders.make_encoder("autoencoder", x, dim=4, pretrain=dict(hidden=16, steps=20),
                               cache_dir=str(tmp_path))
  enc2 = encoders.make_encoder("autoencoder", x, dim=4, pretrain=dict(hidden=16, steps=20),
                               cache_dir=str(tmp_path))
  assert len(calls) == 1 and calls[0] == cfg
  assert not enc1.info["pretrain_cached"] and enc2.info["pretrain_cached"]
  assert enc1.info["pretrain_loss_last"] == enc2.info["pretrain_loss_last"]
  assert enc1.fingerprint == enc2.fingerprint
  np.testing.assert_array_equal(enc1(x), enc2(x))
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].endswith(".npz")
  np.load(os.path.join(tmp_path, files[0]), allow_pickle=False)  # No pickle inside.
  # Other settings or other data: a new entry, trained again.
  encoders.make_encoder("autoencoder", x, dim=4, pretrain=dict(hidden=16, steps=21),
                        cache_dir=str(tmp_path))
  other = encoders.make_encoder("autoencoder", x[1:], dim=4, pretrain=dict(hidden=16, steps=20),
                                cache_dir=str(tmp_path))
  assert len(calls) == 3 and len(os.listdir(tmp_path)) == 3
  assert other.fingerprint != enc1.fingerprint


def _digits_config(arg):
  spec = importlib.util.spec_from_file_location("dkvb_cfg_digits", os.path.join(CONFIGS, "digits.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_digits_experiment_with_pretrained_encoder(tmp_path):
  cfg = _digits_config("tiny,encoder=autoencoder")
  with cfg.unlocked():
    cfg.only = "dkvb,linear"
    cfg.encoder.pretrain.steps = 20
    cfg.encoder.cache_dir = str(tmp_path / "cache")
  first = experiment.run(cfg, str(tmp_path / "a"))
  assert set(first) == {"dkvb", "linear"}
  rows = read_metrics(str(tmp_path / "a"), kind="encoder/s0")
  assert len(rows) == 1 and rows[0]["pretrain_cached"] is False
  assert any(f.startswith("autoencoder-") for f in os.listdir(tmp_path / "cache"))
  second = experiment.run(cfg, str(tmp_path / "b"))  # Same cache: parameters reused.
  assert read_metrics(str(tmp_path / "b"), kind="encoder/s0")[0]["pretrain_cached"] is True
  assert second["dkvb"]["final_acc_mean"] == first["dkvb"]["final_acc_mean"]
  with cfg.unlocked():
    cfg.only, cfg.encoder.cache_dir = "linear", ""  # No cache dir: <workdir>/cache.
  experiment.run(cfg, str(tmp_path / "c"))
  assert any(f.startswith("autoencoder-") for f in os.listdir(tmp_path / "c" / "cache"))


def test_unknown_pretrain_key_is_rejected(tmp_path):
  cfg = _digits_config("tiny,encoder=autoencoder")
  with cfg.unlocked():
    cfg.encoder.pretrain.stepz = 3
  with pytest.raises(ValueError, match="stepz"):
    experiment.run(cfg, str(tmp_path))
