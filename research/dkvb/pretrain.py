"""A small encoder pretrained inside the framework on other, unlabelled data: a
trainer experiment ("dkvb_pretrain"), so it resumes, checkpoints and logs like any run.

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

Loss: mean squared error of reconstructing x from x + noise, inputs standardised
with the pool's scalar mean/std; AdamW; minibatches drawn uniformly with
replacement from the batch key. The pool is stored in the run's workdir
(`pool.npy`, its SHA-256 in the config), and the workdir is named by a hash of
the settings and the pool, so a DKVB run reuses a finished pretraining run and any
change trains a new one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from models import kv_bottleneck as kvb
from research import config as config_lib
from research import experiment as experiment_lib
from research import metrics as metrics_lib
from research import sharding
from research import workdir as workdir_lib
from research.errors import ConfigError, check_positive, check_range

POOL = "pool.npy"
VERSION = 2  # Bump when the training code changes what it produces.


def get_config() -> ml_collections.ConfigDict:
  """Every key of a pretraining run, with its default."""
  c = config_lib.trainer_sections(ml_collections.ConfigDict())
  c.task = "dkvb_pretrain"
  c.model = ml_collections.ConfigDict(dict(
      dim=32,                       # Embedding size (the bottleneck).
      hidden=256,                   # Hidden width of encoder and decoder.
  ))
  c.data = ml_collections.ConfigDict(dict(
      pool="",                      # Path of the unlabelled (N, D) float32 .npy (in the workdir).
      pool_sha256="",               # Its SHA-256: a changed pool is another experiment.
      noise=0.3,                    # Std of the Gaussian input noise, standardised units.
      version=VERSION,
  ))
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=1e-4)
  c.mesh = (("data", 1), ("model", 1))  # A small model: one device.
  c.train.update(num_steps=3000, batch_size=128, steps_per_call=500, log_every=25,
                 eval_every=1000, checkpoint_every=1000, keep_checkpoints=1, tensorboard=False,
                 progress=False)
  c.eval = ml_collections.ConfigDict(dict(seed=1234, batch_size=512))
  return c


def fingerprint(config) -> str:
  keys = {k: config[k].to_dict() for k in ("model", "data", "optimizer", "schedule")}
  keys["data"].pop("pool")  # Where it is stored, not what it is.
  keys.update(seed=config.seed, steps=config.train.num_steps, batch=config.train.batch_size)
  return "autoencoder/" + json.dumps(keys, sort_keys=True)


def _standardiser(x: np.ndarray) -> tuple[np.float32, np.float32]:
  """One mean and one std over all features (as the random-feature encoder)."""
  return np.float32(x.mean()), np.float32(x.std() + 1e-6)


def _sha256(x: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()


def validate(config) -> None:
  check_positive(config, "model.dim", "model.hidden", "eval.batch_size")
  check_range(config, "data.noise", 0)


@experiment_lib.EXPERIMENTS.register("dkvb_pretrain", defaults=get_config)
def build(config, mesh) -> experiment_lib.Experiment:
  validate(config)
  path = config.data.pool
  if not path or not os.path.exists(path):
    raise ConfigError(f"the pretraining pool {path} is missing; the DKVB run that needs this "
                      f"encoder writes it (rerun the DKVB config)")
  x = np.load(path, allow_pickle=False)
  if config.data.pool_sha256 and _sha256(x) != config.data.pool_sha256:
    raise ConfigError(f"{path} changed since the run started (SHA-256 differs); use a new "
                      f"cache directory")
  mean, std = _standardiser(x)
  pool = sharding.put_replicated(((x - mean) / std).astype(np.float32), mesh)
  model = kvb.MLPAutoEncoder(dim_in=x.shape[1], dim=config.model.dim, hidden=config.model.hidden)

  def init_params(key):
    return model.init(key, jnp.zeros((1, x.shape[1]), jnp.float32))["params"]

  def noisy_batch(pool, key, n):
    r_idx, r_noise = jax.random.split(key)
    clean = pool[jax.random.randint(r_idx, (n,), 0, pool.shape[0])]
    return {"clean": clean, "noisy": clean + config.data.noise * jax.random.normal(r_noise, clean.shape)}

  def sample_batch(frozen, key, step):
    del step
    return noisy_batch(frozen["pool"], key, config.train.batch_size)

  def loss_fn(params, frozen, batch, key):
    del frozen, key
    loss = jnp.mean((model.apply({"params": params}, batch["noisy"]) - batch["clean"]) ** 2)
    return loss, {"loss": loss}

  @jax.jit
  def val_loss(params, pool):
    batch = noisy_batch(pool, jax.random.key(config.eval.seed), config.eval.batch_size)
    return loss_fn(params, None, batch, None)[0]

  def evaluate(params, frozen, step):
    del step
    return {"val_loss": float(val_loss(params, frozen["pool"]))}

  def report(params, frozen, workdir_, final):
    del params, frozen
    rows = metrics_lib.read_metrics(workdir_, "train")
    k = max(1, len(rows) // 20)
    final["loss_first"] = float(np.mean([r["loss"] for r in rows[:k]])) if rows else float("nan")
    return f"autoencoder pretraining: val_loss {final['val_loss']:.4f}"

  return experiment_lib.Experiment(
      init_params, sample_batch, loss_fn, evaluate, report,
      info={"pool_rows": int(x.shape[0]), "pool_dim": int(x.shape[1])},
      frozen={"pool": pool},
      objects={"model": model, "mean": float(mean), "std": float(std), "dim_in": x.shape[1]})


def pretrained_autoencoder(x: np.ndarray, *, dim: int, seed: int, settings: dict,
                           cache_dir: str | None):
  """(run, final metrics) of the autoencoder pretrained on unlabelled `x` (N, D):
  a trainer run in `cache_dir/autoencoder-<hash>`, reused when finished."""
  from research import runs, train
  c = get_config()
  settings = dict(settings)
  unknown = set(settings) - {"hidden", "steps", "batch_size", "lr", "weight_decay", "noise"}
  if unknown:
    raise ConfigError(f"config.encoder.pretrain has unknown keys {sorted(unknown)}")
  c.seed = seed
  c.model.update(dim=dim, hidden=settings.get("hidden", c.model.hidden))
  c.data.update(noise=settings.get("noise", c.data.noise), pool_sha256=_sha256(x))
  c.optimizer.update(learning_rate=settings.get("lr", c.optimizer.learning_rate),
                     weight_decay=settings.get("weight_decay", c.optimizer.weight_decay))
  c.train.update(num_steps=settings.get("steps", c.train.num_steps),
                 batch_size=settings.get("batch_size", c.train.batch_size))
  key = hashlib.sha256(fingerprint(c).encode()).hexdigest()[:16]
  workdir = os.path.join(cache_dir or "runs/dkvb_cache", f"autoencoder-{key}")
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, POOL)
  if not os.path.exists(path):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, np.float32), allow_pickle=False)
    workdir_lib.write_atomic(path, buf.getvalue())
  c.data.pool = os.path.abspath(path)
  c.train.update(checkpoint_every=min(c.train.checkpoint_every, c.train.num_steps),
                 eval_every=min(c.train.eval_every, c.train.num_steps),
                 log_every=min(c.train.log_every, c.train.num_steps))
  final = train.train_and_evaluate(c.lock(), workdir)
  return runs.load(workdir), final


def embed_fn(run):
  """(N, D) -> (N, dim) embeddings of the run's frozen encoder half, jitted."""
  o = run.experiment.objects
  model, mean, std = o["model"], o["mean"], o["std"]
  params = jax.tree.map(jnp.asarray, nn.unbox(run.params))
  encode = jax.jit(lambda p, x: model.apply({"params": p}, (x - mean) / std, method=model.encode))
  return lambda x: np.asarray(encode(params, jnp.asarray(x, jnp.float32)))
