"""Class-incremental learning with a discrete key-value bottleneck and its baselines.

Two registered tasks:

  "dkvb"         the protocol (`run`): every model of `config.models` through the same
                 class-incremental stream, for all seeds; each model is one trainer run
                 in `<workdir>/<model>/` (its seeds vmapped in one step), then a table of
                 final accuracy, forgetting and backward transfer, mean ± standard error
                 over seeds, in `<workdir>/final_metrics.json`.
  "dkvb_stream"  one model's trainer run (`build`): the stream's stages are the
                 trainer's phases. Per stage, `epochs` passes over that stage's examples
                 in shuffled minibatches (the last one partial, as a DataLoader without
                 drop_last); the optimizer state is re-initialised at every stage where the
                 model says so; evaluation (class-balanced accuracy on every task's test
                 classes) at the end of every stage gives the accuracy matrix.

DKVB trains on precomputed key indices: keys and encoder are frozen (in `frozen`,
never optimised or checkpointed), so a sample's selected keys never change and the
lookup is done once per stage. The "used" mask after stage t is the set of keys
selected by the training inputs of stages 0..t (every input is visited every
epoch, so this equals marking keys inside the steps); evaluation reads only those.

Seeds: replica s of a run trains seed `config.seed + s` — its own class order (seeds
0 and 42 keep the order {0,1},{2,3},... as the released code), data split and key
initialisation, all stacked in `frozen["per_seed"]`. Stages hold different numbers
of examples; every stage has the same number of batch slots per epoch (for the
largest stage of any seed) and slots beyond a stage's examples are inactive steps.
"""
from __future__ import annotations

import functools
import hashlib
import io
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
from research import compiling
from research import encoders as encoders_lib
from research import experiment as experiment_lib
from research import metrics as metrics_lib
from research import optim
from research import sharding
from research import stats
from research import workdir as workdir_lib
from research.dkvb import data as data_lib
from research.dkvb import defaults
from research.dkvb import encoders as _  # noqa: F401  (registers the array encoders)
from research.dkvb import keys as keys_lib
from research.dkvb import stream as stream_lib
from research.errors import ConfigError, check_positive, check_range, require

GRID = 100  # Toy decision-boundary grid (GRID × GRID points of the unit square).
DATA_SALT = 7  # Keys of the epoch shuffles: key(DATA_SALT) folded with (seed, stage, epoch).


# ----------------------------------------------------------------------------
# Data: the seed's stream on the frozen encoder's embeddings.
# ----------------------------------------------------------------------------
class Stream(dict):
  """train: list of (x, y) per task; test: (x, y); tasks: class ids per task;
  key_data: (N, D) embeddings or `sample(rng, batch)`; num_classes; dim;
  encoder: the frozen encoder; encoder_info: e.g. the pretrained encoder's loss."""
  __getattr__ = dict.__getitem__


def _cache_dir(config, workdir: str | None) -> str | None:
  return config.encoder.cache_dir or (os.path.join(workdir, "cache") if workdir else None)


def load_stream(config, seed: int, cache_dir: str | None = None) -> Stream:
  """The seed's task stream on the frozen encoder's embeddings (cached per process)."""
  sections = json.dumps({k: config[k].to_dict() for k in ("data", "encoder", "stream")},
                        sort_keys=True)
  return _load_stream(sections, seed, cache_dir)


