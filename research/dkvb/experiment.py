"""Class-incremental learning with a discrete key-value bottleneck and its baselines.

`run(config, workdir)` reads top to bottom:
  1. data + frozen encoder (embeddings cached) for each seed;
  2. per model: build it; for DKVB initialise keys on unlabelled other data and
     freeze them;
  3. the class-incremental loop: per task a (fresh, unless configured otherwise)
     optimizer and `epochs_per_task` epochs, jitted as `lax.scan` over epochs
     and minibatches; evaluation (class-balanced accuracy per task) after every
     `eval_every` epochs and after every task;
  4. metrics: accuracy matrix, average accuracy, forgetting, backward transfer,
     aggregated over seeds; `metrics.jsonl`, `final_metrics.json`, `config.json`.

DKVB trains on precomputed key indices: keys and encoder are frozen, so a
sample's selected keys never change and the lookup is done once per task. The
"used" mask is the set of keys selected by that task's training inputs (every
input is visited every epoch, so this equals marking keys inside the steps).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from models import kv_bottleneck as kvb
from research.dkvb import data as data_lib
from research.dkvb import encoders as enc_lib
from research.dkvb import keys as keys_lib
from research.dkvb import pretrain as pretrain_lib
from research.dkvb import stream as stream_lib
from research.metrics import MetricWriter

MODEL_KINDS = ("dkvb", "linear", "mlp")
ENCODERS = ("identity", "pixels", "pca", "random_relu", "autoencoder")
GRID = 100  # Toy decision-boundary grid (GRID × GRID points of the unit square).


# ----------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------
class Stream(dict):
  """train: list of (x, y) per task; test: (x, y); tasks: class ids per task;
  key_data: (N, D) embeddings or `sample(rng, batch)`; num_classes; dim;
  encoder_info: e.g. the pretrained encoder's training loss."""
  __getattr__ = dict.__getitem__


def load_stream(cfg: ml_collections.ConfigDict, seed: int, workdir: str | None = None) -> Stream:
  """The seed's task stream on the frozen encoder's embeddings. A pretrained
  encoder's parameters are cached in `encoder.cache_dir`, else `workdir/cache`."""
  d = cfg.data
  if d.name == "toy2d":
    train, test = data_lib.toy2d(seed, d.n_train, d.n_test)
    tasks = data_lib.toy2d_tasks()
    key_data = lambda rng, b: jax.random.uniform(rng, (b, 2))
    return Stream(train=train, test=test, tasks=tasks, key_data=key_data,
                  num_classes=8, dim=2, encoder_info={})
  if d.name == "digits":
    (x_tr, y_tr), (x_te, y_te), x_key = data_lib.digits(seed, d.key_init_source)
    num_classes, scale = 10, 1.0
  elif d.name in ("cifar10", "cifar100"):
    x_tr, y_tr = data_lib.tfds_images(d.name, "train", d.data_dir or None, d.max_examples or None)
    x_te, y_te = data_lib.tfds_images(d.name, "test", d.data_dir or None, d.max_examples or None)
    x_key, _ = data_lib.tfds_images(d.key_init_dataset, "train", d.data_dir or None,
                                    d.max_examples or None)  # Labels dropped.
    num_classes, scale = (10 if d.name == "cifar10" else 100), 255.0
  else:
    raise ValueError(f"unknown data.name {d.name!r}")
  e = cfg.encoder
  # Fitted on the unlabelled key-init pool only: never sees task labels.
  cache = e.cache_dir or None
  param_cache = cache or (os.path.join(workdir, "cache") if workdir else None)
  pretrain = e.get("pretrain")
  encoder = enc_lib.make_encoder(e.name, x_key, dim=e.dim, seed=e.seed, scale=scale,
                                 pretrain=pretrain.to_dict() if pretrain else None,
                                 cache_dir=param_cache)
  ds = f"{d.name}-s{seed}"
  z_tr = enc_lib.cached_embed(encoder, x_tr, ds + "-train", cache)
  z_te = enc_lib.cached_embed(encoder, x_te, ds + "-test", cache)
  z_key = enc_lib.cached_embed(encoder, x_key, ds + "-keyinit", cache)
  order = stream_lib.class_order(num_classes, seed)
  tasks = stream_lib.make_tasks(order, cfg.stream.classes_per_task)
  return Stream(train=stream_lib.split_by_task(z_tr, y_tr, tasks), test=(z_te, y_te),
                tasks=tasks, key_data=z_key, num_classes=num_classes, dim=encoder.dim,
                encoder_info=encoder.info)


