"""Classification sets that exist offline: scikit-learn's bundled tables and images,
`mnist1d` generated locally, and the paper's "Random" set.

Every loader returns a `Dataset` of float32 features and int32 labels with a fixed
train/test split (stratified, seeded), already z-normalised:

* images (digits, mnist1d): one mean and one std over all pixels and examples of
  the train split, as GPICL does for MNIST;
* tables (iris, wine, breast_cancer): per feature, because their columns live on
  unrelated scales (a single scalar would leave most features near zero).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from research.config import ConfigError

IMAGE_SETS = ("digits", "mnist1d")
TABLE_SETS = ("iris", "wine", "breast_cancer")
NAMES = IMAGE_SETS + TABLE_SETS + ("random",)
# TFDS image sets, read from prepared array_record files (research/data/tfds.py).
TFDS_NAMES = ("tfds:mnist", "tfds:fashion_mnist", "tfds:kmnist", "tfds:cifar10", "tfds:svhn",
              "tfds:svhn_cropped")


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  x_train: np.ndarray  # [N, D] float32
  y_train: np.ndarray  # [N] int32
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  @property
  def dim(self) -> int:
    return self.x_train.shape[1]


def _split(x, y, test_fraction, seed):
  """Stratified split, deterministic in `seed`."""
  rng = np.random.default_rng(seed)
  test = np.zeros(len(y), bool)
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    test[idx[: max(1, int(round(test_fraction * len(idx))))]] = True
  return x[~test], y[~test], x[test], y[test]


def _sklearn(name):
  from sklearn import datasets as skd  # Lazy: sklearn's import is slow.
  loader = {"digits": skd.load_digits, "iris": skd.load_iris, "wine": skd.load_wine,
            "breast_cancer": skd.load_breast_cancer}[name]
  d = loader()
  return d.data.astype(np.float32), d.target.astype(np.int32)


def _mnist1d(num_samples=4000, seed=42):
  from mnist1d import data as m1d  # Generated locally from templates: no download.
  args = m1d.get_dataset_args()
  args.num_samples, args.seed = num_samples, seed
  d = m1d.make_dataset(args)
  x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
  y = np.concatenate([d["y"], d["y_test"]]).astype(np.int32)
  return x, y


def load(name: str, *, test_fraction: float = 0.2, seed: int = 0, dim: int = 64) -> Dataset:
  """Loads a dataset by name; `dim` sizes the "random" set and TFDS images.

  "tfds:<name>" (mnist, fashion_mnist, kmnist, cifar10, svhn) reads prepared
  TFDS files with its own fixed train/test splits (research/data/tfds.py); it
  is not cached here, so a test's mocked data never leaks into a later load.
  """
  from research.data import tfds as tfds_data  # Light: TFDS itself is imported on use.
  if tfds_data.is_tfds(name):
    return tfds_data.load(name, input_dim=dim)
  return _load(name, test_fraction=test_fraction, seed=seed, dim=dim)


@functools.lru_cache(maxsize=16)
def _load(name: str, *, test_fraction: float, seed: int, dim: int) -> Dataset:
  if name == "random":
    # GPICL's "Random" set: one random image per class; a learner must memorise
    # the ten (input, label) pairs in context. Train and test are the same ten.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, dim)).astype(np.float32)
    y = np.arange(10, dtype=np.int32)
    return Dataset(name, x, y, x, y, 10)
  if name in ("digits",) + TABLE_SETS:
    x, y = _sklearn(name)
  elif name == "mnist1d":
    x, y = _mnist1d()
  else:
    raise ConfigError(
        f"unknown offline dataset {name!r}; choose one of {', '.join(NAMES)} "
        "(TFDS sets such as mnist go through research.data.tfds)")
  x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, seed)
  if name in IMAGE_SETS:
    mean, std = x_tr.mean(), x_tr.std()
  else:
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 0, std, 1.0)
  norm = lambda a: ((a - mean) / std).astype(np.float32)
  return Dataset(name, norm(x_tr), y_tr, norm(x_te), y_te, int(y.max()) + 1)


def fit_dim(x: np.ndarray, dim: int) -> np.ndarray:
  """Zero-pads features to `dim` (a random projection then mixes them all).

  Wider inputs are refused rather than silently cut.
  """
  if x.shape[1] > dim:
    raise ConfigError(f"dataset has {x.shape[1]} features > data.input_dim={dim}; "
                     f"raise data.input_dim to at least {x.shape[1]}")
  return np.pad(x, ((0, 0), (0, dim - x.shape[1])))