@functools.lru_cache(maxsize=16)
def _load_stream(sections: str, seed: int, cache_dir: str | None) -> Stream:
  cfg = ml_collections.ConfigDict(json.loads(sections))
  d, e = cfg.data, cfg.encoder
  if d.name == "toy2d":
    train, test = data_lib.toy2d(seed, d.n_train, d.n_test)
    tasks = data_lib.toy2d_tasks()
    key_data = _uniform_square
    enc = encoders_lib.make("identity", np.zeros((1, 2), np.float32))
    return Stream(train=train, test=test, tasks=tasks, key_data=key_data,
                  num_classes=8, dim=2, encoder=enc, encoder_info={})
  if d.name == "digits":
    (x_tr, y_tr), (x_te, y_te), x_key = data_lib.digits(seed, d.key_init_source)
    num_classes, scale = 10, 1.0
  else:  # TFDS cifar10 / cifar100 (validated).
    x_tr, y_tr = data_lib.tfds_images(d.name, "train", d.data_dir or None, d.max_examples or None)
    x_te, y_te = data_lib.tfds_images(d.name, "test", d.data_dir or None, d.max_examples or None)
    x_key, _ = data_lib.tfds_images(d.key_init_dataset, "train", d.data_dir or None,
                                    d.max_examples or None)  # Labels dropped.
    num_classes, scale = (10 if d.name == "cifar10" else 100), 255.0
  # Fitted on the unlabelled key-init pool only: never sees task labels.
  enc = encoders_lib.make(e.name, x_key, dim=e.dim, seed=e.seed, scale=scale,
                          pretrain=e.pretrain.to_dict(), cache_dir=cache_dir)
  ds = f"{d.name}-s{seed}"
  embed = lambda x, part: encoders_lib.cached_embed(enc, x, f"{ds}-{part}", cache_dir)
  z_tr, z_te, z_key = embed(x_tr, "train"), embed(x_te, "test"), embed(x_key, "keyinit")
  order = stream_lib.class_order(num_classes, seed)
  tasks = stream_lib.make_tasks(order, cfg.stream.classes_per_task)
  return Stream(train=stream_lib.split_by_task(z_tr, y_tr, tasks), test=(z_te, y_te),
                tasks=tasks, key_data=z_key, num_classes=num_classes, dim=enc.dim, encoder=enc,
                encoder_info=enc.info)


def _uniform_square(rng, batch):
  """The toy's unlabelled key-init data: U[0, 1]^2 (one function: one compiled key init)."""
  return jax.random.uniform(rng, (batch, 2))


def stages_of(stream: Stream, iid: bool) -> list[tuple[np.ndarray, np.ndarray]]:
  """The stream's stages; the i.i.d. upper bound is one stage with every class."""
  if iid:
    return [(np.concatenate([t[0] for t in stream.train]),
             np.concatenate([t[1] for t in stream.train]))]
  return list(stream.train)


