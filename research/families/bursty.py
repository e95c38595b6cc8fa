"""Bursty, Zipf-distributed class sequences (Chan et al. 2022) from an offline image set.

Classes: each of `num_train_classes` examples of the set's train split (a seeded
choice) is the prototype of one class, and each of `num_holdout_classes` examples of
its test split the prototype of a class never trained on; an exemplar is its
prototype plus N(0, within_class_std²) noise per pixel (fresh every time: the
within-class variation). Trained class k always carries the same label, so a model
can learn labels in its weights: label k (`num_labels` = 0, Chan: one label per
class; data.num_classes ≥ num_train_classes), or a seeded uniform choice out of
`num_labels` labels (Reddy 2023's K classes on L labels: the copy an in-context
learner must learn is over L labels, seen far more often than a rare class).

A sequence is `data.seq_len` - 1 context (exemplar, label) pairs and a query
exemplar; only the query's prediction counts in the loss (Chan's setup). Classes
are drawn from a Zipf law, p(k) ∝ (k + 1)^-zipf_exponent (0: uniform). With
probability `p_bursty` a sequence is bursty: its context holds `burst_classes`
classes (the query's and others), the context slots split evenly between them
(Chan: a few examples of the query's class); otherwise every context class is drawn
i.i.d. from the Zipf law.

Evaluation sets (the answer is the query's):
  bursty/in_context  bursty context of trained classes, with the labels of the context
                     classes permuted among them: only the context gives the answer
                     (a model answering from its weights is wrong); chance 1/burst_classes
  bursty/holdout     bursty context of classes never trained on, random labels: Chan's
                     few-shot probe of in-context learning; chance 1/burst_classes
  bursty/in_weights  i.i.d. context of trained classes without the query's class, the
                     query's class uniform over the trained classes: only the weights
                     give the answer; chance 1/labels
  bursty/in_weights_zipf  (zipf_exponent > 0) the same with the query's and the context's
                     classes from the training law: the weights on the classes as often
                     as they were trained on (the head of the law dominates)
With `num_labels` > 0 two context classes may share a trained label, so the
in_context probe gives the context's classes distinct labels none of them carries.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from research import families as families_lib
from research.data import offline
from research.errors import require


def defaults() -> dict:
  return dict(
      dataset="digits",         # Offline image set whose examples are the class prototypes.
      num_train_classes=256,    # Classes trained on (K).
      num_labels=0,             # Labels they map to (L); 0: one per class (label = class index).
      num_holdout_classes=64,   # Classes of the test split, never trained on (holdout probe).
      within_class_std=0.3,     # Per-pixel noise of an exemplar around its prototype.
      p_bursty=0.9,             # Fraction of bursty training sequences (Chan: 0.9).
      zipf_exponent=0.0,        # Class frequencies ∝ (rank + 1)^-exponent (0: uniform).
      burst_classes=2,          # Classes in a bursty context, the query's among them.
      seed=0,                   # Seed of the prototype choice.
  )


def _prototypes(config, s, dataset: str):
  base = offline.load(dataset, seed=config.data.split_seed, dim=config.data.input_dim)
  rng = np.random.default_rng(s.seed)
  train = base.x_train[rng.permutation(len(base.x_train))[: s.num_train_classes]]
  hold = base.x_test[rng.permutation(len(base.x_test))[: s.num_holdout_classes]]
  return (offline.fit_dim(train, config.data.input_dim).astype(np.float32),
          offline.fit_dim(hold, config.data.input_dim).astype(np.float32))


@families_lib.FAMILIES.register("bursty", defaults=defaults, has_dataset=True)
def build(config, spec) -> families_lib.Family:
  s = families_lib.section(config, "bursty")
  dataset = spec.dataset or s.dataset
  where = "config.families.bursty"
  require(dataset in offline.DATASETS, f"{where}.dataset={dataset!r} is unknown; known: "
          f"{', '.join(offline.DATASETS.names())}")
  length = config.data.seq_len
  ctx = length - 1
  k = s.num_train_classes
  require(length >= 3, f"config.data.seq_len={length}: the bursty family needs a context of at "
          f"least 2 examples and a query")
  require(2 <= s.burst_classes <= ctx, f"{where}.burst_classes={s.burst_classes} must be in "
          f"[2, data.seq_len - 1 = {ctx}]")
  require(k >= s.burst_classes and s.num_holdout_classes >= s.burst_classes,
          f"{where}: num_train_classes={k} and num_holdout_classes={s.num_holdout_classes} must "
          f"be at least burst_classes={s.burst_classes}")
  labels = s.num_labels or k
  require(s.num_labels == 0 or 2 * s.burst_classes <= s.num_labels <= k,
          f"{where}.num_labels={s.num_labels} must be 0 (one label per class) or in "
          f"[2 * burst_classes = {2 * s.burst_classes}, num_train_classes = {k}]")
  require(0.0 <= s.p_bursty <= 1.0, f"{where}.p_bursty={s.p_bursty} must be in [0, 1]")
  require(s.zipf_exponent >= 0.0, f"{where}.zipf_exponent={s.zipf_exponent} must be >= 0")
  train_np, hold_np = _prototypes(config, s, dataset)
  require(len(train_np) == k and len(hold_np) == s.num_holdout_classes,
          f"{where}: {dataset} has {len(train_np)} train / {len(hold_np)} test examples, fewer "
          f"than num_train_classes={k} / num_holdout_classes={s.num_holdout_classes}")
  label_of_class = (jnp.arange(k, dtype=jnp.int32) if not s.num_labels else jnp.asarray(
      np.random.default_rng(s.seed + 1).integers(0, labels, k), jnp.int32))
  zipf_logits = -s.zipf_exponent * jnp.log(jnp.arange(1, k + 1, dtype=jnp.float32))
  zipf_p = np.arange(1, k + 1, dtype=np.float64) ** -s.zipf_exponent
  zipf_cdf = jnp.asarray(np.cumsum(zipf_p / zipf_p.sum()), jnp.float32)
  uniform_logits = jnp.zeros((k,))
  bc = s.burst_classes

  def exemplars(key, protos, classes):
    return protos[classes] + s.within_class_std * jax.random.normal(
        key, (*classes.shape, protos.shape[-1]))

  def burst_context(key, query_class, others):
    """Context classes: the query's and `others`, the slots split evenly, shuffled."""
    members = jnp.concatenate([query_class[None], others])        # [bc]
    slots = members[jnp.arange(ctx) % bc]
    return jax.random.permutation(key, slots)

  def distinct_others(key, logits, query_class):
    """bc - 1 distinct classes other than the query's, drawn from `logits`."""
    logits = logits.at[query_class].set(-jnp.inf)
    g = jax.random.gumbel(key, logits.shape) + logits             # Gumbel top-k: no repeats.
    return jax.lax.top_k(g, bc - 1)[1]

  def zipf_draw(key, shape=()):
    """Classes from the Zipf law by inverse CDF: O(log K) a draw (categorical is O(K))."""
    u = jax.random.uniform(key, shape)
    return jnp.minimum(jnp.searchsorted(zipf_cdf, u, side="right"), k - 1).astype(jnp.int32)

  def one_train(key, protos):
    k_q, k_o, k_iid, k_shuf, k_coin, k_x = jax.random.split(key, 6)
    q = zipf_draw(k_q)
    bursty_ctx = burst_context(k_shuf, q, distinct_others(k_o, zipf_logits, q))
    iid_ctx = zipf_draw(k_iid, (ctx,))
    classes = jnp.where(jax.random.uniform(k_coin) < s.p_bursty, bursty_ctx, iid_ctx)
    classes = jnp.concatenate([classes, q[None]])
    return exemplars(k_x, protos, classes), label_of_class[classes]

  query_only = jnp.zeros((length,), jnp.float32).at[-1].set(1.0)

  def sample(pool, key, n, step, active_dim=None):
    del step, active_dim
    x, y = jax.vmap(lambda kk: one_train(kk, pool[0]))(jax.random.split(key, n))
    return {"x": x, "y": y, "mask": jnp.broadcast_to(query_only, (n, length))}

  def probe(kind):
    def one(key, protos):
      k_q, k_o, k_shuf, k_lab, k_x, k_iid = jax.random.split(key, 6)
      count = protos.shape[0]
      logits = jnp.zeros((count,))
      if kind in ("in_weights", "in_weights_zipf"):
        law = uniform_logits if kind == "in_weights" else zipf_logits
        q = jax.random.categorical(k_q, law)
        ctx_classes = jax.random.categorical(k_iid, law.at[q].set(-jnp.inf), shape=(ctx,))
        classes = jnp.concatenate([ctx_classes, q[None]])
        return exemplars(k_x, protos, classes), label_of_class[classes]
      q = jax.random.randint(k_q, (), 0, count)
      members = jnp.concatenate([q[None], distinct_others(k_o, logits, q)])
      classes = jnp.concatenate([burst_context(k_shuf, q, members[1:]), q[None]])
      if kind == "in_context" and not s.num_labels:  # Labels permuted among the context's
        shift = jax.random.randint(k_lab, (), 1, bc)      # classes (a derangement).
        new = members[(jnp.arange(bc) + shift) % bc]
      elif kind == "in_context":  # Distinct labels none of the context's classes carries.
        taken = jnp.zeros((labels,)).at[label_of_class[members]].set(-jnp.inf)
        new = jax.lax.top_k(jax.random.gumbel(k_lab, (labels,)) + taken, bc)[1]
      else:  # holdout: random distinct labels of the trained label set.
        new = jax.random.choice(k_lab, labels, (bc,), replace=False)
      label_of = lambda c: new[jnp.argmax(members == c)]
      return exemplars(k_x, protos, classes), jax.vmap(label_of)(classes).astype(jnp.int32)

    def fn(arrays, key, n):
      x, y = jax.vmap(lambda kk: one(kk, arrays))(jax.random.split(key, n))
      return {"x": x, "y": y, "mask": jnp.broadcast_to(query_only, (n, length))}
    return fn

  def eval_sets(seed: int) -> dict:
    probes = [("in_context", train_np, 1 / bc), ("holdout", hold_np, 1 / bc),
              ("in_weights", train_np, 1 / labels)]
    if s.zipf_exponent > 0:  # Uniform classes otherwise: the same as in_weights.
      probes.append(("in_weights_zipf", train_np, 1 / labels))
    sets = {}
    for kind, arrays, chance in probes:
      name = f"bursty/{kind}"
      sets[name] = families_lib.EvalSet(probe(kind), families_lib.set_key(seed, name),
                                        arrays=arrays, chance=chance)
    return sets

  return families_lib.Family("bursty", "classes", labels, sample, pool=(train_np,),
                             eval_sets=eval_sets,
                             info={"dataset": dataset, "p_bursty": s.p_bursty,
                                   "zipf_exponent": s.zipf_exponent, "labels": labels})
