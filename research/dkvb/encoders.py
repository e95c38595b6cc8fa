"""Frozen array encoders for DKVB, registered in `research.encoders.ENCODERS`.

An encoder maps raw inputs (N, ...) to embeddings (N, D) and never trains on
labels: PCA, the random-feature standardisation and the pretrained autoencoder
(`research.dkvb.pretrain`, a trainer run) are fitted on *unlabelled* data only
(the key-initialisation pool). Embeddings are cached by `research.encoders.cached_embed`.
Every factory takes `(fit_data, *, dim, seed, scale, pretrain, cache_dir)`.
"""
from __future__ import annotations

import numpy as np

from research.encoders import ENCODERS, Encoder, array_hash


def _flat(x: np.ndarray, scale: float) -> np.ndarray:
  return np.asarray(x, np.float32).reshape(len(x), -1) / scale


def _in_dim(fit_data) -> int:
  return int(np.prod(np.shape(fit_data)[1:]))


@ENCODERS.register("identity", kind="array")
def identity(fit_data, **unused) -> Encoder:
  del unused
  return Encoder("identity", "identity", lambda x: _flat(x, 1.0), _in_dim(fit_data))


@ENCODERS.register("pixels", kind="array")
def pixels(fit_data, *, scale: float = 1.0, **unused) -> Encoder:
  """Flattened pixels divided by `scale` (e.g. 255 for uint8 images)."""
  del unused
  return Encoder("pixels", f"pixels/{scale}", lambda x: _flat(x, scale), _in_dim(fit_data))


@ENCODERS.register("pca", kind="array")
def pca(fit_data, *, dim: int = 0, scale: float = 1.0, whiten: bool = False,
        **unused) -> Encoder:
  """PCA on unlabelled `fit_data` (N, ...); embedding = top-`dim` components."""
  del unused
  z = _flat(fit_data, scale).astype(np.float64)
  mean = z.mean(0)
  _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
  dim = min(dim or z.shape[1], vt.shape[0])
  comps = vt[:dim].T
  if whiten:
    comps = comps / (s[:dim] / np.sqrt(max(len(z) - 1, 1)) + 1e-8)
  mean32, comps32 = mean.astype(np.float32), comps.astype(np.float32)
  fp = f"pca/{dim}/{whiten}/{scale}/{array_hash(fit_data)}"
  return Encoder("pca", fp, lambda x: (_flat(x, scale) - mean32) @ comps32, dim)


@ENCODERS.register("random_relu", kind="array")
def random_relu(fit_data, *, dim: int = 0, seed: int = 0, scale: float = 1.0,
                **unused) -> Encoder:
  """ReLU(W·standardise(x) + b), W ~ N(0, 1/D), b ~ N(0, 1); standardised with
  the per-feature mean and one global std of unlabelled `fit_data`. (A
  per-feature std blows up features that are near-constant in the fit data but
  not in the task data, e.g. image borders.)"""
  del unused
  z = _flat(fit_data, scale)
  dim = dim or 4 * z.shape[1]
  mean, std = z.mean(0), float(z.std()) + 1e-6
  rng = np.random.default_rng(seed)
  w = (rng.standard_normal((z.shape[1], dim)) / np.sqrt(z.shape[1])).astype(np.float32)
  b = rng.standard_normal(dim).astype(np.float32)
  fp = f"random_relu/{dim}/{seed}/{scale}/{array_hash(fit_data)}"
  return Encoder("random_relu", fp,
                 lambda x: np.maximum(((_flat(x, scale) - mean) / std) @ w + b, 0.0), dim)


@ENCODERS.register("autoencoder", kind="array")
def autoencoder(fit_data, *, dim: int = 0, seed: int = 0, scale: float = 1.0,
                pretrain: dict | None = None, cache_dir: str | None = None,
                **unused) -> Encoder:
  """The encoder half of a denoising MLP autoencoder pretrained on unlabelled
  `fit_data` by a trainer run (`research.dkvb.pretrain`) in `cache_dir`, keyed by a
  hash of the settings and the data (a finished run is reused)."""
  del unused
  from research.dkvb import pretrain as pretrain_lib
  x = _flat(fit_data, scale)
  run, final = pretrain_lib.pretrained_autoencoder(x, dim=dim or 32, seed=seed,
                                                   settings=dict(pretrain or {}),
                                                   cache_dir=cache_dir)
  embed = pretrain_lib.embed_fn(run)
  info = dict(pretrain_loss_first=final["loss_first"], pretrain_loss_last=final["val_loss"],
              pretrain_workdir=run.workdir)
  return Encoder("autoencoder", f"{pretrain_lib.fingerprint(run.config)}/{scale}",
                 lambda b: embed(_flat(b, scale)), run.config.model.dim, info)