def schedule(config, streams: list[Stream]) -> dict[str, int]:
  """Stages, batch slots per epoch and steps per stage shared by every seed."""
  m = config.model
  stages = [stages_of(s, m.iid) for s in streams]
  n_max = max(1, max(len(x) for st in stages for x, _ in st))
  b = n_max if config.stream.batch_size <= 0 else min(config.stream.batch_size, n_max)
  slots = -(-n_max // b)
  epochs = m.epochs_per_task or config.stream.epochs_per_task
  return dict(num_stages=len(stages[0]), n_max=n_max, batch=b, slots=slots, epochs=epochs,
              steps_per_stage=epochs * slots, num_steps=len(stages[0]) * epochs * slots)


# ----------------------------------------------------------------------------
# Models and key initialisation.
# ----------------------------------------------------------------------------
def build_model(m, dim: int, num_classes: int):
  if m.kind == "dkvb":
    return kvb.KeyValueBottleneck(
        dim_in=dim, num_heads=m.num_heads, num_keys=m.num_keys, dim_key=m.dim_key,
        dim_value=num_classes, num_classes=num_classes, projection=m.projection,
        top_k=m.top_k, decoder=m.decoder, value_init=m.value_init,
        value_init_scale=m.value_init_scale, key_chunk=m.key_chunk)
  if m.kind == "linear":
    return kvb.LinearProbe(num_classes, use_bias=m.bias)
  return kvb.MLPProbe(num_classes, hidden=m.hidden)


def init_keys(model: kvb.KeyValueBottleneck, variables, key_data, k, rng) -> tuple[dict, dict]:
  """The frozen "keys" collection after key initialisation; returns (keys, info).

  The model's queries read the seed's variables as an argument (not a closure), so
  the key-init program compiles once for all seeds of a model."""
  keys = variables["keys"]
  to_queries = _queries_fn(model)
  t0 = time.perf_counter()
  info: dict[str, Any] = {}
  if k.method == "ema":
    steps = k.num_steps or (k.num_steps if callable(key_data) else
                            keys_lib.ema_num_steps(len(key_data), k.batch_size, k.epochs))
    codebook, state = keys_lib.ema_init_keys(
        rng, key_data, to_queries, keys["codebook"], num_steps=steps,
        batch_size=k.batch_size, decay=k.decay, eps=k.eps, dead_fraction=k.dead_fraction,
        init_from_data=k.init_from_data, chunk_size=model.key_chunk, return_state=True,
        query_args=variables)
    info.update(key_init_steps=steps, dead_keys_replaced=int(state.num_replaced))
  elif k.method == "kmeans":
    codebook = keys_lib.kmeans_init_keys(rng, key_data, functools.partial(to_queries, variables),
                                         model.num_keys, num_iters=k.kmeans_iters,
                                         chunk_size=model.key_chunk)
  else:
    codebook = keys["codebook"]
  codebook = jax.block_until_ready(codebook)
  info["key_init_s"] = time.perf_counter() - t0
  return dict(keys, codebook=np.asarray(codebook)), info


@functools.lru_cache(maxsize=16)
def _queries_fn(model):
  """(variables, x) -> per-head queries, one function object per model."""
  return lambda variables, x: model.apply(variables, x, method=model.queries)


@functools.lru_cache(maxsize=16)
def _init_fn(model):
  """key -> the bottleneck's variables for key init and the lookup, jitted once per model.
  They read the "keys" collection (and params only when the projection is one); the
  trainer initialises the params itself, so here they are zeros (the module's setup
  needs them present) and XLA drops their random init."""
  def init(key):
    v = kvb.init_bottleneck(model, key)
    if model.projection == "learned":
      return v
    return dict(v, params=jax.tree.map(jnp.zeros_like, v["params"]))
  return jax.jit(init, compiler_options=compiling.run_once())


@functools.lru_cache(maxsize=16)
def _lookup_fn(model):
  """(variables, x) -> key indices, jitted once per model."""
  return jax.jit(lambda v, x: model.apply(v, x, method=model.lookup)[0],
                 compiler_options=compiling.run_once())


def cached_keys(model, m, stream: Stream, seed: int, cache_dir: str | None):
  """`init_keys` for the seed, stored in `cache_dir` (the full-size key init takes
  minutes: a resumed run must not redo it); returns (variables, info)."""
  variables = jax.tree.map(np.asarray, _init_fn(model)(jax.random.key(seed)))
  data_id = ("uniform" if callable(stream.key_data) else encoders_lib.array_hash(stream.key_data))
  fp = json.dumps(dict(model=m.to_dict(), seed=seed, data=data_id, dim=stream.dim), sort_keys=True)
  path = None
  if cache_dir:
    path = os.path.join(cache_dir, f"keys-{hashlib.sha256(fp.encode()).hexdigest()[:16]}.npz")
    if os.path.exists(path):
      with np.load(path, allow_pickle=False) as f:
        info = json.loads(str(f["info"]))
        keys = dict(variables["keys"], codebook=f["codebook"])
        return dict(variables, keys=keys), dict(info, key_init_cached=True)
  keys, info = init_keys(model, variables, stream.key_data, m.key_init,
                         jax.random.split(jax.random.key(seed), 3)[1])
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, codebook=keys["codebook"], info=np.asarray(json.dumps(info)))
    workdir_lib.write_atomic(path, buf.getvalue())
  return dict(variables, keys=keys), dict(info, key_init_cached=False)


def used_keys(idx: np.ndarray, num_heads: int, num_keys: int) -> np.ndarray:
  """(C, J) bool: the keys each head selected for any row of `idx` (N, C, k)."""
  used = np.zeros((num_heads, num_keys), bool)
  heads = np.broadcast_to(np.arange(num_heads)[None, :, None], idx.shape)
  used[heads.reshape(-1), idx.reshape(-1)] = True
  return used


