"""Frozen encoders, the embedding cache, and the TFDS CIFAR path (mock data)."""
import os

import numpy as np
import pytest

from research import encoders
from research.dkvb import data


def test_pca_is_fitted_without_labels_and_orthogonal():
  rng = np.random.default_rng(0)
  fit = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12))
  enc = encoders.make("pca", fit, dim=5)
  z = enc(fit)
  assert z.shape == (200, 5) and z.dtype == np.float32
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
  cov = np.cov(z.T)
  np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-3)
  assert np.all(np.diff(np.diag(cov)) <= 1e-6)  # Components by decreasing variance.


def test_random_relu_and_pixels_and_identity():
  x = np.random.default_rng(0).uniform(size=(30, 4, 4)).astype(np.float32)
  z = encoders.make("random_relu", x, dim=64, seed=1)(x)
  assert z.shape == (30, 64) and (z >= 0).all() and (z > 0).any()
  np.testing.assert_array_equal(encoders.make("random_relu", x, dim=64, seed=1)(x), z)
  np.testing.assert_allclose(encoders.make("pixels", x, scale=2.0)(x),
                             x.reshape(30, -1) / 2)
  assert encoders.make("identity", x)(x).shape == (30, 16)


def test_embedding_cache_reuses_and_keys_by_content(tmp_path):
  calls = []
  x = np.arange(24, dtype=np.float32).reshape(6, 4)

  def fn(b):
    calls.append(len(b))
    return 2 * b
  enc = encoders.Encoder("double", "double/v1", fn, 4)
  z1 = encoders.cached_embed(enc, x, "toy", str(tmp_path))
  z2 = encoders.cached_embed(enc, x, "toy", str(tmp_path))
  np.testing.assert_array_equal(z1, 2 * x)
  np.testing.assert_array_equal(z2, z1)
  assert len(calls) == 1  # Second call read the .npy file.
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].endswith(".npy")
  np.load(os.path.join(tmp_path, files[0]), allow_pickle=False)  # No pickle inside.
  encoders.cached_embed(enc, x + 1, "toy", str(tmp_path))  # Other data: a new entry.
  encoders.cached_embed(encoders.Encoder("double", "double/v2", fn, 4), x, "toy", str(tmp_path))
  assert len(os.listdir(tmp_path)) == 3 and len(calls) == 3


def test_digits_key_init_pool_is_disjoint_and_transformed():
  (x_tr, y_tr), (x_te, y_te), x_key = data.digits(0, "transformed")
  assert x_tr.shape[1] == 64 and len(x_tr) + len(x_te) + len(x_key) == 1797
  (_, _), (_, _), x_hold = data.digits(0, "holdout")
  np.testing.assert_array_equal(
      x_key.reshape(-1, 8, 8), np.flip(np.swapaxes(x_hold.reshape(-1, 8, 8), 1, 2), 2))
  train_rows = {r.tobytes() for r in x_tr}
  assert not any(r.tobytes() in train_rows for r in x_hold)


def test_tfds_cifar_via_mock_data_and_missing_data_error(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    x, y = data.tfds_images("cifar10", "train")
  assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
  assert y.dtype == np.int32 and (0 <= y).all() and (y < 10).all()
  with pytest.raises(FileNotFoundError, match="download_and_prepare"):
    data.tfds_images("cifar10", "train", data_dir=str(tmp_path))


def test_every_encoder_a_config_can_name_is_registered():
  """One registry: the array encoders DKVB offers and the text encoders retrieval uses."""
  names = encoders.ENCODERS.names()
  for name in ("identity", "pixels", "pca", "random_relu", "autoencoder", "minilm"):
    assert name in names
  from research import errors
  with pytest.raises(errors.ConfigError, match="no encoder of that name"):
    encoders.make("pcaa", np.zeros((3, 2)))
