"""The GPICL task family as a registered family ("projection"): a dataset under random
projections and label permutations (Kirsch et al. 2022; the tasks themselves are
`research/gpicl/sampler.py`). Its keys are the GPICL config's `data` and `tasks`
sections (research/gpicl/defaults.py), where they always were.

Training sequences: fresh examples of the base data's train split under task ids
from the pool (biased distribution, grouped tasks and the curricula of
research/gpicl/curriculum.py included). `tasks.classes_min` = k ≥ 2 draws each
sequence's examples from a random subset of between k and all classes (uniform), so
that a learner meets tasks of every class count (a 2-class table as well as 10 digits);
`tasks.features_min` = m ≥ 1 keeps a random subset of between m and all F of the base
data's features in each sequence (the others zeroed before the projection; the count
log-uniform in [m, F], so that few features are as common as many), so that it meets
inputs of every intrinsic dimension (a 4-feature table as well as 64 pixels).

Evaluation sets (fixed keys; the sequences of the GPICL evaluation since the start):
  seen      training task ids, test split of the base data
  unseen    ids ≥ 2^30 (never in any training pool), test split
  identity  the unprojected base data
With a dataset override (`projection@mnist1d` in a mixture) only that dataset's
"<dataset>/unseen" set.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from research import families as families_lib
from research.data import offline
from research.data import tfds as tfds_data
from research.errors import require
from research.gpicl import curriculum
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


def base_pools(config, dataset: str = ""):
  """Train and test pools of the base data, padded to input_dim, and its class count.

  With `data.pca_dim` > 0 every set is first reduced to its own top `pca_dim`
  principal components (fitted on the split it trains on, or on all of an
  evaluation-only set): a smaller input makes the paper layout's two-hop
  circuit cheaper (experiments/gpicl/README.md).
  """
  d = config.data
  base = offline.load(dataset or d.dataset, seed=d.split_seed, dim=d.input_dim)
  x_train, x_test = base.x_train, base.x_test
  if d.pca_dim:
    x_train, x_test = pca_reduce(base.x_train, (x_train, x_test), d.pca_dim)
  return ({"train": (offline.fit_dim(x_train, d.input_dim), base.y_train),
           "test": (offline.fit_dim(x_test, d.input_dim), base.y_test)}, base.num_classes)


def other_pool(config, name):
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


def per_task_of(config) -> int:
  return config.tasks.sequences_per_task


def task_kwargs(config) -> dict:
  t = config.tasks
  return dict(task_seed=t.task_seed, proj_std=t.proj_std, bias_std=t.bias_std,
              permute_prob=t.permute_prob)


def unseen_set(config, pool, classes: int, key) -> families_lib.EvalSet:
  """Sequences of `pool` under unseen tasks (the held-out datasets' evaluation)."""
  n_tasks, length, kw = config.tasks.num_tasks, config.data.seq_len, task_kwargs(config)

  def fn(arrays, k, n):
    k_ids, k_seq = jax.random.split(k)
    ids = sampler.sample_unseen_ids(k_ids, n)
    x, y = sampler.make_sequences(k_seq, ids, *arrays, length, classes, **kw)
    return {"x": x, "y": y}
  del n_tasks
  return families_lib.EvalSet(fn, key, arrays=pool, chance=1.0 / classes)


@families_lib.FAMILIES.register("projection", has_dataset=True)
def build(config, spec) -> families_lib.Family:
  d, t = config.data, config.tasks
  dataset = spec.dataset or d.dataset
  classes_of = offline.num_classes(dataset)
  require(d.num_classes >= classes_of if spec.dataset else d.num_classes == classes_of,
          f"config.data.num_classes={d.num_classes} cannot work with {dataset}, which has "
          f"{classes_of} classes: set --config.data.num_classes={classes_of}")
  require(t.classes_min == 0 or 2 <= t.classes_min <= classes_of,
          f"config.tasks.classes_min={t.classes_min} must be 0 (off) or in [2, {classes_of}] "
          f"(the classes of {dataset})")
  require(not ((t.classes_min or t.features_min) and
               (config.curriculum.classes_start or per_task_of(config) > 1
                or t.bias_shared_projection)),
          "config.tasks.classes_min / features_min cannot be combined with "
          "curriculum.classes_start, tasks.sequences_per_task > 1 or tasks.bias_shared_projection")
  pools, base_classes = base_pools(config, spec.dataset)
  features = int((np.abs(pools["train"][0]).sum(0) > 0).sum())  # Not the zero padding.
  require(0 <= t.features_min <= features,
          f"config.tasks.features_min={t.features_min} must be 0 (off) or in [1, {features}] "
          f"(the features of {dataset})")
  kw = task_kwargs(config)
  per_task = t.sequences_per_task

  def sample(pool, key, n, step, active_dim=None):
    """n training sequences (n/per_task tasks) from `key`, at train step `step`."""
    del active_dim
    k_ids, k_seq = jax.random.split(key)
    # Curricula (research/gpicl/curriculum.py); without them these are the constants.
    num_tasks = curriculum.num_tasks(config, step)
    classes = curriculum.classes_per_sequence(config, step, base_classes)
    if per_task > 1:  # The paper's grouping: G tasks × per_task sequences.
      ids, biased = sampler.sample_task_ids(k_ids, n // per_task, num_tasks, t.bias_fraction,
                                            t.bias_num_tasks)
      x, y = sampler.make_grouped_sequences(k_seq, ids, per_task, *pool, d.seq_len,
                                            base_classes, classes=classes, **kw)
      return {"x": x, "y": y, "biased": jnp.repeat(biased, per_task)}
    ids, biased = sampler.sample_task_ids(k_ids, n, num_tasks, t.bias_fraction, t.bias_num_tasks)
    # Optional curriculum: biased sequences share task 0's projection and differ
    # only in their label permutation, so only the context identifies them.
    proj_ids = jnp.where(biased, 0, ids) if t.bias_shared_projection else None
    if t.classes_min or t.features_min:
      x, y = _varied(k_seq, ids, pool, d.seq_len, base_classes, t.classes_min, t.features_min,
                     features, kw)
    else:
      x, y = sampler.make_sequences(k_seq, ids, *pool, d.seq_len, base_classes,
                                    proj_ids=proj_ids, classes=classes, **kw)
    return {"x": x, "y": y, "biased": biased}

  def eval_sets(seed: int) -> dict:
    k_seen, k_unseen, k_id, k_seq, _ = jax.random.split(jax.random.key(seed), 5)
    test = pools["test"]
    if spec.dataset:
      name = f"{spec.dataset}/unseen"
      return {name: unseen_set(config, test, base_classes, families_lib.set_key(seed, name))}
    n_tasks, length = t.num_tasks, d.seq_len

    def tasks_set(kind):
      def fn(arrays, keys, n):
        k_ids, k_s = keys[0], keys[1]  # The seen and unseen sets share the example key.
        ids = (sampler.sample_task_ids(k_ids, n, n_tasks, 0.0)[0] if kind == "seen"
               else sampler.sample_unseen_ids(k_ids, n))
        x, y = sampler.make_sequences(k_s, ids, *arrays, length, base_classes, **kw)
        return {"x": x, "y": y}
      return fn

    def identity(arrays, key, n):
      x, y = sampler.make_identity_sequences(key, n, *arrays, length)
      return {"x": x, "y": y}

    chance = 1.0 / base_classes
    return {
        "seen": families_lib.EvalSet(tasks_set("seen"), jnp.stack([k_seen, k_seq]), test, chance),
        "unseen": families_lib.EvalSet(tasks_set("unseen"), jnp.stack([k_unseen, k_seq]), test,
                                       chance),
        "identity": families_lib.EvalSet(identity, k_id, test, chance),
    }

  return families_lib.Family("projection", "classes", base_classes, sample,
                             pool=pools["train"], eval_sets=eval_sets,
                             info={"dataset": dataset})


def _varied(key, ids, pool, length, num_classes, classes_min, features_min, features, kw):
  """Like sampler.make_sequences, each sequence from a random subset of k classes, k
  uniform in [classes_min, num_classes] (all if classes_min = 0), and of f of the first
  `features` features, log f uniform in [log features_min, log features] (all if
  features_min = 0)."""
  dim = pool[0].shape[1]

  def one(k, task_id):
    k_count, k_ex, k_feat = jax.random.split(k, 3)
    count = (jax.random.randint(k_count, (), classes_min, num_classes + 1) if classes_min
             else None)
    x, y = sampler.sample_examples(k_ex, *pool, length, count, num_classes)
    if features_min:
      k_num, k_which = jax.random.split(k_feat)
      log_f = jax.random.uniform(k_num, (), minval=jnp.log(features_min),
                                 maxval=jnp.log(features + 1.0))
      keep = jnp.floor(jnp.exp(log_f)).astype(jnp.int32)
      rank = jax.random.permutation(k_which, dim) + (jnp.arange(dim) >= features) * dim
      x = x * (jnp.argsort(jnp.argsort(rank)) < keep)
    task = sampler.task_from_id(kw["task_seed"], task_id, dim, num_classes,
                                proj_std=kw["proj_std"], bias_std=kw["bias_std"],
                                permute_prob=kw["permute_prob"])
    return sampler.apply_task(task, x, y)

  return jax.vmap(one)(jax.random.split(key, ids.shape[0]), ids)