# ----------------------------------------------------------------------------
# The trainer experiment of one model: "dkvb_stream".
# ----------------------------------------------------------------------------
def validate_model(m, where: str = "config.model") -> None:
  require(m.kind in defaults.MODEL_KINDS,
          f"{where}.kind={m.kind!r}; use one of {defaults.MODEL_KINDS}")
  require(m.lr > 0, f"{where}.lr={m.lr} cannot work: it must be > 0")
  require(m.optimizer in optim.OPTIMIZERS,
          f"{where}.optimizer={m.optimizer!r} unknown; known: {optim.OPTIMIZERS.names()}")
  require(m.grad_clip >= 0, f"{where}.grad_clip={m.grad_clip} cannot work: it must be >= 0")
  require(m.epochs_per_task >= 0, f"{where}.epochs_per_task={m.epochs_per_task} must be >= 0")
  if m.kind == "dkvb":
    for key in ("num_heads", "num_keys", "dim_key", "top_k", "key_chunk"):
      require(isinstance(m[key], int) and m[key] > 0,
              f"{where}.{key}={m[key]!r} cannot work: it must be a positive integer")
    require(m.top_k <= m.num_keys, f"{where}.top_k={m.top_k} exceeds num_keys={m.num_keys}")
    choices = {"projection": ("random", "chunk", "identity", "learned"),
               "decoder": ("vote", "linear", "mlp"), "value_init": ("zeros", "normal")}
    for key, allowed in choices.items():
      require(m[key] in allowed, f"{where}.{key}={m[key]!r}; use one of {allowed}")
    k = m.key_init
    require(k.method in ("ema", "kmeans", "random"),
            f"{where}.key_init.method={k.method!r}; use ema, kmeans or random")
    require(k.batch_size > 0 and k.epochs >= 0 and k.num_steps >= 0,
            f"{where}.key_init: batch_size must be > 0, epochs and num_steps >= 0")
    require(0 < k.decay < 1, f"{where}.key_init.decay={k.decay} must be in (0, 1)")
  elif m.kind == "mlp":
    require(m.hidden > 0, f"{where}.hidden={m.hidden} cannot work: it must be > 0")


def validate_data(config) -> None:
  d, s = config.data, config.stream
  require(d.name in ("toy2d", "digits", "cifar10", "cifar100"),
          f"config.data.name={d.name!r}; use toy2d, digits, cifar10 or cifar100")
  require(d.key_init_source in ("transformed", "holdout", "noise", ""),
          f"config.data.key_init_source={d.key_init_source!r}; use transformed, holdout or noise")
  require(d.name not in ("cifar10", "cifar100") or bool(d.key_init_dataset),
          f"config.data.key_init_dataset is empty; name the unlabelled TFDS set keys are fitted "
          f"on (e.g. cifar100)")
  require(config.encoder.name in encoders_lib.ENCODERS,
          f"config.encoder.name={config.encoder.name!r} unknown; known: "
          f"{encoders_lib.ENCODERS.names()}")
  check_positive(config, "stream.classes_per_task", "stream.epochs_per_task")
  check_range(config, "stream.label_smoothing", 0, 1, high_open=True)
  check_range(config, "stream.batch_size", 0, integer=True)
  check_range(config, "stream.eval_every_epochs", 0, integer=True)
  check_range(config, "stream.checkpoint_every_stages", 0, integer=True)
  classes = {"toy2d": 8, "digits": 10, "cifar10": 10, "cifar100": 100}[d.name]
  require(classes % s.classes_per_task == 0,
          f"config.stream.classes_per_task={s.classes_per_task} does not split the {classes} "
          f"classes of {d.name} into equal tasks")


@experiment_lib.EXPERIMENTS.register(
    "dkvb_stream", defaults=defaults.stream_config,
    named_sections={"model": lambda saved: defaults.model_config(
        saved.get("kind", "dkvb")).to_dict()})
