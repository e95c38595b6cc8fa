"""Frozen encoders by name: arrays (or texts) -> embeddings, for DKVB's backbone and
the ICL harness's retrieval.

An encoder is a registered factory `(fit_data, *, dim, seed, scale, pretrain,
cache_dir) -> Encoder`; `fit_data` is unlabelled data an encoder may be fitted on
(PCA, random features, a pretrained autoencoder) and is ignored by fixed ones.
A new encoder is one file that registers itself (`research/dkvb/encoders.py`
registers the array encoders, `research/icl/retrieval.py` its text embedders).
`cached_embed` stores embeddings on disk keyed by the encoder and the data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Callable

import numpy as np

from models.registry import Registry

ENCODERS = Registry("encoder", ("research",), config_key="config.encoder.name")


@dataclasses.dataclass(frozen=True)
class Encoder:
  name: str
  fingerprint: str  # Changes whenever the function changes (fit data, seed, dims).
  fn: Callable[[np.ndarray], np.ndarray]
  dim: int
  info: dict = dataclasses.field(default_factory=dict, compare=False)  # E.g. pretraining loss.

  def __call__(self, x, batch_size: int = 4096) -> np.ndarray:
    x = np.asarray(x)
    out = [self.fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def make(name: str, fit_data=None, **kw) -> Encoder:
  """The encoder `name`, fitted on `fit_data` where it needs it."""
  return ENCODERS.get(name).obj(fit_data, **kw)


def array_hash(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def cached_embed(encoder: Encoder, x: np.ndarray, dataset: str,
                 cache_dir: str | None) -> np.ndarray:
  """`encoder(x)`, stored once at `cache_dir/<encoder>-<dataset>-<hash>.npy`.

  The hash covers the encoder fingerprint and the input bytes, so a changed
  encoder or dataset never reads a stale file. `cache_dir=None` disables it.
  """
  if not cache_dir:
    return encoder(x)
  from research import workdir as workdir_lib
  import io
  key = hashlib.sha256((encoder.fingerprint + "|" + array_hash(x)).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"{encoder.name}-{dataset}-{key}.npy")
  if os.path.exists(path):
    return np.load(path, allow_pickle=False)
  z = encoder(x)
  os.makedirs(cache_dir, exist_ok=True)
  buf = io.BytesIO()
  np.save(buf, z, allow_pickle=False)
  workdir_lib.write_atomic(path, buf.getvalue())  # Concurrent runs never read half a file.
  return z


@ENCODERS.register("minilm", kind="text")
def minilm(fit_data=None, *, max_length: int = 256, **unused) -> Encoder:
  """The pretrained MiniLM-L6 sentence encoder on strings (384-d, unit norm); its
  weights are read once per process."""
  del fit_data, unused
  from models import minilm as minilm_lib
  model = minilm_lib.load(max_length=max_length)
  return Encoder("minilm", model.fingerprint, lambda texts: model([str(t) for t in texts]),
                 model.dim)
