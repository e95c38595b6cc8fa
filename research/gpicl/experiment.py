"""GPICL meta-training as a trainer `Experiment`: batches of task sequences, the
per-position cross-entropy, and the ICL-curve evaluations of Kirsch et al. 2022.

Evaluation sets (each an ICL curve: accuracy after t examples, t = 0 … L-1):
  seen      training task ids, test split of the base data
  unseen    ids ≥ 2^30 (never in any training pool), test split
  identity  the unprojected base data
  <name>    another offline dataset never used in training, under unseen tasks
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import config as config_lib
from research import experiment as experiment_lib
from research import metrics as metrics_lib
from research import sharding
from research.data import offline
from research.data import tfds as tfds_data
from research.gpicl import analysis
from research.gpicl import curriculum
from research.gpicl import learners
from research.gpicl import sampler

REPORT_AFTER = (1, 5, 10)  # plus the last position


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


def _pools(config):
  """Base train/test pools and unseen-dataset pools, padded to input_dim.

  With `data.pca_dim` > 0 every set is first reduced to its own top `pca_dim`
  principal components (fitted on the split it trains on, or on all of an
  evaluation-only set): a smaller input makes the paper layout's two-hop
  circuit cheaper (experiments/gpicl/README.md).
  """
  d = config.data
  k = d.get("pca_dim", 0)
  base = offline.load(d.dataset, seed=d.split_seed, dim=d.input_dim)
  x_train, x_test = base.x_train, base.x_test
  if k:
    x_train, x_test = pca_reduce(base.x_train, (x_train, x_test), k)
  pools = {"train": (offline.fit_dim(x_train, d.input_dim), base.y_train),
           "test": (offline.fit_dim(x_test, d.input_dim), base.y_test)}
  classes = {"train": base.num_classes, "test": base.num_classes}
  for name in config.eval.datasets:
    other = offline.load(name, seed=d.split_seed, dim=d.input_dim)
    # Never trained on: use all of it, so long sequences rarely repeat examples;
    # TFDS sets have real test splits (10k+ images), which is what the paper evaluates.
    if name == "random" or tfds_data.is_tfds(name):
      x, y = (other.x_test, other.y_test)
    else:
      x, y = np.concatenate([other.x_train, other.x_test]), np.concatenate([other.y_train, other.y_test])
    if k:
      x, = pca_reduce(x, (x,), k)
    pools[name] = (offline.fit_dim(x, d.input_dim), y)
    classes[name] = other.num_classes
  return pools, classes


def per_position_metrics(logits, y):
  """Cross-entropy and accuracy per sequence and position: [B, L] each."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  acc = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  return ce, acc