def build(config, mesh) -> experiment_lib.Experiment:
  validate_data(config)
  validate_model(config.model)
  m, num_seeds = config.model, config.train.num_seeds
  seeds = [config.seed + s for s in range(num_seeds)]
  cache = config.encoder.cache_dir or None
  streams = [load_stream(config, seed, cache) for seed in seeds]
  plan = schedule(config, streams)
  require(config.train.num_steps == plan["num_steps"],
          f"config.train.num_steps={config.train.num_steps} but the stream has "
          f"{plan['num_steps']} steps ({plan['num_stages']} stages × {plan['epochs']} epochs × "
          f"{plan['slots']} batches); the dkvb protocol sets it")
  s0 = streams[0]
  model = build_model(m, s0.dim, s0.num_classes)
  is_dkvb = m.kind == "dkvb"
  n_max, b, slots, sps = plan["n_max"], plan["batch"], plan["slots"], plan["steps_per_stage"]
  num_stages, num_tasks = plan["num_stages"], len(s0.tasks)

  # Per seed: frozen keys, the stages' inputs (key indices for DKVB), used masks.
  per_seed, seed_info = [], []
  for seed, s in zip(seeds, streams):
    stages = stages_of(s, m.iid)
    entry: dict[str, Any] = {"seed": np.int32(seed), "tasks": np.stack(s.tasks).astype(np.int32),
                             "test_x": s.test[0].astype(np.float32),
                             "test_y": s.test[1].astype(np.int32),
                             "count": np.asarray([len(x) for x, _ in stages], np.int32)}
    info = {}
    if is_dkvb:
      variables, info = cached_keys(model, m, s, seed, cache)
      inputs, used = [], np.zeros((num_stages, m.num_heads, m.num_keys), bool)
      for t, (x, _) in enumerate(stages):
        # Padded to n_max rows: one lookup shape for every stage and seed.
        idx = _batched(lambda rows: _lookup_fn(model)(variables, rows),
                       _pad_rows(x.astype(np.float32), n_max))[:len(x)]
        used[t] = (used[t - 1] if t else False) | used_keys(idx, m.num_heads, m.num_keys)
        inputs.append(idx.astype(np.int32))
      entry.update(keys=variables["keys"], used=used)
    else:
      inputs = [x.astype(np.float32) for x, _ in stages]
    entry["x"] = np.stack([_pad_rows(x, n_max) for x in inputs])
    entry["y"] = np.stack([_pad_rows(y.astype(np.int32), n_max) for _, y in stages])
    per_seed.append(entry)
    seed_info.append(dict(info, **s.encoder_info))
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *per_seed)
  if num_seeds == 1:
    stacked = jax.tree.map(lambda x: x[0], stacked)
  frozen = {"per_seed": jax.tree.map(lambda x: sharding.put_replicated(x, mesh), stacked)}

  def logits_fn(params, ps, x):
    if is_dkvb:
      return model.apply({"params": params, "keys": ps["keys"]}, x, method=model.read)
    return model.apply({"params": params}, x)

  def init_params(key):
    if is_dkvb:  # Values (and decoder, projection), without a key search.
      return model.init({"params": key, "keys": jax.random.key(0)},
                        jnp.zeros((1, s0.dim), jnp.float32), method=model.init_all)["params"]
    return model.init(key, jnp.zeros((1, s0.dim), jnp.float32))["params"]

  def position(step):
    """(stage, epoch, batch slot) of a step."""
    t = jnp.minimum(step // sps, num_stages - 1)
    i = step - t * sps
    return t, i // slots, i % slots

  def sample_batch(frozen, key, step):
    del key  # Shuffles are keyed by (seed, stage, epoch): one permutation per epoch.
    ps = frozen["per_seed"]
    t, e, j = position(step)
    n = ps["count"][t]
    if slots == 1:  # Full batch: every row once, and the loss does not depend on their
      # order, so no shuffle (its RNG was a third of the step's compiled kernels).
      return {"x": ps["x"][t], "y": ps["y"][t], "w": (jnp.arange(b) < n).astype(jnp.float32)}
    k = jax.random.fold_in(jax.random.fold_in(
        jax.random.fold_in(jax.random.key(DATA_SALT), ps["seed"]), t), e)
    # A random permutation of the n valid rows first, padding rows last.
    order = jnp.argsort(jnp.where(jnp.arange(n_max) < n, jax.random.uniform(k, (n_max,)), 2.0))
    order = jnp.pad(order, (0, slots * b - n_max))
    rows = jax.lax.dynamic_slice(order, (j * b,), (b,))
    weight = ((j * b + jnp.arange(b)) < n).astype(jnp.float32)
    return {"x": ps["x"][t][rows], "y": ps["y"][t][rows], "w": weight}

  def active(frozen, step):
    t, _, j = position(step)
    return j * b < frozen["per_seed"]["count"][t]

  def loss_fn(params, frozen, batch, key):
    del key
    targets = optax.smooth_labels(jax.nn.one_hot(batch["y"], s0.num_classes),
                                  config.stream.label_smoothing)
    losses = optax.softmax_cross_entropy(logits_fn(params, frozen["per_seed"], batch["x"]),
                                         targets)
    loss = jnp.sum(batch["w"] * losses) / jnp.maximum(jnp.sum(batch["w"]), 1.0)
    return loss, {"loss": loss}

  @functools.partial(jax.jit, compiler_options=compiling.run_once())
  def predict(params, ps, x, stage):  # `stage` traced: one compilation for every stage.
    if is_dkvb:
      queries = model.apply({"params": params, "keys": ps["keys"]}, x, method=model.queries)
      idx, _ = kvb.nearest_keys(queries,
                                ps["keys"]["codebook"], k=m.top_k, mask=ps["used"][stage],
                                chunk_size=m.key_chunk)
      return jnp.argmax(logits_fn(params, ps, idx), -1)
    return jnp.argmax(logits_fn(params, ps, x), -1)

  grid = None
  if config.data.name == "toy2d" and config.stream.save_grid:
    g = np.linspace(0, 1, GRID, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)

  def stage_at(step: int) -> int:
    return min(max(step - 1, 0) // sps, num_stages - 1)

  def evaluate(params, frozen, step):
    ps = frozen["per_seed"]
    t = stage_at(step)
    tasks = [np.asarray(c) for c in np.asarray(ps["tasks"])]
    y_te = np.asarray(ps["test_y"])
    pred = np.asarray(predict(params, ps, ps["test_x"], np.int32(t)))
    row = stream_lib.task_accuracies(pred, y_te, tasks)
    out = {"stage": t, "epoch": float(step / slots), "seed": int(ps["seed"]),
           "acc": stream_lib.balanced_accuracy(pred, y_te, np.arange(s0.num_classes)),
           "acc_se": stream_lib.balanced_accuracy_se(pred, y_te, np.arange(s0.num_classes)),
           "n_test": int(len(y_te)), **{f"acc_task{j}": float(a) for j, a in enumerate(row)}}
    if grid is not None:
      out["grid_preds"] = np.asarray(predict(params, ps, grid, np.int32(t))).tolist()
    return out

  def report(params, frozen, workdir, final):
    del params
    ps = frozen["per_seed"]
    seed = int(ps["seed"])
    rows = {r["step"]: r for r in metrics_lib.read_metrics(workdir, "eval")}
    ends = [(t + 1) * sps for t in range(num_stages)]
    missing = [e for e in ends if e not in rows]
    if missing:
      raise RuntimeError(f"no evaluation at the stage ends {missing} in {workdir}")
    r_mat = np.asarray([[rows[e][f"acc_task{j}"] for j in range(num_tasks)] for e in ends])
    final.update(final_acc=final["acc"], acc_matrix=r_mat.tolist(),
                 average_accuracy=stream_lib.average_accuracy(r_mat),
                 forgetting=stream_lib.forgetting(r_mat),
                 backward_transfer=stream_lib.backward_transfer(r_mat),
                 **seed_info[seeds.index(seed)])
    if is_dkvb:
      final["keys_used_fraction"] = float(np.mean(np.asarray(ps["used"])[-1]))
    if grid is not None and jax.process_index() == 0:
      buf = io.BytesIO()
      np.savez(buf, grid=grid, preds=np.asarray([rows[e]["grid_preds"] for e in ends]),
               x_test=np.asarray(ps["test_x"]), y_test=np.asarray(ps["test_y"]))
      workdir_lib.write_atomic(os.path.join(workdir, "grid.npz"), buf.getvalue())
    final.pop("grid_preds", None)
    return (f"[dkvb] seed {seed} {m.kind}: acc {final['final_acc']:.4f} "
            f"forgetting {final['forgetting']:.3f}")

  phases = tuple(sps * t for t in range(1, num_stages))
  info = {"kind": m.kind, "stages": num_stages, "steps_per_stage": sps,
          "batch_slots_per_epoch": slots, "num_classes": s0.num_classes, "dim": s0.dim}
  return experiment_lib.Experiment(
      init_params, sample_batch, loss_fn, evaluate, report, info, frozen=frozen,
      phases=phases, reset_optimizer=m.reset_optimizer, active=active,
      objects={"model": model, "encoders": [s.encoder for s in streams], "predict": predict,
               "streams": streams})


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
  return np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:], a.dtype)])


