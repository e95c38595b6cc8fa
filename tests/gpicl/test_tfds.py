"""TFDS image sets (mocked: no data, no TensorFlow on this machine) and the
paper-scale configs in tiny form on them."""
import numpy as np
import pytest

from research import train
from research.data import offline
from research.data import tfds as tfds_data

tfds = pytest.importorskip("tensorflow_datasets")


def _mock(n=40):
  return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)


def test_tensorflow_not_needed():
  import importlib.util
  assert importlib.util.find_spec("tensorflow") is None  # Mock data works without it.


@pytest.mark.parametrize("name,dim,classes", [("tfds:mnist", 196, 10), ("tfds:svhn", 3072, 10),
                                              ("tfds:fashion_mnist", 3072, 10),
                                              ("tfds:cifar10", 196, 10), ("tfds:kmnist", 196, 10)])
def test_load_shapes_and_normalisation(name, dim, classes):
  with _mock():
    d = offline.load(name, dim=dim)
  assert d.x_train.shape == (40, dim) and d.x_test.shape == (40, dim)
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
  assert d.num_classes == classes
  # One mean and one std over all pixels and examples of the train split.
  assert abs(d.x_train.mean()) < 1e-4 and abs(d.x_train.std() - 1) < 1e-3


def test_image_shape():
  assert tfds_data.image_shape(196) == (14, 14, 1)
  assert tfds_data.image_shape(3072) == (32, 32, 3)
  assert tfds_data.image_shape(784) == (28, 28, 1)
  with pytest.raises(ValueError, match="input_dim=150 is not"):
    tfds_data.image_shape(100 + 50)


def test_resize_grey_average_and_rgb_repeat():
  img = np.zeros((1, 28, 28, 1), np.uint8)
  img[:, :14] = 200
  small = tfds_data.resize(img, (14, 14, 1))
  assert small.shape == (1, 14, 14, 1)
  assert np.allclose(small[0, :6], 200, atol=1) and np.allclose(small[0, 8:], 0, atol=1)
  rgb = tfds_data.resize(img, (32, 32, 3))
  assert rgb.shape == (1, 32, 32, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
  colour = np.zeros((1, 32, 32, 3), np.uint8)
  colour[..., 0] = 90
  assert np.allclose(tfds_data.resize(colour, (14, 14, 1)), 30, atol=0.5)  # Channel mean.


def test_missing_data_names_the_prepare_command(tmp_path):
  with pytest.raises(tfds_data.DataMissingError,
                     match=r"python -m research\.data\.prepare mnist --data_dir"):
    tfds_data.read_split("mnist", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize("config_name", ["mnist_paper", pytest.param("mnist_32x32x3", marks=pytest.mark.slow)])
def test_paper_scale_configs_tiny_on_mock_data(config_name, workdir):
  import importlib
  cfg = importlib.import_module(f"experiments.gpicl.{config_name}").get_config("tiny")
  assert cfg.data.dataset == "tfds:mnist" and cfg.model.layout == "paper"
  full = importlib.import_module(f"experiments.gpicl.{config_name}").get_config()
  assert (full.train.batch_size, full.data.seq_len, full.train.num_steps) == (512, 100, 50_000)
  assert (full.model.d_model, full.model.num_layers, full.model.num_heads) == (256, 4, 8)
  with _mock(60):
    final = train.run(cfg, workdir)
  assert 0 <= final["unseen/acc_last"] <= 1
  assert "tfds:fashion_mnist/acc_curve" in final and len(final["random/acc_curve"]) == cfg.data.seq_len
  assert "plateau_steps" in final
