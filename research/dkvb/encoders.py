"""Frozen encoders for DKVB and an embedding cache.

An `Encoder` maps raw inputs (N, ...) to embeddings (N, D) and never trains on
labels: PCA, the random-feature standardisation and the pretrained autoencoder
(`research.dkvb.pretrain`) are fitted on *unlabelled* data only (the
key-initialisation pool). Embeddings are computed once and cached as `.npy`
(no pickle) under a directory keyed by encoder fingerprint and dataset content
hash, so repeated runs reuse them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Callable

import numpy as np

from research.dkvb import pretrain as pretrain_lib


@dataclasses.dataclass(frozen=True)
class Encoder:
  name: str
  fingerprint: str  # Changes whenever the function changes (fit data, seed, dims).
  fn: Callable[[np.ndarray], np.ndarray]
  dim: int
  info: dict = dataclasses.field(default_factory=dict, compare=False)  # E.g. pretraining loss.

  def __call__(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    x = np.asarray(x)
    out = [self.fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def array_hash(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _flat(x: np.ndarray, scale: float) -> np.ndarray:
  return np.asarray(x, np.float32).reshape(len(x), -1) / scale


def identity(dim: int) -> Encoder:
  return Encoder("identity", "identity", lambda x: _flat(x, 1.0), dim)


def pixels(dim: int, scale: float = 1.0) -> Encoder:
  """Flattened pixels divided by `scale` (e.g. 255 for uint8 images)."""
  return Encoder("pixels", f"pixels/{scale}", lambda x: _flat(x, scale), dim)


def pca(fit_data: np.ndarray, dim: int, scale: float = 1.0, whiten: bool = False) -> Encoder:
  """PCA on unlabelled `fit_data` (N, ...); embedding = top-`dim` components."""
  z = _flat(fit_data, scale).astype(np.float64)
  mean = z.mean(0)
  _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
  dim = min(dim, vt.shape[0])
  comps = vt[:dim].T
  if whiten:
    comps = comps / (s[:dim] / np.sqrt(max(len(z) - 1, 1)) + 1e-8)
  mean32, comps32 = mean.astype(np.float32), comps.astype(np.float32)
  fp = f"pca/{dim}/{whiten}/{scale}/{array_hash(fit_data)}"
  return Encoder("pca", fp, lambda x: (_flat(x, scale) - mean32) @ comps32, dim)


def random_relu(fit_data: np.ndarray, dim: int, seed: int = 0, scale: float = 1.0) -> Encoder:
  """ReLU(W·standardise(x) + b), W ~ N(0, 1/D), b ~ N(0, 1); standardised with
  the per-feature mean and one global std of unlabelled `fit_data`. (A
  per-feature std blows up features that are near-constant in the fit data but
  not in the task data, e.g. image borders.)"""
  z = _flat(fit_data, scale)
  mean, std = z.mean(0), float(z.std()) + 1e-6
  rng = np.random.default_rng(seed)
  w = (rng.standard_normal((z.shape[1], dim)) / np.sqrt(z.shape[1])).astype(np.float32)
  b = rng.standard_normal(dim).astype(np.float32)
  fp = f"random_relu/{dim}/{seed}/{scale}/{array_hash(fit_data)}"
  return Encoder("random_relu", fp,
                 lambda x: np.maximum(((_flat(x, scale) - mean) / std) @ w + b, 0.0), dim)


def autoencoder(fit_data: np.ndarray, cfg: pretrain_lib.PretrainConfig, scale: float = 1.0,
                cache_dir: str | None = None) -> Encoder:
  """The encoder half of a denoising MLP autoencoder pretrained on unlabelled
  `fit_data` (see `research.dkvb.pretrain`); its parameters are cached in
  `cache_dir` as .npz, keyed by a hash of the settings and the data."""
  x = _flat(fit_data, scale)
  trained, losses, fp, cached = pretrain_lib.pretrained_autoencoder(x, cfg, cache_dir)
  embed = pretrain_lib.embed_fn(trained, x.shape[1], cfg)
  k = max(1, len(losses) // 20)  # Loss averaged over the first and the last 5 % of steps.
  info = dict(pretrain_loss_first=float(np.mean(losses[:k])),
              pretrain_loss_last=float(np.mean(losses[-k:])), pretrain_cached=cached)
  return Encoder("autoencoder", f"{fp}/{scale}", lambda b: embed(_flat(b, scale)), cfg.dim, info)


def minilm(max_length: int = 256) -> Encoder:
  """The pretrained MiniLM-L6 sentence encoder on arrays of strings (384-d, unit norm)."""
  from research.dkvb.minilm import MiniLM
  model = MiniLM(max_length=max_length)
  return Encoder("minilm", model.fingerprint, lambda texts: model([str(t) for t in texts]),
                 model.dim)


def make_encoder(name: str, fit_data: np.ndarray, *, dim: int = 0, seed: int = 0,
                 scale: float = 1.0, pretrain: dict | None = None,
                 cache_dir: str | None = None) -> Encoder:
  """Encoder by name: identity | pixels | pca | random_relu | autoencoder | minilm (text).

  `pretrain` holds the autoencoder's training settings (`PretrainConfig`
  fields other than dim and seed); `cache_dir` its parameter cache.
  """
  if name == "minilm":
    return minilm()
  in_dim = int(np.prod(np.shape(fit_data)[1:]))
  if name == "identity":
    return identity(in_dim)
  if name == "pixels":
    return pixels(in_dim, scale)
  if name == "pca":
    return pca(fit_data, dim or in_dim, scale)
  if name == "random_relu":
    return random_relu(fit_data, dim or 4 * in_dim, seed, scale)
  if name == "autoencoder":
    cfg = pretrain_lib.PretrainConfig(dim=dim or 32, seed=seed, **dict(pretrain or {}))
    return autoencoder(fit_data, cfg, scale, cache_dir)
  raise ValueError(f"unknown encoder {name!r}")


def cached_embed(encoder: Encoder, x: np.ndarray, dataset: str,
                 cache_dir: str | None) -> np.ndarray:
  """`encoder(x)`, stored once at `cache_dir/<encoder>-<dataset>-<hash>.npy`.

  The hash covers the encoder fingerprint and the input bytes, so a changed
  encoder or dataset never reads a stale file. `cache_dir=None` disables it.
  """
  if not cache_dir:
    return encoder(x)
  key = hashlib.sha256((encoder.fingerprint + "|" + array_hash(x)).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"{encoder.name}-{dataset}-{key}.npy")
  if os.path.exists(path):
    return np.load(path, allow_pickle=False)
  z = encoder(x)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + f".tmp{os.getpid()}.npy"
  np.save(tmp, z, allow_pickle=False)
  os.replace(tmp, path)  # Atomic: concurrent runs never read a half-written file.
  return z