def _batched(fn, x, batch: int = 1024):
  return np.concatenate([np.asarray(fn(x[i:i + batch])) for i in range(0, len(x), batch)])


# ----------------------------------------------------------------------------
# The protocol: every model, all seeds ("dkvb").
# ----------------------------------------------------------------------------
def validate(config) -> None:
  validate_data(config)
  check_positive(config, "num_seeds", "steps_per_call")
  check_range(config, "seed", 0, 2**31 - 1, integer=True)
  require(len(config.models) > 0, "config.models is empty; add at least one model")
  for name, m in config.models.items():
    validate_model(m, f"config.models.{name}")
  only = [n for n in config.only.split(",") if n]
  unknown = [n for n in only if n not in config.models]
  require(not unknown, f"config.only names unknown models {unknown}; have {list(config.models)}")


def model_run_config(config, name: str, workdir: str) -> ml_collections.ConfigDict:
  """The trainer config of model `name` (its length from the stream's schedule)."""
  c = defaults.stream_config(config, name)
  c.encoder.cache_dir = _cache_dir(config, workdir)
  seeds = [config.seed + s for s in range(config.num_seeds)]
  plan = schedule(c, [load_stream(c, seed, c.encoder.cache_dir) for seed in seeds])
  n = plan["num_steps"]
  every = (config.stream.eval_every_epochs * plan["slots"]) or n
  stages = config.stream.checkpoint_every_stages
  c.train.update(num_steps=n, batch_size=plan["batch"], log_every=plan["steps_per_stage"],
                 eval_every=min(every, n),
                 checkpoint_every=min(plan["steps_per_stage"] * stages, n) if stages else n,
                 keep_checkpoints=2)
  return c.lock()