# ----------------------------------------------------------------------------
# Models.
# ----------------------------------------------------------------------------
def build_model(m: ml_collections.ConfigDict, dim: int, num_classes: int):
  if m.kind == "dkvb":
    return kvb.KeyValueBottleneck(
        dim_in=dim, num_heads=m.num_heads, num_keys=m.num_keys, dim_key=m.dim_key,
        dim_value=num_classes, num_classes=num_classes, projection=m.projection,
        top_k=m.top_k, decoder=m.decoder, value_init=m.value_init,
        value_init_scale=m.value_init_scale, key_chunk=m.key_chunk)
  if m.kind == "linear":
    return kvb.LinearProbe(num_classes, use_bias=m.bias)
  if m.kind == "mlp":
    return kvb.MLPProbe(num_classes, hidden=m.hidden)
  raise ValueError(f"unknown model kind {m.kind!r}; expected one of {MODEL_KINDS}")


def init_keys(model: kvb.KeyValueBottleneck, variables, key_data, k: ml_collections.ConfigDict,
              rng) -> tuple[dict, dict]:
  """Initialise and freeze the keys in `variables["keys"]`; returns (variables, info)."""
  frozen = variables["keys"]
  to_queries = lambda x: model.apply({"params": variables["params"], "keys": frozen}, x,
                                     method=model.queries)
  t0 = time.perf_counter()
  info: dict[str, Any] = {}
  if k.method == "ema":
    if callable(key_data):
      steps = k.num_steps
    else:
      steps = k.num_steps or keys_lib.ema_num_steps(len(key_data), k.batch_size, k.epochs)
    codebook, state = keys_lib.ema_init_keys(
        rng, key_data, to_queries, frozen["codebook"], num_steps=steps,
        batch_size=k.batch_size, decay=k.decay, eps=k.eps, dead_fraction=k.dead_fraction,
        init_from_data=k.init_from_data, chunk_size=model.key_chunk, return_state=True)
    info.update(key_init_steps=steps, dead_keys_replaced=int(state.num_replaced))
  elif k.method == "kmeans":
    codebook = keys_lib.kmeans_init_keys(rng, key_data, to_queries, model.num_keys,
                                         num_iters=k.kmeans_iters, chunk_size=model.key_chunk)
  elif k.method == "random":
    codebook = frozen["codebook"]
  else:
    raise ValueError(f"unknown key_init.method {k.method!r}")
  codebook = jax.block_until_ready(codebook)
  info["key_init_s"] = time.perf_counter() - t0
  new = dict(variables)
  new["keys"] = dict(frozen, codebook=codebook)
  return new, info


def make_optimizer(m: ml_collections.ConfigDict) -> optax.GradientTransformation:
  opt = {"sgd": optax.sgd, "adam": optax.adam}[m.optimizer](m.lr)
  if m.grad_clip:
    opt = optax.chain(optax.clip_by_global_norm(m.grad_clip), opt)
  return opt


# ----------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------
def make_train_fn(logits_fn, opt, *, n_max: int, batch_size: int, label_smoothing: float,
                  num_classes: int, num_epochs: int):
  """Jitted (params, opt_state, x, y, n, rng) -> (params, opt_state, mean loss).

  Runs `num_epochs` epochs of shuffled minibatches over the first `n` rows of
  `x`, `y` (padded to `n_max` rows, so tasks of different sizes share one
  compilation). Like a DataLoader without drop_last: the last batch of an epoch
  may be partial (masked), batches past the end are skipped. `batch_size <= 0`
  means full batch.
  """
  b = n_max if batch_size <= 0 else min(batch_size, n_max)
  num_batches = -(-n_max // b)

  def loss_fn(params, x, y, w):
    targets = optax.smooth_labels(jax.nn.one_hot(y, num_classes), label_smoothing)
    losses = optax.softmax_cross_entropy(logits_fn(params, x), targets)
    return jnp.sum(w * losses) / jnp.maximum(jnp.sum(w), 1.0)

  def step(carry, xs):
    params, opt_state, x, y, n = carry
    idx, pos = xs
    w = (pos < n).astype(jnp.float32)

    def update(_):
      loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx], w)
      updates, new_state = opt.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), new_state, loss

    skip = lambda _: (params, opt_state, jnp.zeros((), jnp.float32))
    new_params, new_state, loss = jax.lax.cond(pos[0] < n, update, skip, None)
    return (new_params, new_state, x, y, n), (loss, pos[0] < n)

  def epoch(carry, rng):
    n = carry[-1]
    # A random permutation of the n valid rows first, padding rows last.
    order = jnp.argsort(jnp.where(jnp.arange(n_max) < n,
                                  jax.random.uniform(rng, (n_max,)), 2.0))
    order = jnp.pad(order, (0, num_batches * b - n_max))
    pos = jnp.arange(num_batches * b)
    carry, (losses, active) = jax.lax.scan(
        step, carry, (order.reshape(num_batches, b), pos.reshape(num_batches, b)))
    return carry, jnp.sum(losses) / jnp.maximum(jnp.sum(active), 1)

  @jax.jit
  def train(params, opt_state, x, y, n, rng):
    carry, losses = jax.lax.scan(epoch, (params, opt_state, x, y, n),
                                 jax.random.split(rng, num_epochs))
    return carry[0], carry[1], losses.mean()

  return train


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
  return np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:], a.dtype)])


