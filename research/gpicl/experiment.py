"""GPICL meta-training as a trainer `Experiment`: batches of task sequences, the
per-position cross-entropy, and the ICL-curve evaluations of Kirsch et al. 2022
(`research/gpicl/evaluation.py`). The config's keys: `research/gpicl/defaults.py`.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from models.registry import LEARNERS
from research import experiment as experiment_lib
from research import metrics as metrics_lib
from research import sharding
from research.data import offline
from research.data import tfds as tfds_data
from research.errors import ConfigError, check_positive, require
from research.gpicl import analysis
from research.gpicl import curriculum
from research.gpicl import defaults
from research.gpicl import evaluation
from research.gpicl import learners
from research.gpicl import sampler

def pca_reduce(x_fit, xs, dim: int):
  """Projects each of `xs` on the top `dim` principal components of `x_fit`.

  The components are rescaled so that a feature of `x_fit` has unit variance on
  average (the z-normalisation the sets had before). Sets with at most `dim`
  features are returned unchanged (they are zero-padded later).
  """
  if x_fit.shape[1] <= dim:
    return list(xs)
  mean = x_fit.mean(0)
  _, _, vt = np.linalg.svd(x_fit - mean, full_matrices=False)
  basis = vt[:dim].T
  scale = np.sqrt(((x_fit - mean) @ basis).var(0).mean())
  return [((x - mean) @ basis / scale).astype(np.float32) for x in xs]


def _base_pools(config):
  """Train and test pools of the base data, padded to input_dim, and its class count.

  With `data.pca_dim` > 0 every set is first reduced to its own top `pca_dim`
  principal components (fitted on the split it trains on, or on all of an
  evaluation-only set): a smaller input makes the paper layout's two-hop
  circuit cheaper (experiments/gpicl/README.md).
  """
  d = config.data
  base = offline.load(d.dataset, seed=d.split_seed, dim=d.input_dim)
  x_train, x_test = base.x_train, base.x_test
  if d.pca_dim:
    x_train, x_test = pca_reduce(base.x_train, (x_train, x_test), d.pca_dim)
  return ({"train": (offline.fit_dim(x_train, d.input_dim), base.y_train),
           "test": (offline.fit_dim(x_test, d.input_dim), base.y_test)}, base.num_classes)


def _other_pool(config, name):
  """An evaluation-only dataset (never trained on), padded to input_dim."""
  d = config.data
  other = offline.load(name, seed=d.split_seed, dim=d.input_dim)
  # Never trained on: use all of it, so long sequences rarely repeat examples;
  # TFDS sets have real test splits (10k+ images), which is what the paper evaluates.
  if name == "random" or tfds_data.is_tfds(name):
    x, y = (other.x_test, other.y_test)
  else:
    x, y = np.concatenate([other.x_train, other.x_test]), np.concatenate([other.y_train, other.y_test])
  if d.pca_dim:
    x, = pca_reduce(x, (x,), d.pca_dim)
  return (offline.fit_dim(x, d.input_dim), y), other.num_classes


def validate(config) -> None:
  """GPICL-specific config checks (before anything compiles)."""
  d, t = config.data, config.tasks
  check_positive(config, "data.seq_len", "data.input_dim", "data.num_classes",
                 "tasks.num_tasks", "eval.num_sequences", "tasks.bias_num_tasks",
                 "tasks.sequences_per_task")
  require(d.num_classes >= 2, f"config.data.num_classes={d.num_classes} cannot work: a "
          f"classification task needs at least 2 classes")
  require(t.num_tasks <= sampler.MAX_TASKS,
          f"config.tasks.num_tasks={t.num_tasks} exceeds 2^25={sampler.MAX_TASKS}; unseen task ids "
          f"start at 2^30 and must stay disjoint")
  require(0.0 <= t.bias_fraction < 1.0,
          f"config.tasks.bias_fraction={t.bias_fraction} must be in [0, 1)")
  require(t.bias_num_tasks <= t.num_tasks,
          f"config.tasks.bias_num_tasks={t.bias_num_tasks} must be in [1, tasks.num_tasks="
          f"{t.num_tasks}]")
  require(config.train.batch_size % t.sequences_per_task == 0,
          f"config.tasks.sequences_per_task={t.sequences_per_task} must divide "
          f"config.train.batch_size={config.train.batch_size}")
  require(t.sequences_per_task == 1 or not t.bias_shared_projection,
          "config.tasks.sequences_per_task > 1 cannot be combined with "
          "tasks.bias_shared_projection; use one of them")
  require(d.pipeline in ("device", "host"),
          f"config.data.pipeline={d.pipeline!r}; use 'device' (sample inside the step) "
          f"or 'host' (each process builds its rows)")
  require(0.0 <= t.permute_prob <= 1.0, f"config.tasks.permute_prob={t.permute_prob} must be in [0, 1]")
  require(isinstance(d.pca_dim, int) and 0 <= d.pca_dim <= d.input_dim,
          f"config.data.pca_dim={d.pca_dim} must be an integer in [0, data.input_dim={d.input_dim}] "
          f"(0 = no reduction)")
  for name in (d.dataset, *config.eval.datasets):
    require(not (d.pca_dim and tfds_data.is_tfds(name)),
            f"config.data.pca_dim={d.pca_dim} is for the offline sets; {name} is a TFDS image set "
            f"(resized to data.input_dim instead): set data.pca_dim=0")
    require(name in offline.DATASETS,
            f"dataset {name!r} (config.data.dataset / config.eval.datasets) is unknown; known: "
            f"{', '.join(offline.DATASETS.names())}")
    if tfds_data.is_tfds(name):
      try:
        tfds_data.image_shape(d.input_dim)
      except ValueError as e:
        raise ConfigError(f"{e} (config.data.input_dim, for {name})") from e
  classes = offline.num_classes(d.dataset)
  require(d.num_classes == classes,
          f"config.data.num_classes={d.num_classes} cannot work with {d.dataset}, which has "
          f"{classes} classes: set --config.data.num_classes={classes}")
  declared = learners.config_defaults(config.model.name)
  for key, value in config.model.items():
    if isinstance(declared.get(key), int) and not isinstance(value, bool) and declared[key] > 0:
      require(isinstance(value, int) and value > 0,
              f"config.model.{key}={value!r} cannot work: it must be a positive integer")
  if "layout" in config.model:
    require(config.model.layout in ("paper", "query"),
            f"config.model.layout={config.model.layout!r}; use 'paper' or 'query'")
  curriculum.validate(config, require)


@experiment_lib.EXPERIMENTS.register(
    "gpicl", defaults=defaults.get_config,
    named_sections={"model": lambda saved: learners.config_defaults(saved.get("name"))})
def build(config, mesh) -> experiment_lib.Experiment:
  validate(config)
  d, t = config.data, config.tasks
  num_classes = d.num_classes
  base_np, base_classes = _base_pools(config)
  # Data pools enter the jitted functions as arguments (`frozen`), not as constants.
  put = lambda xy: tuple(sharding.put_replicated(a, mesh) for a in xy)
  model = learners.make_learner(config.model, num_classes=num_classes, seq_len=d.seq_len,
                                input_dim=d.input_dim)
  task_kw = dict(task_seed=t.task_seed, proj_std=t.proj_std, bias_std=t.bias_std,
                 permute_prob=t.permute_prob)

  def init_params(key):
    x = jnp.zeros((1, d.seq_len, d.input_dim), jnp.float32)
    y = jnp.zeros((1, d.seq_len), jnp.int32)
    return model.init(key, x, y).get("params", {})  # The SGD learner has none.

  per_task = t.sequences_per_task

  def sample_n(train_pool, key, n, step):
    """n training sequences (n/per_task tasks) from `key`, at train step `step`."""
    k_ids, k_seq = jax.random.split(key)
    # Curricula (research/gpicl/curriculum.py); without them these are the constants.
    pool = curriculum.num_tasks(config, step)
    classes = curriculum.classes_per_sequence(config, step, base_classes)
    loss_len = jnp.full((n,), curriculum.loss_len(config, step), jnp.int32)
    if per_task > 1:  # The paper's grouping: G tasks × per_task sequences.
      ids, biased = sampler.sample_task_ids(k_ids, n // per_task, pool, t.bias_fraction,
                                            t.bias_num_tasks)
      x, y = sampler.make_grouped_sequences(k_seq, ids, per_task, *train_pool, d.seq_len,
                                            base_classes, classes=classes, **task_kw)
      return {"x": x, "y": y, "biased": jnp.repeat(biased, per_task), "loss_len": loss_len}
    ids, biased = sampler.sample_task_ids(k_ids, n, pool, t.bias_fraction, t.bias_num_tasks)
    # Optional curriculum: biased sequences share task 0's projection and differ
    # only in their label permutation, so only the context identifies them.
    proj_ids = jnp.where(biased, 0, ids) if t.bias_shared_projection else None
    x, y = sampler.make_sequences(k_seq, ids, *train_pool, d.seq_len, base_classes,
                                  proj_ids=proj_ids, classes=classes, **task_kw)
    return {"x": x, "y": y, "biased": biased, "loss_len": loss_len}

  def sample_batch(frozen, key, step):
    return sample_n(frozen["train"], key, config.train.batch_size, step)

  host_batch = None
  if d.pipeline == "host":
    # Each process samples its own rows on its host CPU, in blocks of one task
    # group keyed by the block's index: the global batch does not depend on how
    # many processes share it.
    cpu = jax.local_devices(backend="cpu")[0]
    host_pool = jax.device_put(base_np["train"], cpu)

    @jax.jit
    def sample_blocks(key, blocks, pool, step):
      out = jax.vmap(lambda b: sample_n(pool, jax.random.fold_in(key, b), per_task, step))(blocks)
      return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)

    def host_batch(key, start, stop, step):
      if start % per_task or stop % per_task:
        raise ConfigError(f"this process holds batch rows [{start}, {stop}), which split a group "
                          f"of tasks.sequences_per_task={per_task}; use a batch of whole groups "
                          f"per process")
      blocks = np.arange(start // per_task, stop // per_task, dtype=np.int32)
      rows = sample_blocks(jax.device_put(key, cpu), jax.device_put(blocks, cpu), host_pool,
                           jax.device_put(np.int32(step), cpu))
      return jax.tree.map(np.asarray, rows)

  def loss_fn(params, frozen, batch, key):
    del frozen, key  # Deterministic learners; dropout would use the key.
    logits = model.apply({"params": params}, batch["x"], batch["y"])
    ce, acc = evaluation.per_position_metrics(logits, batch["y"])
    # The loss-length curriculum trains on the first loss_len positions only.
    counted = (jnp.arange(ce.shape[1])[None] < batch["loss_len"][:, None]).astype(ce.dtype)
    loss = (ce * counted).sum() / jnp.maximum(counted.sum(), 1.0)
    # With a biased distribution the total loss drops to (1-bias)·ln C once task 0
    # is memorised; the plateau is read off the unbiased sequences only, over all
    # positions whatever the curriculum (one yardstick for every run).
    unbiased = 1.0 - batch["biased"].astype(jnp.float32)
    n_unbiased = jnp.maximum(unbiased.sum(), 1.0)
    metrics = {
        "loss": ce.mean(),
        "accuracy": acc.mean(),
        "loss_unbiased": (ce.mean(1) * unbiased).sum() / n_unbiased,
        "accuracy_unbiased": (acc.mean(1) * unbiased).sum() / n_unbiased,
        "loss_counted": loss,
    }
    return loss, metrics

  # ---- Evaluation: fixed keys, so every evaluation sees the same sequences. The
  # evaluation-only datasets are loaded on first use (runs.load needs none of them).
  n_eval = config.eval.num_sequences
  eval_sets = ["seen", "unseen", "identity", *config.eval.datasets]

  @functools.cache
  def eval_pools():
    pools, classes = {"test": put(base_np["test"])}, {"test": base_classes}
    for name in config.eval.datasets:
      xy, classes[name] = _other_pool(config, name)
      pools[name] = put(xy)
    return pools, classes

  def _curve(params, x, y):
    ce, acc = evaluation.per_position_metrics(model.apply({"params": params}, x, y), y)
    return acc, ce

  @functools.partial(jax.jit, static_argnums=2, out_shardings=sharding.replicated(mesh))
  def eval_all(params, pools, classes):
    classes = dict(classes)
    k_seen, k_unseen, k_id, k_seq, k_other = jax.random.split(jax.random.key(config.eval.seed), 5)
    out = {}
    xt, yt = pools["test"]
    seqs = lambda kind, k, x, y, c: evaluation.make_sequences(
        kind, k, x, y, n_eval, d.seq_len, c, task_kw, t.num_tasks)
    # The seen and unseen sets share the example key: the same examples, other tasks.
    for name, k_ids in (("seen", k_seen), ("unseen", k_unseen)):
      ids = (sampler.sample_task_ids(k_ids, n_eval, t.num_tasks, 0.0)[0] if name == "seen"
             else sampler.sample_unseen_ids(k_ids, n_eval))
      x, y = sampler.make_sequences(k_seq, ids, xt, yt, d.seq_len, classes["test"], **task_kw)
      out[name] = _curve(params, x, y)
    out["identity"] = _curve(params, *seqs("identity", k_id, xt, yt, classes["test"]))
    for i, name in enumerate(config.eval.datasets):
      out[name] = _curve(params, *seqs("unseen", jax.random.fold_in(k_other, i), *pools[name],
                                       classes[name]))
    return out

  def evaluate(params, frozen, step):
    del frozen, step
    pools, classes = eval_pools()
    curves = sharding.to_host(eval_all(params, pools, tuple(sorted(classes.items()))))
    metrics = {}
    for name in eval_sets:
      metrics.update(evaluation.curve_metrics(name, *curves[name]))
    return metrics

  def chance():
    classes = eval_pools()[1]
    return {**{n: 1 / classes["test"] for n in ("seen", "unseen", "identity")},
            **{n: 1 / classes[n] for n in config.eval.datasets}}

  def report(params, frozen, workdir, final):
    del params, frozen
    # The plateau length joins the final metrics (the trainer writes `final` to
    # final_metrics.json after this returns); train rows are on process 0's disk.
    # A curriculum's own batches are easier: its train loss counts only once it ends.
    end = curriculum.end_step(config)
    plateau = analysis.plateau_from_rows(metrics_lib.read_metrics(workdir, "train"), num_classes,
                                         start_step=end)
    # The same yardstick on the paper's distribution: unseen tasks' mean loss, per eval.
    plateau_eval = analysis.plateau_from_rows(metrics_lib.read_metrics(workdir, "eval"),
                                              num_classes, key="unseen/loss_mean")
    final["plateau_steps"] = plateau
    final["plateau_steps_eval"] = plateau_eval
    final["phase"] = analysis.classify_phase(final, base_classes)
    text = evaluation.icl_table(final, eval_sets, d.seq_len, chance())
    bound = f"ln {num_classes} - {analysis.PLATEAU_MARGIN}"
    since = f" (rows from step {end}, the curriculum's end)" if end else ""
    text += (f"\nplateau: loss_unbiased left {bound} at step {plateau}{since}" if plateau is not None
             else f"\nplateau: loss_unbiased never left {bound}{since}")
    text += (f"\nplateau (eval, unseen/loss_mean): left {bound} at step {plateau_eval}"
             if plateau_eval is not None else
             f"\nplateau (eval, unseen/loss_mean): never left {bound}")
    text += f"\nphase: {final['phase']}"
    if jax.process_index() == 0:
      evaluation.plot_icl_curves(final, eval_sets, chance(), os.path.join(workdir, "icl_curves.png"),
                                 title=f"{config.model.name} on {d.dataset}, {t.num_tasks} tasks")
    return text

  n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(
      jax.eval_shape(init_params, jax.random.key(0))))
  info = {"num_params": n_params, "state_size": model.state_size(d.seq_len),
          "layout": config.model.layout if "layout" in config.model else "paper"}
  frozen = {"train": put(base_np["train"])} if d.pipeline == "device" else {}
  return experiment_lib.Experiment(init_params, sample_batch, loss_fn, evaluate, report, info,
                                   frozen=frozen, host_batch=host_batch,
                                   objects={"model": model, "eval_sets": eval_sets})
