"""Datasets for the DKVB experiments: the 2-D toy (Fig. 2), sklearn digits, CIFAR via TFDS.

Every loader returns float32 inputs and int32 labels as NumPy arrays, plus an
unlabelled key-initialisation source from *different* data (the paper inits
keys on CIFAR100 for CIFAR10).
"""
from __future__ import annotations

import numpy as np

from research.data import offline

# Fig. 2 of the paper, as in the released notebook: per stage two classes and
# the means of their Gaussian blobs (std 0.035) in the unit square.
TOY_STAGES = (
    ((0, 4), ((0.25, 0.25), (0.75, 0.5))),
    ((1, 5), ((0.75, 0.25), (0.5, 0.75))),
    ((2, 6), ((0.75, 0.75), (0.25, 0.5))),
    ((3, 7), ((0.25, 0.75), (0.5, 0.25))),
)
TOY_STD = 0.035


def toy2d_stage(rng: np.random.Generator, stage: int, n: int) -> tuple[np.ndarray, np.ndarray]:
  """`n` samples of one stage: each picks one of the stage's two classes by a coin."""
  classes, means = TOY_STAGES[stage]
  which = rng.integers(0, 2, size=n)
  x = np.asarray(means, np.float32)[which] + TOY_STD * rng.standard_normal((n, 2))
  return x.astype(np.float32), np.asarray(classes, np.int32)[which]


def toy2d(seed: int, n_train: int = 100, n_test: int = 1000):
  """Per-stage training sets (stage order = task order) and a test set of all stages."""
  rng = np.random.default_rng(seed)
  train = [toy2d_stage(rng, s, n_train) for s in range(len(TOY_STAGES))]
  test = [toy2d_stage(rng, s, n_test // len(TOY_STAGES)) for s in range(len(TOY_STAGES))]
  x_te = np.concatenate([t[0] for t in test])
  y_te = np.concatenate([t[1] for t in test])
  return train, (x_te, y_te)


def toy2d_tasks() -> list[np.ndarray]:
  return [np.asarray(c) for c, _ in TOY_STAGES]


def digits(seed: int, key_init_source: str = "transformed", train_frac: float = 0.5,
           test_frac: float = 0.25):
  """sklearn digits (8×8, 10 classes) split into train / test / unlabelled key-init pool.

  The pool is a disjoint quarter of the images with labels dropped, turned into a
  different dataset by `key_init_source`:
    "transformed": each image transposed and flipped (8×8 glyphs that are not
      upright digits; pixel statistics stay image-like),
    "holdout": the held-out digits as they are (same distribution: an upper bound),
    "noise": uniform pixel noise in [0, 1]^64 (the analogue of the toy's U[0,1]^2).
  Returns ((x_train, y_train), (x_test, y_test), x_key_init), pixels in [0, 1].
  """
  pixels, y = offline.sklearn_set("digits")  # Bundled with scikit-learn: no download.
  x = (pixels.reshape(-1, 8, 8) / 16.0).astype(np.float32)
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(y))
  n_tr, n_te = int(train_frac * len(y)), int(test_frac * len(y))
  tr, te, pool = perm[:n_tr], perm[n_tr:n_tr + n_te], perm[n_tr + n_te:]
  if key_init_source == "transformed":
    x_key = np.flip(np.swapaxes(x[pool], 1, 2), axis=2)
  elif key_init_source == "holdout":
    x_key = x[pool]
  elif key_init_source == "noise":
    x_key = rng.uniform(size=(len(pool), 8, 8)).astype(np.float32)
  else:
    raise ValueError(f"unknown key_init_source {key_init_source!r}")
  flat = lambda a: np.ascontiguousarray(a.reshape(len(a), -1), dtype=np.float32)
  return (flat(x[tr]), y[tr]), (flat(x[te]), y[te]), flat(x_key)


PREPARE_HINT = ("TFDS dataset {name!r} not found in data_dir={data_dir!r}. Prepare it once "
                "(needs internet) with:\n  python -c \"import tensorflow_datasets as tfds; "
                "tfds.builder('{name}', data_dir={data_dir!r}, file_format='array_record')"
                ".download_and_prepare()\"")


def tfds_images(name: str, split: str, data_dir: str | None = None,
                max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Images (N, H, W, C) uint8 and labels of a TFDS image dataset (cifar10, cifar100).

  Read with `tfds.data_source` (array_record, no TensorFlow needed). Raises
  FileNotFoundError with the prepare command if the data is not there: nothing
  is downloaded at run time.
  """
  import tensorflow_datasets as tfds
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # DatasetNotFoundError, AssertionError on missing files, ...
    raise FileNotFoundError(PREPARE_HINT.format(name=name, data_dir=data_dir)) from e
  n = len(source) if max_examples is None else min(len(source), max_examples)
  rows = [source[i] for i in range(n)]
  x = np.stack([np.asarray(r["image"], np.uint8) for r in rows])
  y = np.asarray([int(r["label"]) for r in rows], np.int32)
  return x, y