def validate(config) -> None:
  """GPICL-specific config checks (before anything compiles)."""
  d, t = config.data, config.tasks
  config_lib.check_positive(config, "data.seq_len", "data.input_dim", "data.num_classes",
                            "tasks.num_tasks", "eval.num_sequences")
  require = config_lib.require
  require(t.num_tasks <= sampler.MAX_TASKS,
          f"config.tasks.num_tasks={t.num_tasks} exceeds 2^25={sampler.MAX_TASKS}; unseen task ids "
          f"start at 2^30 and must stay disjoint")
  require(0.0 <= t.bias_fraction < 1.0,
          f"config.tasks.bias_fraction={t.bias_fraction} must be in [0, 1)")
  k = t.get("bias_num_tasks", 1)
  require(isinstance(k, int) and 1 <= k <= t.num_tasks,
          f"config.tasks.bias_num_tasks={k} must be an integer in [1, tasks.num_tasks={t.num_tasks}]")
  per_task = t.get("sequences_per_task", 1)
  require(per_task >= 1 and config.train.batch_size % per_task == 0,
          f"config.tasks.sequences_per_task={per_task} must be >= 1 and divide "
          f"config.train.batch_size={config.train.batch_size}")
  require(per_task == 1 or not t.get("bias_shared_projection", False),
          "config.tasks.sequences_per_task > 1 cannot be combined with "
          "tasks.bias_shared_projection; use one of them")
  require(d.get("pipeline", "device") in ("device", "host"),
          f"config.data.pipeline={d.get('pipeline')!r}; use 'device' (sample inside the step) "
          f"or 'host' (each process builds its rows)")
  require(0.0 <= t.permute_prob <= 1.0, f"config.tasks.permute_prob={t.permute_prob} must be in [0, 1]")
  pca_dim = d.get("pca_dim", 0)
  require(isinstance(pca_dim, int) and 0 <= pca_dim <= d.input_dim,
          f"config.data.pca_dim={pca_dim} must be an integer in [0, data.input_dim={d.input_dim}] "
          f"(0 = no reduction)")
  for name in (d.dataset, *config.eval.datasets):
    require(not (pca_dim and tfds_data.is_tfds(name)),
            f"config.data.pca_dim={pca_dim} is for the offline sets; {name} is a TFDS image set "
            f"(resized to data.input_dim instead): set data.pca_dim=0")
    require(name in offline.NAMES or name in offline.TFDS_NAMES,
            f"dataset {name!r} (config.data.dataset / config.eval.datasets) is unknown; offline "
            f"sets: {', '.join(offline.NAMES)}; TFDS sets: {', '.join(offline.TFDS_NAMES)}")
    if tfds_data.is_tfds(name):
      try:
        tfds_data.image_shape(d.input_dim)
      except ValueError as e:
        raise config_lib.ConfigError(f"{e} (config.data.input_dim, for {name})") from e
  require(config.model.name in learners.LEARNERS,
          f"config.model.name={config.model.name!r} unknown; use one of {sorted(learners.LEARNERS)}")
  max_len = config.model.get("max_len")
  if max_len is not None:
    require(d.seq_len <= max_len, f"config.data.seq_len={d.seq_len} is longer than the positional "
            f"table config.model.max_len={max_len}; raise model.max_len or shorten data.seq_len")
  if "layout" in config.model:
    require(config.model.layout in ("paper", "query"),
            f"config.model.layout={config.model.layout!r}; use 'paper' or 'query'")
  curriculum.validate(config, require)


