"""The paper's image datasets through TFDS: MNIST, FashionMNIST, KMNIST, CIFAR10, SVHN.

Read with `tfds.data_source(..., builder_kwargs=dict(file_format="array_record"))`:
random access to array_record files, no TensorFlow at run time, nothing
downloaded. If a set is missing, the error gives the one command that prepares
it (on a machine with internet):

  python -m research.data.prepare mnist fashion_mnist kmnist cifar10 svhn_cropped

Preprocessing (Kirsch et al. 2022, Sec. 4): every image is resized to the
shape `input_dim` asks for — 196 = 14×14 grey (the paper's default), 3072 =
32×32×3 (one input size shared with CIFAR10/SVHN), or any other square grey or
RGB size — then flattened and z-normalised with ONE mean and ONE std over all
pixels and examples of the train split.

Names in configs: "tfds:<name>" (e.g. `config.data.dataset = "tfds:mnist"`),
dispatched by `research.data.offline.load`.
"""
from __future__ import annotations

import math
import os

import numpy as np

from research.data import manifest
from research.data import offline
from research.errors import ConfigError

PREFIX = "tfds:"
# Config name -> TFDS builder name.
DATASETS = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "kmnist": "kmnist",
    "cifar10": "cifar10",
    "svhn": "svhn_cropped",
    "svhn_cropped": "svhn_cropped",
}
NAMES = tuple(PREFIX + n for n in DATASETS)


class DataMissingError(ConfigError, FileNotFoundError):
  """A TFDS set is not prepared; a ConfigError, so `launch.main` prints one line."""


def is_tfds(name: str) -> bool:
  return name.startswith(PREFIX)


def prepare_command(builder: str, data_dir: str | None = None) -> str:
  cmd = f"python -m research.data.prepare {builder}"
  return cmd + (f" --data_dir {data_dir}" if data_dir else "")


def image_shape(input_dim: int) -> tuple[int, int, int]:
  """(H, W, C) for a flattened input size: 196 -> 14×14×1, 3072 -> 32×32×3."""
  side = math.isqrt(input_dim)
  if side * side == input_dim:
    return side, side, 1
  side = math.isqrt(input_dim // 3)
  if input_dim % 3 == 0 and side * side * 3 == input_dim:
    return side, side, 3
  raise ValueError(f"data.input_dim={input_dim} is not a square grey (e.g. 196 = 14×14) or RGB "
                   f"(e.g. 3072 = 32×32×3) image size; TFDS image sets need one of those")


def read_split(name: str, split: str, *, data_dir: str | None = None,
               max_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Raw uint8 images [N, H, W, C] and int32 labels of one split."""
  import tensorflow_datasets as tfds  # Lazy: heavy import, not needed by offline sets.
  builder = DATASETS.get(name)
  if builder is None:
    raise ValueError(f"TFDS dataset {name!r} unknown; use one of {', '.join(NAMES)}")
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
  try:
    source = tfds.data_source(builder, split=split, data_dir=data_dir, download=False,
                              builder_kwargs=dict(file_format="array_record"))
  except Exception as e:  # DatasetNotFoundError, missing files, ...: one message.
    raise DataMissingError(
        f"TFDS dataset {builder!r} ({split}) is not prepared in "
        f"{data_dir or '~/tensorflow_datasets'} ({type(e).__name__}). Prepare it once, on a "
        f"machine with internet, with:\n  {prepare_command(builder, data_dir)}") from e
  _verify_prepared(tfds, builder, data_dir)
  n = len(source) if max_examples is None else min(len(source), max_examples)
  rows = [source[i] for i in range(n)]
  x = np.stack([np.asarray(r["image"], np.uint8) for r in rows])
  y = np.asarray([int(r["label"]) for r in rows], np.int32)
  return x, y


_VERIFIED: set[str] = set()


def _verify_prepared(tfds, builder: str, data_dir: str | None) -> None:
  """Checks the files `research.data.prepare` recorded in MANIFEST.json (once per process)."""
  try:
    prepared_dir = tfds.builder(builder, data_dir=data_dir, file_format="array_record").data_dir
  except Exception:  # Mocked or foreign data: nothing this framework prepared.
    return
  if prepared_dir in _VERIFIED or not os.path.exists(os.path.join(prepared_dir, manifest.NAME)):
    return
  manifest.verify(prepared_dir, prepare_command(builder, data_dir))
  _VERIFIED.add(prepared_dir)


def resize(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """uint8 [N, h, w, c] -> float32 [N, H, W, C]: grey by channel mean, RGB by
  repeating a grey channel, area-averaging (antialiased) resize."""
  import jax  # Lazy: keeps `import research.data.tfds` light.
  h, w, c = shape
  x = images.astype(np.float32)
  if x.shape[-1] != c:
    x = x.mean(-1, keepdims=True) if c == 1 else np.repeat(x.mean(-1, keepdims=True), c, -1)
  if x.shape[1:3] != (h, w):
    out = []
    for i in range(0, len(x), 4096):  # Chunks keep peak memory small.
      chunk = jax.image.resize(x[i:i + 4096], (len(x[i:i + 4096]), h, w, c), "linear",
                               antialias=True)
      out.append(np.asarray(chunk))
    x = np.concatenate(out)
  return x


def load(name: str, *, input_dim: int, data_dir: str | None = None,
         max_train: int | None = None, max_test: int | None = None):
  """An `offline.Dataset` for a TFDS set (name with or without the "tfds:" prefix)."""
  name = name[len(PREFIX):] if is_tfds(name) else name
  shape = image_shape(input_dim)
  x_tr, y_tr = read_split(name, "train", data_dir=data_dir, max_examples=max_train)
  x_te, y_te = read_split(name, "test", data_dir=data_dir, max_examples=max_test)
  x_tr, x_te = resize(x_tr, shape), resize(x_te, shape)
  mean, std = float(x_tr.mean()), float(x_tr.std()) or 1.0
  norm = lambda a: ((a - mean) / std).reshape(len(a), -1).astype(np.float32)
  num_classes = int(max(y_tr.max(), y_te.max())) + 1
  return offline.Dataset(PREFIX + name, norm(x_tr), y_tr, norm(x_te), y_te, num_classes)


for _name in DATASETS:
  offline.DATASETS.register(PREFIX + _name, num_classes=10, kind="tfds")(
      lambda *, test_fraction, seed, dim, _n=_name: load(_n, input_dim=dim))
