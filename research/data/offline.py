"""Classification sets that exist offline: scikit-learn's bundled tables and images,
`mnist1d` generated locally, and the paper's "Random" set.

Every dataset is an entry of the `DATASETS` registry (a new one is one file in
`research/data/` that registers its loader and class count). Every loader returns
a `Dataset` of float32 features and int32 labels with a fixed train/test split
(stratified, seeded), already z-normalised:

* images (digits, mnist1d): one mean and one std over all pixels and examples of
  the train split, as GPICL does for MNIST;
* tables (iris, wine, breast_cancer): per feature, because their columns live on
  unrelated scales (a single scalar would leave most features near zero).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
import zipfile

import numpy as np

from models.registry import Registry
from research import paths
from research import workdir as workdir_lib
from research.errors import ConfigError

# name -> loader(test_fraction, seed, dim) -> Dataset; meta: num_classes, kind.
DATASETS = Registry("dataset", ("research.data",), config_key="config.data.dataset")

IMAGE_SETS = ("digits", "mnist1d")
TABLE_SETS = ("iris", "wine", "breast_cancer")


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


def sklearn_set(name: str) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled set `name` (digits, iris, wine, breast_cancer): float32
  features, int32 labels. Read through scikit-learn once, then from an .npz under
  $RESEARCH_DATA_CACHE (default ~/.cache/research/data), keyed by its version: importing
  scikit-learn takes ~1.1 s of every run's start-up on the 2-core dev machine, the .npz a
  few milliseconds."""
  import importlib.metadata
  root = paths.user_cache("RESEARCH_DATA_CACHE", "data")
  path = os.path.join(root, f"scikit-learn-{importlib.metadata.version('scikit-learn')}",
                      f"{name}.npz")
  try:
    with np.load(path) as f:
      return f["x"], f["y"]
  except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
    pass  # Not cached yet, or a torn file: read it again.
  from sklearn import datasets as skd  # Lazy: sklearn's import is slow.
  loader = {"digits": skd.load_digits, "iris": skd.load_iris, "wine": skd.load_wine,
            "breast_cancer": skd.load_breast_cancer}[name]
  d = loader()
  x, y = d.data.astype(np.float32), d.target.astype(np.int32)
  buf = io.BytesIO()
  np.savez(buf, x=x, y=y)
  try:  # Atomic: a concurrent reader sees all of it or nothing.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    workdir_lib.write_atomic(path, buf.getvalue())
  except (OSError, workdir_lib.WriteError):
    pass  # A read-only home: no cache, the same data.
  return x, y


def _mnist1d(num_samples=4000, seed=42):
  from mnist1d import data as m1d  # Generated locally from templates: no download.
  args = m1d.get_dataset_args()
  args.num_samples, args.seed = num_samples, seed
  d = m1d.make_dataset(args)
  x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
  y = np.concatenate([d["y"], d["y_test"]]).astype(np.int32)
  return x, y


def load(name: str, *, test_fraction: float = 0.2, seed: int = 0, dim: int = 64) -> Dataset:
  """Loads a registered dataset by name; `dim` sizes the "random" set and TFDS images.

  "tfds:<name>" (mnist, fashion_mnist, kmnist, cifar10, svhn) reads prepared
  TFDS files with its own fixed train/test splits (research/data/tfds.py); it
  is not cached here, so a test's mocked data never leaks into a later load.
  """
  return DATASETS.get(name).obj(test_fraction=test_fraction, seed=seed, dim=dim)


def num_classes(name: str) -> int:
  """Classes of a registered dataset, without loading it."""
  return DATASETS.get(name).num_classes


def names(kind: str | None = None) -> list[str]:
  return [e.name for e in DATASETS.entries() if kind is None or e.kind == kind]


@DATASETS.register("random", num_classes=10, kind="offline")
def _random(*, test_fraction: float, seed: int, dim: int) -> Dataset:
  """GPICL's "Random" set: one random image per class; a learner must memorise the
  ten (input, label) pairs in context. Train and test are the same ten."""
  del test_fraction
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((10, dim)).astype(np.float32)
  y = np.arange(10, dtype=np.int32)
  return Dataset("random", x, y, x, y, 10)


def _register(name: str, classes: int, raw):
  @functools.lru_cache(maxsize=4)
  def load_split(*, test_fraction: float, seed: int, dim: int) -> Dataset:
    del dim  # Fixed-size features; padded by the experiment.
    x, y = raw()
    x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, seed)
    if name in IMAGE_SETS:
      mean, std = x_tr.mean(), x_tr.std()
    else:
      mean, std = x_tr.mean(0), x_tr.std(0)
      std = np.where(std > 0, std, 1.0)
    norm = lambda a: ((a - mean) / std).astype(np.float32)
    return Dataset(name, norm(x_tr), y_tr, norm(x_te), y_te, int(y.max()) + 1)
  load_split.__module__ = __name__
  DATASETS.register(name, num_classes=classes, kind="offline")(load_split)


for _name, _classes in (("digits", 10), ("iris", 3), ("wine", 3), ("breast_cancer", 2)):
  _register(_name, _classes, functools.partial(sklearn_set, _name))
_register("mnist1d", 10, _mnist1d)


def fit_dim(x: np.ndarray, dim: int) -> np.ndarray:
  """Zero-pads features to `dim` (a random projection then mixes them all).

  Wider inputs are refused rather than silently cut.
  """
  if x.shape[1] > dim:
    raise ConfigError(f"dataset has {x.shape[1]} features > data.input_dim={dim}; "
                     f"raise data.input_dim to at least {x.shape[1]}")
  return np.pad(x, ((0, 0), (0, dim - x.shape[1])))