def build(config, mesh) -> experiment_lib.Experiment:
  validate(config)
  d, t = config.data, config.tasks
  num_classes = d.num_classes
  pipeline = d.get("pipeline", "device")
  pools_np, pool_classes = _pools(config)
  if pool_classes["train"] > num_classes:
    raise ValueError(f"data.num_classes={num_classes} < {pool_classes['train']} classes of "
                     f"{d.dataset}; raise data.num_classes")
  # Data pools enter the jitted functions as arguments (`frozen`), not as constants.
  pools = {k: (sharding.put_replicated(x, mesh), sharding.put_replicated(y, mesh))
           for k, (x, y) in pools_np.items() if k != "train" or pipeline == "device"}
  model = learners.make_learner(config.model, num_classes=num_classes, seq_len=d.seq_len,
                                 input_dim=d.input_dim)
  task_kw = dict(task_seed=t.task_seed, proj_std=t.proj_std, bias_std=t.bias_std,
                 permute_prob=t.permute_prob)

  def init_params(key):
    x = jnp.zeros((1, d.seq_len, d.input_dim), jnp.float32)
    y = jnp.zeros((1, d.seq_len), jnp.int32)
    return model.init(key, x, y).get("params", {})  # The SGD learner has none.

  per_task = t.get("sequences_per_task", 1)

  def sample_n(train_pool, key, n, step):
    """n training sequences (n/per_task tasks) from `key`, at train step `step`."""
    k_ids, k_seq = jax.random.split(key)
    # Curricula (research/gpicl/curriculum.py); without them these are the constants.
    pool = curriculum.num_tasks(config, step)
    classes = curriculum.classes_per_sequence(config, step, pool_classes["train"])
    loss_len = jnp.full((n,), curriculum.loss_len(config, step), jnp.int32)
    if per_task > 1:  # The paper's grouping: G tasks × per_task sequences.
      ids, biased = sampler.sample_task_ids(k_ids, n // per_task, pool, t.bias_fraction,
                                            t.get("bias_num_tasks", 1))
      x, y = sampler.make_grouped_sequences(k_seq, ids, per_task, *train_pool, d.seq_len,
                                            pool_classes["train"], classes=classes, **task_kw)
      return {"x": x, "y": y, "biased": jnp.repeat(biased, per_task), "loss_len": loss_len}
    ids, biased = sampler.sample_task_ids(k_ids, n, pool, t.bias_fraction,
                                          t.get("bias_num_tasks", 1))
    # Optional curriculum: biased sequences share task 0's projection and differ
    # only in their label permutation, so only the context identifies them.
    proj_ids = jnp.where(biased, 0, ids) if t.get("bias_shared_projection", False) else None
    x, y = sampler.make_sequences(k_seq, ids, *train_pool, d.seq_len, pool_classes["train"],
                                  proj_ids=proj_ids, classes=classes, **task_kw)
    return {"x": x, "y": y, "biased": biased, "loss_len": loss_len}

  def sample_batch(frozen, key, step):
    return sample_n(frozen["train"], key, config.train.batch_size, step)

  host_batch = None
  if pipeline == "host":
    # Each process samples its own rows on its host CPU, in blocks of one task
    # group keyed by the block's index: the global batch does not depend on how
    # many processes share it.
    cpu = jax.local_devices(backend="cpu")[0]
    host_pool = jax.device_put(pools_np["train"], cpu)

    @jax.jit
    def sample_blocks(key, blocks, pool, step):
      out = jax.vmap(lambda b: sample_n(pool, jax.random.fold_in(key, b), per_task, step))(blocks)
      return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)

    def host_batch(key, start, stop, step):
      if start % per_task or stop % per_task:
        raise ValueError(f"this process holds batch rows [{start}, {stop}), which split a group "
                         f"of tasks.sequences_per_task={per_task}; use a batch of whole groups "
                         f"per process")
      blocks = np.arange(start // per_task, stop // per_task, dtype=np.int32)
      rows = sample_blocks(jax.device_put(key, cpu), jax.device_put(blocks, cpu), host_pool,
                           jax.device_put(np.int32(step), cpu))
      return jax.tree.map(np.asarray, rows)

  def loss_fn(params, frozen, batch, key):
    del frozen, key  # Deterministic learners; dropout would use the key.
    logits = model.apply({"params": params}, batch["x"], batch["y"])
    ce, acc = per_position_metrics(logits, batch["y"])
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
    }
    if config.get("curriculum") is not None:
      metrics["loss_counted"] = loss
    return loss, metrics

  # ---- Evaluation: fixed keys, so every evaluation sees the same sequences.
  n_eval = config.eval.num_sequences
  replicated = sharding.replicated(mesh)

  def _curve(params, x, y):
    ce, acc = per_position_metrics(model.apply({"params": params}, x, y), y)
    return acc.mean(0), ce.mean(0)

  @functools.partial(jax.jit, out_shardings=replicated)
  def eval_all(params, pools):
    key = jax.random.key(config.eval.seed)
    out = {}
    k_seen, k_unseen, k_id, k_seq, k_other = jax.random.split(key, 5)
    seen_ids, _ = sampler.sample_task_ids(k_seen, n_eval, t.num_tasks, 0.0)
    unseen_ids = sampler.sample_unseen_ids(k_unseen, n_eval)
    xt, yt = pools["test"]
    for name, ids in (("seen", seen_ids), ("unseen", unseen_ids)):
      x, y = sampler.make_sequences(k_seq, ids, xt, yt, d.seq_len, pool_classes["test"], **task_kw)
      out[name] = _curve(params, x, y)
    x, y = sampler.make_identity_sequences(k_id, n_eval, xt, yt, d.seq_len)
    out["identity"] = _curve(params, x, y)
    for i, name in enumerate(config.eval.datasets):
      xo, yo = pools[name]
      k_ids, k_s = jax.random.split(jax.random.fold_in(k_other, i))
      x, y = sampler.make_sequences(k_s, sampler.sample_unseen_ids(k_ids, n_eval), xo, yo,
                                    d.seq_len, pool_classes[name], **task_kw)
      out[name] = _curve(params, x, y)
    return out

  eval_pools = {k: v for k, v in pools.items() if k != "train"}
  eval_sets = ["seen", "unseen", "identity", *config.eval.datasets]
  chance = {"seen": 1 / pool_classes["test"], "unseen": 1 / pool_classes["test"],
            "identity": 1 / pool_classes["test"],
            **{n: 1 / pool_classes[n] for n in config.eval.datasets}}

  def evaluate(params, step):
    del step
    curves = sharding.to_host(eval_all(params, eval_pools))
    metrics = {}
    for name in eval_sets:
      acc, ce = curves[name]
      for k in REPORT_AFTER:
        if k < len(acc):
          metrics[f"{name}/acc_after_{k}"] = float(acc[k])
      metrics[f"{name}/acc_last"] = float(acc[-1])
      metrics[f"{name}/loss_last"] = float(ce[-1])
      metrics[f"{name}/loss_mean"] = float(ce.mean())
      metrics[f"{name}/improvement"] = float(acc[-1] - acc[0])
      metrics[f"{name}/acc_curve"] = [round(float(a), 5) for a in acc]
    return metrics

  def report(params, workdir, final):
    del params
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
    final["phase"] = analysis.classify_phase(final, pool_classes["test"])
    text = icl_table(final, eval_sets, d.seq_len, chance)
    bound = f"ln {num_classes} - {analysis.PLATEAU_MARGIN}"
    since = f" (rows from step {end}, the curriculum's end)" if end else ""
    text += (f"\nplateau: loss_unbiased left {bound} at step {plateau}{since}" if plateau is not None
             else f"\nplateau: loss_unbiased never left {bound}{since}")
    text += (f"\nplateau (eval, unseen/loss_mean): left {bound} at step {plateau_eval}"
             if plateau_eval is not None else
             f"\nplateau (eval, unseen/loss_mean): never left {bound}")
    text += f"\nphase: {final['phase']}"
    if jax.process_index() == 0:
      plot_icl_curves(final, eval_sets, chance, os.path.join(workdir, "icl_curves.png"),
                      title=f"{config.model.name} on {d.dataset}, {t.num_tasks} tasks")
    return text

  n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(
      jax.eval_shape(init_params, jax.random.key(0))))
  info = {"num_params": n_params, "state_size": model.state_size(d.seq_len),
          "layout": config.model.get("layout", "paper")}
  frozen = {"train": pools["train"]} if pipeline == "device" else {}
  return experiment_lib.Experiment(init_params, sample_batch, loss_fn, evaluate, report, info,
                                   frozen=frozen, host_batch=host_batch)


def icl_table(metrics, sets, seq_len, chance) -> str:
  """Accuracy after 1, 5, 10 and L-1 examples for each evaluation set."""
  cols = [k for k in REPORT_AFTER if k < seq_len] + [seq_len - 1]
  head = f"{'eval set':<16}" + "".join(f"{'after ' + str(k):>10}" for k in cols) + f"{'chance':>9}"
  lines = [head, "-" * len(head)]
  for name in sets:
    curve = metrics.get(f"{name}/acc_curve")
    if curve is None:
      continue
    lines.append(f"{name:<16}" + "".join(f"{curve[k]:>10.3f}" for k in cols) + f"{chance[name]:>9.3f}")
  return "\n".join(lines)


def plot_icl_curves(metrics, sets, chance, path, title=""):
  import matplotlib  # Lazy: only the final report plots.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for name in sets:
    curve = metrics.get(f"{name}/acc_curve")
    if curve is None:
      continue
    line, = ax.plot(np.arange(len(curve)), curve, label=name)
    ax.axhline(chance[name], color=line.get_color(), ls=":", lw=0.8)
  ax.set_xlabel("examples seen in context")
  ax.set_ylabel("accuracy")
  ax.set_ylim(0, 1)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
