"""GPICL meta-training as a trainer `Experiment`: batches of task sequences from a
registered task family (`config.data.family`, research/families/; GPICL's own
projections by default), the per-position loss (cross-entropy for class labels,
squared error over the target's variance for real values), and the ICL-curve
evaluations of Kirsch et al. 2022 (`research/gpicl/evaluation.py`) with classical
learners fitted on exactly the same sequences (`config.eval.classical`,
research/classical/). The config's keys: `research/gpicl/defaults.py`.

Evaluation sets: the training family's own (GPICL: seen, unseen, identity), every
dataset of `eval.datasets` under unseen GPICL tasks, and every set of the families
of `eval.families`. The last two are held out from training: the final report
gives, for each, the model's distance to the best classical learner after the full
context, with the standard error of the paired difference.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from research import classical
from research import experiment as experiment_lib
from research import families
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
from research.gpicl import projection
from research.gpicl import sampler

def validate(config) -> None:
  """GPICL-specific config checks (before anything compiles)."""
  d, t = config.data, config.tasks
  check_positive(config, "data.seq_len", "data.input_dim", "data.num_classes",
                 "tasks.num_tasks", "eval.num_sequences", "tasks.bias_num_tasks",
                 "tasks.sequences_per_task")
  require(d.num_classes >= 2 or d.num_classes == 1 and d.family != "projection",
          f"config.data.num_classes={d.num_classes} cannot work: a classification task needs at "
          f"least 2 classes (1: one output, for a family with real-valued targets)")
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
  for name in config.eval.classical:
    classical.CLASSICAL.get(name)  # Unknown: one line naming the known ones.
  declared = learners.config_defaults(config.model.name)
  for key, value in config.model.items():
    if isinstance(declared.get(key), int) and not isinstance(value, bool) and declared[key] > 0:
      require(isinstance(value, int) and value > 0,
              f"config.model.{key}={value!r} cannot work: it must be a positive integer")
  if "layout" in config.model:
    require(config.model.layout in ("paper", "query"),
            f"config.model.layout={config.model.layout!r}; use 'paper' or 'query'")
  curriculum.validate(config, require)


def check_family(config, family, held_out) -> None:
  """The learner's outputs and the evaluation sets fit the family's targets."""
  d = config.data
  if family.target == "values":
    require(d.num_classes == 1,
            f"config.data.num_classes={d.num_classes} cannot work with family {d.family!r}, whose "
            f"targets are real values: set --config.data.num_classes=1 (one output)")
    require(not config.eval.datasets,
            f"config.eval.datasets={tuple(config.eval.datasets)} are classification sets; family "
            f"{d.family!r} has real-valued targets: set --config.eval.datasets='()'")
  else:
    require(d.num_classes >= family.num_outputs,
            f"config.data.num_classes={d.num_classes} cannot work with family {d.family!r}, whose "
            f"labels go up to {family.num_outputs - 1}: set --config.data.num_classes="
            f"{family.num_outputs}")
  for spec, other in held_out.items():
    require(other.target == family.target,
            f"config.eval.families has {spec!r} with {other.target} targets; the training family "
            f"{d.family!r} has {family.target}")
    require(family.target == "values" or d.num_classes >= other.num_outputs,
            f"config.eval.families has {spec!r} with {other.num_outputs} classes > "
            f"data.num_classes={d.num_classes}")


@experiment_lib.EXPERIMENTS.register(
    "gpicl", defaults=defaults.get_config,
    named_sections={"model": lambda saved: learners.config_defaults(saved.get("name"))})
def build(config, mesh) -> experiment_lib.Experiment:
  validate(config)
  d, t = config.data, config.tasks
  num_classes = d.num_classes
  family = families.build(config, d.family)
  held_out_families = {spec: families.build(config, spec) for spec in config.eval.families}
  check_family(config, family, held_out_families)
  values = family.target == "values"
  # Data pools enter the jitted functions as arguments (`frozen`), not as constants.
  put = lambda tree: jax.tree.map(lambda a: sharding.put_replicated(np.asarray(a), mesh), tree)
  model = learners.make_learner(config.model, num_classes=num_classes, seq_len=d.seq_len,
                                input_dim=d.input_dim)

  def init_params(key):
    x = jnp.zeros((1, d.seq_len, d.input_dim), jnp.float32)
    y = jnp.zeros((1, d.seq_len), jnp.float32 if values else jnp.int32)
    return model.init(key, x, y).get("params", {})  # The SGD learner has none.

  per_task = t.sequences_per_task

  def sample_n(pool, key, n, step):
    """n training sequences of the family from `key`, at train step `step`."""
    batch = family.sample(pool, key, n, step, curriculum.active_dim(config, step))
    batch = families.complete(batch, n, d.seq_len)
    batch["loss_len"] = jnp.full((n,), curriculum.loss_len(config, step), jnp.int32)
    return batch

  def sample_batch(frozen, key, step):
    return sample_n(frozen["train"], key, config.train.batch_size, step)

  host_batch = None
  if d.pipeline == "host":
    # Each process samples its own rows on its host CPU, in blocks of one task
    # group keyed by the block's index: the global batch does not depend on how
    # many processes share it.
    cpu = jax.local_devices(backend="cpu")[0]
    host_pool = jax.device_put(family.pool, cpu)

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
    out = model.apply({"params": params}, batch["x"], batch["y"])
    ce, acc = evaluation.per_position_metrics(out, batch["y"], batch["y_var"])
    # The loss-length curriculum trains on the first loss_len positions only, and a
    # family's mask on the positions it scores (Chan et al.: the query).
    mask = batch["mask"]
    counted = (jnp.arange(ce.shape[1])[None] < batch["loss_len"][:, None]).astype(ce.dtype) * mask
    loss = (ce * counted).sum() / jnp.maximum(counted.sum(), 1.0)
    # With a biased distribution the total loss drops to (1-bias)·ln C once task 0
    # is memorised; the plateau is read off the unbiased sequences only, over all
    # positions whatever the curriculum (one yardstick for every run).
    unbiased = 1.0 - batch["biased"].astype(jnp.float32)
    n_unbiased = jnp.maximum(unbiased.sum(), 1.0)
    per_seq = lambda v: (v * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
    metrics = {
        "loss": (ce * mask).sum() / mask.sum(),
        "loss_unbiased": (per_seq(ce) * unbiased).sum() / n_unbiased,
        "loss_counted": loss,
    }
    if not values:  # Squared errors are the loss itself.
      metrics["accuracy"] = (acc * mask).sum() / mask.sum()
      metrics["accuracy_unbiased"] = (per_seq(acc) * unbiased).sum() / n_unbiased
    return loss, metrics

  # ---- Evaluation: fixed keys, so every evaluation sees the same sequences, sampled
  # once; the held-out sets (other datasets, other families) are built on first use
  # (runs.load needs none of them).
  n_eval = config.eval.num_sequences
  kind = "mse" if values else "acc"

  @functools.cache
  def eval_data():
    """{set: EvalSet}, {set: (x, y, y_var) device arrays}, the held-out set names."""
    sets = dict(family.eval_sets(config.eval.seed))
    k_other = jax.random.split(jax.random.key(config.eval.seed), 5)[4]
    held_out = []
    for i, name in enumerate(config.eval.datasets):
      xy, classes = projection.other_pool(config, name)
      sets[name] = projection.unseen_set(config, xy, classes, jax.random.fold_in(k_other, i))
      held_out.append(name)
    for spec, other in held_out_families.items():
      for name, es in other.eval_sets(config.eval.seed).items():
        if name in sets:
          raise ConfigError(f"config.eval.families has {spec!r}, whose evaluation set {name!r} "
                            f"the run already has; hold out a family it does not train on")
        sets[name] = es
        held_out.append(name)
    seqs = {}
    for name, es in sets.items():
      batch = jax.jit(es.sample, static_argnums=2)(put(es.arrays), es.key, n_eval)
      y_var = jnp.full((n_eval,), es.y_var, jnp.float32)
      seqs[name] = (batch["x"], batch["y"], y_var)
    return sets, seqs, tuple(held_out)

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def _curve(params, x, y, y_var):
    loss, score = evaluation.per_position_metrics(model.apply({"params": params}, x, y), y, y_var)
    return score, loss

  def evaluate(params, frozen, step):
    del frozen, step
    _, seqs, _ = eval_data()
    metrics = {}
    for name, (x, y, y_var) in seqs.items():
      score, loss = sharding.to_host(_curve(params, x, y, y_var))
      metrics.update(evaluation.curve_metrics(name, score, loss, kind))
    return metrics

  @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
  def _predict(params, x, y):
    """The model's predictions [n, L]: values, or argmax labels."""
    out = model.apply({"params": params}, x, y)
    return out[..., 0] if values else jnp.argmax(out, -1)

  @functools.cache
  def classical_scores():
    """{set: {learner: (scores [n, L], predictions [n, L])}} of the classical learners and
    the sets' Bayes-optimal oracles (computed once: the sequences are fixed);
    predictions are values or argmax labels."""
    sets, seqs, _ = eval_data()
    out = {}
    for name, (x, y, y_var) in seqs.items():
      es, out[name] = sets[name], {}
      fns = {c: classical.predict_fn(c, num_classes) for c in config.eval.classical
             if classical.supports(c, family.target)}
      for o, fn in es.oracles.items():  # Closures over this run's task pool.
        oracle = lambda x, y, num_classes, fn=fn, arrays=put(es.arrays): fn(arrays, x, y)
        fns[o] = jax.jit(functools.partial(classical.predict, oracle, num_classes=num_classes))
      for learner, fn in fns.items():
        pred = fn(x, y)
        label = pred if values else jnp.argmax(pred, -1)
        out[name][learner] = (np.asarray(classical.score(pred, y, y_var[:, None])),
                              np.asarray(label))
    return out

  def chance():
    return {name: es.chance for name, es in eval_data()[0].items()}

  def report(params, frozen, workdir, final):
    del frozen
    sets, seqs, held_out = eval_data()
    scores = classical_scores()
    learners_shown = []
    for name, per in scores.items():
      x, y, y_var = seqs[name]
      mine = np.asarray(sharding.to_host(_predict(params, x, y)))
      for learner, (score, pred) in per.items():
        final.update(evaluation.curve_metrics(f"{name}/{learner}", score, score, kind))
        final.update(evaluation.closeness(f"{name}/{learner}", mine, pred,
                                          np.asarray(y_var) if values else None))
        if learner not in learners_shown:
          learners_shown.append(learner)
    names = list(seqs)
    text = evaluation.icl_table(final, names, d.seq_len, chance(), learners=learners_shown)
    if held_out:  # Model vs the best classical learner on the same sequences, paired.
      rows = []
      for name in held_out:
        x, y, y_var = seqs[name]
        model_last = np.asarray(sharding.to_host(_curve(params, x, y, y_var))[0])[:, -1]
        rows.append(evaluation.held_out_gap(name, model_last,
                                            {k: v[0][:, -1] for k, v in scores[name].items()},
                                            kind))
        final.update(rows[-1]["metrics"])
      text += "\n" + evaluation.held_out_table(rows, kind)
    if "seen/acc_curve" in final and "unseen/acc_curve" in final:  # GPICL's own sets.
      # The plateau length joins the final metrics (the trainer writes `final` to
      # final_metrics.json after this returns); train rows are on process 0's disk.
      # A curriculum's own batches are easier: its train loss counts only once it ends.
      end = curriculum.end_step(config)
      plateau = analysis.plateau_from_rows(metrics_lib.read_metrics(workdir, "train"),
                                           num_classes, start_step=end)
      # The same yardstick on the paper's distribution: unseen tasks' mean loss, per eval.
      plateau_eval = analysis.plateau_from_rows(metrics_lib.read_metrics(workdir, "eval"),
                                                num_classes, key="unseen/loss_mean")
      final["plateau_steps"] = plateau
      final["plateau_steps_eval"] = plateau_eval
      final["phase"] = analysis.classify_phase(final, family.num_outputs)
      bound = f"ln {num_classes} - {analysis.PLATEAU_MARGIN}"
      since = f" (rows from step {end}, the curriculum's end)" if end else ""
      text += (f"\nplateau: loss_unbiased left {bound} at step {plateau}{since}"
               if plateau is not None else f"\nplateau: loss_unbiased never left {bound}{since}")
      text += (f"\nplateau (eval, unseen/loss_mean): left {bound} at step {plateau_eval}"
               if plateau_eval is not None else
               f"\nplateau (eval, unseen/loss_mean): never left {bound}")
      text += f"\nphase: {final['phase']}"
    if jax.process_index() == 0:
      evaluation.plot_icl_curves(final, names, chance(), os.path.join(workdir, "icl_curves.png"),
                                 title=f"{config.model.name} on {d.family} ({_describe(config)})",
                                 learners=learners_shown)
    return text

  n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(
      jax.eval_shape(init_params, jax.random.key(0))))
  info = {"num_params": n_params, "state_size": model.state_size(d.seq_len),
          "layout": config.model.layout if "layout" in config.model else "paper",
          "family": d.family, **{f"family_{k}": v for k, v in family.info.items()}}
  frozen = {"train": put(family.pool)} if d.pipeline == "device" else {}
  return experiment_lib.Experiment(init_params, sample_batch, loss_fn, evaluate, report, info,
                                   frozen=frozen, host_batch=host_batch,
                                   objects={"model": model, "family": family,
                                            "eval_data": eval_data,
                                            "classical_scores": classical_scores})


def _describe(config) -> str:
  d = config.data
  if d.family == "projection":
    return f"{d.dataset}, {config.tasks.num_tasks} tasks"
  return f"L={d.seq_len}"
