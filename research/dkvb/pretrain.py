"""A small encoder pretrained inside the framework on other, unlabelled data.

The paper's DKVB sits on a backbone pretrained elsewhere (ImageNet, CLIP, ...)
and frozen. Offline, for the digits stream, the honest stand-in is a denoising
MLP autoencoder (`models.kv_bottleneck.MLPAutoEncoder`, 64 -> 256 -> 32 ->
256 -> 64) trained by reconstruction on the unlabelled key-initialisation pool:
a disjoint quarter of the digits images, each transposed and flipped
(`research.dkvb.data.digits`). It never sees a sample of the train/test stream
nor any label. Why not the other offline sets: mnist1d is a 40-sample 1-D
signal of the same ten digit classes (supervised pretraining there would carry
the evaluation's label set, not its input space), and iris / wine /
breast_cancer are 4-30 feature tables. Supervised pretraining on the pool
would use digit labels, i.e. the evaluation's classes; reconstruction uses
none. So the encoder is pretrained on exactly the data the PCA and
random-feature encoders are fitted on, with a learned nonlinear map instead.

Training is plain `init` / `apply` + optax in one jitted `lax.scan`; every
batch is a pure function of (seed, step). The trained parameters are cached as
`.npz` (no pickle) keyed by a hash of the architecture, the training settings,
the seed and the pool's bytes, so a run reuses them and any change retrains.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from models import kv_bottleneck as kvb

CACHE_VERSION = 1  # Bump when the training code changes what it produces.


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  dim: int = 32  # Embedding size.
  hidden: int = 256
  steps: int = 3000
  batch_size: int = 128
  lr: float = 1e-3
  weight_decay: float = 1e-4
  noise: float = 0.3  # Std of the Gaussian input noise (denoising), in standardised units.
  seed: int = 0


def fingerprint(cfg: PretrainConfig, data_hash: str) -> str:
  fields = "/".join(f"{k}={v}" for k, v in sorted(dataclasses.asdict(cfg).items()))
  return f"autoencoder/v{CACHE_VERSION}/{fields}/{data_hash}"


def _standardiser(x: np.ndarray) -> tuple[np.float32, np.float32]:
  """One mean and one std over all features (as `encoders.random_relu`)."""
  return np.float32(x.mean()), np.float32(x.std() + 1e-6)


def train_autoencoder(x: np.ndarray, cfg: PretrainConfig) -> tuple[dict, np.ndarray]:
  """Denoising reconstruction on unlabelled (N, D) `x`; returns (params, loss per step).

  Inputs are standardised with the pool's scalar mean/std; the loss is the mean
  squared error of reconstructing x from x + noise; AdamW; minibatches drawn
  uniformly with replacement, the key of a step folded in from the seed.
  """
  mean, std = _standardiser(x)
  xs = jnp.asarray((x - mean) / std, jnp.float32)
  model = kvb.MLPAutoEncoder(dim_in=x.shape[1], dim=cfg.dim, hidden=cfg.hidden)
  r_init, rng = jax.random.split(jax.random.key(cfg.seed))
  params = nn.meta.unbox(model.init(r_init, xs[:1]))["params"]
  opt = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)

  def loss_fn(p, clean, noisy):
    return jnp.mean((model.apply({"params": p}, noisy) - clean) ** 2)

  def step(carry, i):
    p, opt_state = carry
    r_idx, r_noise = jax.random.split(jax.random.fold_in(rng, i))
    clean = xs[jax.random.randint(r_idx, (cfg.batch_size,), 0, xs.shape[0])]
    noisy = clean + cfg.noise * jax.random.normal(r_noise, clean.shape)
    loss, grads = jax.value_and_grad(loss_fn)(p, clean, noisy)
    updates, opt_state = opt.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), loss

  @jax.jit
  def train(params):
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(cfg.steps))
    return params, losses

  params, losses = train(params)
  params = jax.tree.map(np.asarray, params)
  return {"params": params, "mean": mean, "std": std}, np.asarray(losses)


def _save(path: str, trained: dict, losses: np.ndarray) -> None:
  flat = {"params/" + "/".join(k): v for k, v in traverse_util.flatten_dict(trained["params"]).items()}
  tmp = path + f".tmp{os.getpid()}.npz"
  np.savez(tmp, mean=trained["mean"], std=trained["std"], losses=losses, **flat)
  os.replace(tmp, path)  # Atomic: a concurrent run never reads a half-written file.


def _load(path: str) -> tuple[dict, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    flat = {tuple(k.split("/")[1:]): f[k] for k in f.files if k.startswith("params/")}
    trained = {"params": traverse_util.unflatten_dict(flat), "mean": f["mean"][()],
               "std": f["std"][()]}
    return trained, f["losses"]


def pretrained_autoencoder(x: np.ndarray, cfg: PretrainConfig,
                           cache_dir: str | None) -> tuple[dict, np.ndarray, str, bool]:
  """Trained (or cached) autoencoder on unlabelled `x`.

  Returns (trained state {params, mean, std}, loss per step, fingerprint, whether
  it came from the cache). `cache_dir=None` always trains.
  """
  data_hash = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()[:16]
  fp = fingerprint(cfg, f"{np.shape(x)}/{data_hash}")
  path = None
  if cache_dir:
    key = hashlib.sha256(fp.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"autoencoder-{key}.npz")
    if os.path.exists(path):
      trained, losses = _load(path)
      return trained, losses, fp, True
  trained, losses = train_autoencoder(np.asarray(x, np.float32), cfg)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    _save(path, trained, losses)
  return trained, losses, fp, False


def embed_fn(trained: dict[str, Any], dim_in: int, cfg: PretrainConfig):
  """(N, D) -> (N, dim) embeddings of the frozen encoder half, jitted."""
  model = kvb.MLPAutoEncoder(dim_in=dim_in, dim=cfg.dim, hidden=cfg.hidden)
  params = jax.tree.map(jnp.asarray, trained["params"])
  mean, std = float(trained["mean"]), float(trained["std"])
  encode = jax.jit(lambda x: model.apply({"params": params}, (x - mean) / std, method=model.encode))
  return lambda x: np.asarray(encode(jnp.asarray(x, jnp.float32)))