def _batched(fn, x, batch: int = 1024):
  return np.concatenate([np.asarray(fn(x[i:i + batch])) for i in range(0, len(x), batch)])


def run_model(name: str, m: ml_collections.ConfigDict, s: Stream, cfg, seed: int,
              writer: MetricWriter, workdir: str) -> dict[str, Any]:
  """Train one model through the stream; returns its accuracy matrix and metrics."""
  rng = jax.random.key(seed)
  r_init, r_keys, r_train = jax.random.split(rng, 3)
  model = build_model(m, s.dim, s.num_classes)
  is_dkvb = m.kind == "dkvb"
  info: dict[str, Any] = {}
  if is_dkvb:
    variables = kvb.init_bottleneck(model, r_init)
    variables, info = init_keys(model, variables, s.key_data, m.key_init, r_keys)
    frozen = variables["keys"]
    params = p0 = variables["params"]
    lookup = jax.jit(lambda fr, x, restrict: model.apply(
        {"params": p0, "keys": fr}, x, restrict, method=model.lookup)[0],
                     static_argnums=2)
    logits_fn = lambda p, idx: model.apply({"params": p, "keys": frozen}, idx, method=model.read)
  else:
    params = nn.meta.unbox(model.init(r_init, jnp.zeros((1, s.dim))))["params"]
    logits_fn = lambda p, x: model.apply({"params": p}, x)

  x_te, y_te = s.test
  if m.iid:  # Upper bound: one task with all classes.
    stages = [(np.concatenate([t[0] for t in s.train]), np.concatenate([t[1] for t in s.train]))]
  else:
    stages = s.train
  epochs = m.epochs_per_task or cfg.train.epochs_per_task
  eval_every = cfg.train.eval_every or epochs
  opt = make_optimizer(m)
  opt_state = opt.init(params)
  grid = None
  if cfg.data.name == "toy2d" and cfg.save_grid:
    g = np.linspace(0, 1, GRID, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
  grid_preds = []

  def predict(params, x):
    if is_dkvb:
      idx = _batched(lambda b: lookup(frozen, b, True), x)
      return _batched(lambda b: logits_fn(params, b), idx).argmax(-1)
    return _batched(lambda b: logits_fn(params, b), x).argmax(-1)

  n_max = max(len(x) for x, _ in stages)
  rows, epoch_count, t0 = [], 0, time.perf_counter()
  train_fns: dict[tuple[int, int], Any] = {}
  for t, (x, y) in enumerate(stages):
    if m.reset_optimizer and t > 0:
      opt_state = opt.init(params)
    if is_dkvb:
      idx = _batched(lambda b: lookup(frozen, b, False), x)
      frozen = dict(frozen, used=kvb.mark_used(frozen["used"], jnp.asarray(idx)))
      x_in = idx
    else:
      x_in = x
    done = 0 if len(x) else epochs  # A task without examples (tiny mock data) trains nothing.
    row = None
    while done < epochs:
      chunk = min(eval_every, epochs - done)
      if chunk not in train_fns:
        train_fns[chunk] = make_train_fn(
            logits_fn, opt, n_max=n_max, batch_size=cfg.train.batch_size,
            label_smoothing=cfg.train.label_smoothing, num_classes=s.num_classes,
            num_epochs=chunk)
      r_train, r = jax.random.split(r_train)
      params, opt_state, loss = train_fns[chunk](
          params, opt_state, jnp.asarray(_pad_rows(x_in, n_max)),
          jnp.asarray(_pad_rows(y, n_max)), jnp.int32(len(x)), r)
      done += chunk
      epoch_count += chunk
      pred = predict(params, x_te)
      row = stream_lib.task_accuracies(pred, y_te, s.tasks)
      acc = stream_lib.balanced_accuracy(pred, y_te, np.arange(s.num_classes))
      writer.write(epoch_count, {"task": t, "loss": float(loss), "acc": acc,
                                 **{f"acc_task{j}": a for j, a in enumerate(row)}},
                   kind=f"{name}/s{seed}")
    if row is None:
      pred = predict(params, x_te)
      row = stream_lib.task_accuracies(pred, y_te, s.tasks)
      acc = stream_lib.balanced_accuracy(pred, y_te, np.arange(s.num_classes))
    rows.append(row)
    if grid is not None:
      grid_preds.append(predict(params, grid))
  r_mat = np.stack(rows)
  out = {
      "final_acc": acc,
      "acc_matrix": r_mat.tolist(),
      "average_accuracy": stream_lib.average_accuracy(r_mat),
      "forgetting": stream_lib.forgetting(r_mat),
      "backward_transfer": stream_lib.backward_transfer(r_mat),
      "train_s": time.perf_counter() - t0,
      **info,
  }
  if is_dkvb:
    out["keys_used_fraction"] = float(np.mean(np.asarray(frozen["used"])))
  if grid is not None:
    np.savez(os.path.join(workdir, f"grid_{name}_s{seed}.npz"), grid=grid,
             preds=np.stack(grid_preds), x_test=x_te, y_test=y_te)
  return out


# ----------------------------------------------------------------------------
# Entry point.
# ----------------------------------------------------------------------------
REQUIRED = ("task", "seeds", "data", "encoder", "stream", "train", "models")


def validate(cfg: ml_collections.ConfigDict) -> None:
  missing = [k for k in REQUIRED if k not in cfg]
  if missing:
    raise ValueError(f"DKVB config lacks keys {missing}")
  if cfg.task != "dkvb":
    raise ValueError(f"config.task must be 'dkvb', got {cfg.task!r}")
  choices = {"data.name": (cfg.data.name, ("toy2d", "digits", "cifar10", "cifar100")),
             "encoder.name": (cfg.encoder.name, ENCODERS)}
  for name, m in cfg.models.items():
    choices[f"models.{name}.kind"] = (m.kind, MODEL_KINDS)
    choices[f"models.{name}.optimizer"] = (m.optimizer, ("sgd", "adam"))
    if m.kind == "dkvb":
      choices[f"models.{name}.projection"] = (m.projection, ("random", "chunk", "identity", "learned"))
      choices[f"models.{name}.decoder"] = (m.decoder, ("vote", "linear", "mlp"))
      choices[f"models.{name}.value_init"] = (m.value_init, ("zeros", "normal"))
      choices[f"models.{name}.key_init.method"] = (m.key_init.method, ("ema", "kmeans", "random"))
  for key, (value, allowed) in choices.items():
    if value not in allowed:
      raise ValueError(f"config.{key}={value!r} not in {allowed}")
  settable = {f.name for f in dataclasses.fields(pretrain_lib.PretrainConfig)} - {"dim", "seed"}
  unknown = [k for k in (cfg.encoder.get("pretrain") or {}) if k not in settable]
  if unknown:  # dim and seed come from encoder.dim / encoder.seed.
    raise ValueError(f"config.encoder.pretrain has unknown keys {unknown}; "
                     f"settable: {sorted(settable)}")
  only = [n for n in cfg.only.split(",") if n] if cfg.get("only") else []
  unknown = [n for n in only if n not in cfg.models]
  if unknown:
    raise ValueError(f"config.only names unknown models {unknown}; have {list(cfg.models)}")


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
  out = {}
  for key in ("final_acc", "average_accuracy", "forgetting", "backward_transfer"):
    v = np.asarray([r[key] for r in per_seed], np.float64)
    out[f"{key}_mean"], out[f"{key}_std"] = float(v.mean()), float(v.std())
  out["per_seed"] = per_seed
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Run every model of `config.models` over `config.seeds`; returns final metrics."""
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  only = [n for n in config.only.split(",") if n] if config.get("only") else list(config.models)
  writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", False))
  results: dict[str, list] = {n: [] for n in only}
  try:
    for seed in config.seeds:
      s = load_stream(config, seed, workdir)
      if s.encoder_info:
        writer.write(0, s.encoder_info, kind=f"encoder/s{seed}")
        print(f"[dkvb] seed {seed} encoder {config.encoder.name}: {s.encoder_info}", flush=True)
      for name in only:
        res = run_model(name, config.models[name], s, config, seed, writer, workdir)
        results[name].append(dict(seed=seed, **res))
        writer.write(0, {k: v for k, v in res.items() if k != "acc_matrix"},
                     kind=f"final/{name}/s{seed}")
        print(f"[dkvb] seed {seed} {name:>14}: acc {res['final_acc']:.4f} "
              f"forgetting {res['forgetting']:.3f} ({res['train_s']:.1f}s)", flush=True)
  finally:
    writer.close()
  final = {name: _summary(r) for name, r in results.items()}
  with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
    json.dump(final, f, indent=2)
  return final


def main(argv):  # `python -m research.dkvb.experiment --config ...[:arg] --workdir DIR`
  del argv
  from absl import flags
  res = run(flags.FLAGS.config, flags.FLAGS.workdir)
  for name, r in res.items():
    print(f"{name:>14}: final acc {r['final_acc_mean']:.4f} ± {r['final_acc_std']:.4f}  "
          f"forgetting {r['forgetting_mean']:.3f} ± {r['forgetting_std']:.3f}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "DKVB config file[:arg].", lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
