"""Every key of a DKVB config, declared once with its default and meaning.

Two schemas:
  get_config()      the "dkvb" protocol: several models through one class-incremental
                    stream (`config.models`, each from `model_config(kind)`), all seeds;
  stream_config()   the trainer run of one model ("dkvb_stream"): what the protocol
                    runs for each model in `<workdir>/<model>/`, resumable on its own.
Configs in `experiments/dkvb/` start from `get_config()` and add models.
"""
import ml_collections

from research import config as config_lib

MODEL_KINDS = ("dkvb", "linear", "mlp")


def model_config(kind: str, **values) -> ml_collections.ConfigDict:
  """One model of the protocol: a DKVB bottleneck or a baseline probe, and how it trains."""
  if kind not in MODEL_KINDS:
    raise ValueError(f"model kind {kind!r}; use one of {MODEL_KINDS}")
  c = dict(
      kind=kind,
      iid=False,                    # True: one stage with every class (the upper bound).
      optimizer="sgd",              # Any registered optimizer (research/optimizers/).
      lr=1e-3,
      grad_clip=0.0,                # > 0: clip the global gradient norm.
      reset_optimizer=True,         # A fresh optimizer state at every stage.
      epochs_per_task=0,            # > 0: overrides train.epochs_per_task for this model.
  )
  if kind == "dkvb":
    c.update(
        num_heads=256, num_keys=256, dim_key=16,  # C heads × J keys of size d_key.
        projection="random",        # random | chunk | identity | learned (heads from inputs).
        top_k=1,                    # Keys read per head.
        decoder="vote",             # vote (mean of values) | linear | mlp.
        value_init="zeros",         # zeros | normal (× value_init_scale).
        value_init_scale=1e-3,
        key_chunk=1024,             # Keys per tile of the nearest-key search.
        key_init=_key_init())
  else:
    c.update(bias=True,             # Linear probe bias.
             hidden=128 if kind == "mlp" else 0)  # MLP width.
  unknown = set(values) - set(c)
  if unknown:
    raise ValueError(f"model_config({kind!r}): unknown keys {sorted(unknown)}")
  for k, v in values.items():
    if k == "key_init":
      c[k] = _key_init(**v)
    else:
      c[k] = v
  return ml_collections.ConfigDict(c)


def _key_init(**values) -> dict:
  out = dict(method="ema", num_steps=0, epochs=10, batch_size=256, decay=0.95, eps=1e-5,
             dead_fraction=0.1, init_from_data=True, kmeans_iters=20)
  unknown = set(values) - set(out)
  if unknown:
    raise ValueError(f"key_init: unknown keys {sorted(unknown)}")
  out.update(values)
  return out


def _shared(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.data = ml_collections.ConfigDict(dict(
      name="digits",                # toy2d | digits | cifar10 | cifar100 (TFDS).
      n_train=100, n_test=1000,     # toy2d: samples per stage / in the test set.
      key_init_source="transformed",  # digits: transformed | holdout | noise (the key pool).
      data_dir="",                  # TFDS data_dir ("" = the default).
      max_examples=0,               # > 0: cap every TFDS split (tests).
      key_init_dataset="",          # TFDS: the unlabelled set keys are fitted on.
  ))
  c.encoder = ml_collections.ConfigDict(dict(
      name="pixels",                # identity | pixels | pca | random_relu | autoencoder | minilm.
      dim=32,                       # Embedding size (pca, random_relu, autoencoder).
      seed=0,
      cache_dir="",                 # Embedding / encoder cache ("" = <workdir>/cache).
      pretrain=ml_collections.ConfigDict(dict(  # The autoencoder's pretraining run.
          hidden=256, steps=3000, batch_size=128, lr=1e-3, weight_decay=1e-4,
          noise=0.3)),              # Gaussian input noise (denoising), standardised units.
  ))
  c.stream = ml_collections.ConfigDict(dict(
      classes_per_task=2,           # Classes per stage of the class-incremental stream.
      epochs_per_task=1000,         # Passes over a stage's data (models may override).
      batch_size=256,               # 0 = full batch (one step per epoch).
      label_smoothing=0.0,
      eval_every_epochs=0,          # > 0: evaluate within stages too (0: at stage ends).
      checkpoint_every_stages=1,    # Checkpoint after every N stages (0: at the end only).
      save_grid=False,              # toy2d: decision-boundary predictions after each stage.
  ))
  return c


def get_config() -> ml_collections.ConfigDict:
  """The protocol's defaults; configs add `config.models.<name> = model_config(kind)`."""
  c = ml_collections.ConfigDict()
  c.task = "dkvb"
  c.seed = 0                        # Seeds seed .. seed + num_seeds - 1, vmapped in one step.
  c.num_seeds = 3
  c.only = ""                       # Comma-separated model names to run ("" = all).
  c.tensorboard = False
  c.steps_per_call = 1000           # Most updates per jitted call (stage ends always end one).
  _shared(c)
  c.models = ml_collections.ConfigDict()
  return c


def stream_config(top=None, name: str = "") -> ml_collections.ConfigDict:
  """The trainer config of model `name` of the protocol config `top` (defaults if None)."""
  c = config_lib.trainer_sections(ml_collections.ConfigDict())
  c.task = "dkvb_stream"
  c.mesh = (("data", 1), ("model", 1))  # Small models: one device (the seeds are vmapped).
  _shared(c)
  c.model = model_config("dkvb")
  if top is not None:
    m = top.models[name]
    c.seed = top.seed
    for section in ("data", "encoder", "stream"):
      c[section] = ml_collections.ConfigDict(top[section].to_dict())
    c.model = ml_collections.ConfigDict(m.to_dict())
    c.optimizer.update(name=m.optimizer, learning_rate=m.lr, grad_clip=m.grad_clip)
    c.train.update(num_seeds=top.num_seeds, steps_per_call=top.steps_per_call,
                   tensorboard=top.tensorboard, progress=False)
  return c