@experiment_lib.EXPERIMENTS.register("dkvb", defaults=defaults.get_config, runner=True,
                                     validate=validate)
def run(config, workdir: str) -> dict[str, Any]:
  """Every model of `config.models` over all seeds; returns the summary per model."""
  from research import train  # The protocol runs the trainer once per model.
  validate(config)
  workdir_lib.check_workdir(workdir)
  workdir_lib.write_atomic(os.path.join(workdir, "config.json"),
                           config.to_json_best_effort(indent=2, sort_keys=True))
  names = [n for n in config.only.split(",") if n] or list(config.models)
  results = {}
  for name in names:
    sub = model_run_config(config, name, workdir)
    t0 = time.perf_counter()
    final = train.train_and_evaluate(sub, os.path.join(workdir, name))
    results[name] = summarise(final, sub.train.num_seeds, time.perf_counter() - t0)
    print(f"[dkvb] {name:>14}: " + stats.fmt(*_acc(results[name]), scale=100, digits=1)
          + f" % ({results[name]['seconds']:.1f} s)", flush=True)
  workdir_lib.write_atomic(os.path.join(workdir, "final_metrics.json"),
                           json.dumps(results, indent=2))
  print(results_table(results))
  return results


def _acc(r):
  return r["final_acc_mean"], r["final_acc_se"], r["num_seeds"]


def summarise(final: dict, num_seeds: int, seconds: float) -> dict[str, Any]:
  """Per model: mean ± standard error over seeds of the stream metrics, per seed."""
  per_seed = final["per_seed"] if num_seeds > 1 else [final]
  out: dict[str, Any] = {"num_seeds": len(per_seed), "seconds": seconds}
  for key in ("final_acc", "average_accuracy", "forgetting", "backward_transfer"):
    out[f"{key}_mean"], out[f"{key}_se"], _ = stats.mean_se([r[key] for r in per_seed])
  out["per_seed"] = per_seed
  return out


def results_table(results: dict[str, Any]) -> str:
  """Markdown: final accuracy and forgetting per model (%, mean ± se over n seeds)."""
  lines = ["| model | final accuracy (%) | forgetting (%) | backward transfer (%) | seeds |",
           "|---|---|---|---|---|"]
  for name, r in results.items():
    cell = lambda k: stats.fmt(r[f"{k}_mean"], r[f"{k}_se"], scale=100, digits=1)
    lines.append(f"| {name} | {cell('final_acc')} | {cell('forgetting')} | "
                 f"{cell('backward_transfer')} | {r['num_seeds']} |")
  return "\n".join(lines)
