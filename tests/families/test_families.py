"""Every registered task family: its config section, batches inside jit (shapes, dtypes,
determinism, targets), its evaluation sets; and what each family promises (the pool,
sparsity, tree depth, Chan's bursts and probes, the mixture's proportions)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import families
from research.errors import ConfigError
from research.gpicl import defaults

L, D = 9, 16


def _config(name, **section):
  c = defaults.get_config("transformer", "tiny")
  c.data.family = name
  c.data.seq_len = L
  c.data.input_dim = 64
  c.train.batch_size = 12
  if name in c.families:
    c.families[name].update(section)
  return c


def _fam(name, **section):
  return families.build(_config(name, **section), name)


def _sample(fam, n=12, step=0, key=0, active_dim=None):
  fn = jax.jit(lambda pool, k: families.complete(fam.sample(pool, k, n, step, active_dim), n, L))
  return jax.tree.map(np.asarray, fn(fam.pool, jax.random.key(key)))


@pytest.mark.parametrize("name", families.FAMILIES.names())
def test_every_family_samples_in_jit(name):
  fam = _fam(name)
  b = _sample(fam)
  assert b["x"].shape == (12, L, 64) and b["x"].dtype == np.float32
  assert b["y"].shape == (12, L) and b["mask"].shape == (12, L)
  if fam.target == "classes":
    assert b["y"].dtype == np.int32 and 0 <= b["y"].min() and b["y"].max() < fam.num_outputs
  else:
    assert b["y"].dtype == np.float32 and fam.num_outputs == 1
  again = _sample(fam)
  assert all(np.array_equal(b[k], again[k]) for k in b)  # A pure function of the key.
  other = _sample(fam, key=1)
  assert not np.array_equal(b["x"], other["x"])
  for set_name, es in fam.eval_sets(0).items():
    out = jax.jit(es.sample, static_argnums=2)(es.arrays, es.key, 5)
    assert out["x"].shape == (5, L, 64), set_name
    assert out["y"].dtype == b["y"].dtype, set_name


@pytest.mark.parametrize("name", [n for n in families.FAMILIES.names()
                                  if "num_classes" in families.config_section().get(n, {})])
def test_function_families_give_classes_or_values(name):
  fam = _fam(name, num_classes=4)
  b = _sample(fam, n=64)
  assert fam.target == "classes" and fam.num_outputs == 4
  assert set(np.unique(b["y"])) <= set(range(4)) and len(np.unique(b["y"])) > 1
  if fam.dim:  # Function classes of `dim` inputs: padded with zeros to data.input_dim.
    assert b["x"][..., fam.dim:].max() == 0 and b["x"][..., :fam.dim].std() > 0.5
  else:  # Embedded in every input dimension (clusters).
    assert b["x"].std() > 0.1 and np.isfinite(b["x"]).all()


def test_linear_regression_targets_are_linear_and_pool_is_finite():
  fam = _fam("linear_regression", dim=5, num_tasks=4)
  b = _sample(fam, n=200)
  x, y = b["x"][..., :5], b["y"]
  ws = [np.linalg.lstsq(x[i], y[i], rcond=None)[0] for i in range(200)]
  assert max(np.abs(x[i] @ ws[i] - y[i]).max() for i in range(200)) < 1e-4  # Noiseless: exact.
  distinct = {tuple(np.round(w, 3)) for w in ws}
  assert len(distinct) == 4  # Four weight vectors in the pool, no more.
  np.testing.assert_allclose(b["y_var"], 5.0)


def test_linear_regression_oracles():
  """The pool posterior mean is right after enough examples; the Bayes ridge is ridge."""
  from research.families import linear_regression as lr
  key = jax.random.key(0)
  pool = jax.random.normal(key, (8, 4, 1))
  x = jax.random.normal(jax.random.key(1), (L, 4))
  y = x @ pool[3, :, 0] + 0.1 * jax.random.normal(jax.random.key(2), (L,))
  pred = lr.pool_posterior_mean(pool, x, y, 0.1)
  np.testing.assert_allclose(pred[-1], x[-1] @ pool[3, :, 0], atol=1e-3)
  from sklearn.linear_model import Ridge
  from research.classical import linear
  ours = np.asarray(linear.ridge_predictions(x, y, 0.25))
  for t in (2, 5, L - 1):
    ref = Ridge(alpha=0.25, fit_intercept=False).fit(np.asarray(x[:t]), np.asarray(y[:t]))
    np.testing.assert_allclose(ours[t], ref.predict(np.asarray(x[t:t + 1]))[0], rtol=1e-4,
                               atol=1e-4)


def test_sparse_linear_has_k_nonzero_weights():
  fam = _fam("sparse_linear_regression", dim=8, sparsity=2)
  b = _sample(fam, n=20)
  for i in range(20):
    w = np.linalg.lstsq(b["x"][i, :, :8], b["y"][i], rcond=None)[0]
    assert (np.abs(w) > 1e-4).sum() <= 2


def test_decision_tree_is_piecewise_constant_on_sign_patterns():
  fam = _fam("decision_tree", dim=3, depth=2)
  b = _sample(fam, n=16)
  for i in range(16):
    signs = (b["x"][i, :, :3] > 0)
    for pattern in {tuple(s) for s in signs}:
      rows = np.all(signs == pattern, 1)
      assert np.ptp(b["y"][i][rows]) < 1e-6


def test_input_dimension_curriculum_zeroes_inactive_coordinates():
  fam = _fam("linear_regression", dim=6)
  b = _sample(fam, active_dim=lambda dim: jnp.int32(2))
  assert np.abs(b["x"][..., 2:]).max() == 0 and np.abs(b["x"][..., :2]).max() > 0
  np.testing.assert_allclose(b["y_var"], 2.0)


def test_bursty_sequences_and_probes():
  c = _config("bursty", num_train_classes=40, num_holdout_classes=10, p_bursty=1.0,
              burst_classes=2)
  c.data.num_classes = 40
  fam = families.build(c, "bursty")
  b = _sample(fam, n=64)
  assert np.all(b["mask"][:, :-1] == 0) and np.all(b["mask"][:, -1] == 1)  # Loss on the query.
  for row in b["y"]:  # Bursty: two classes, 4 each, the query's among them.
    classes, counts = np.unique(row[:-1], return_counts=True)
    assert len(classes) == 2 and set(counts) == {4} and row[-1] in classes
  sets = fam.eval_sets(0)
  get = lambda name: jax.tree.map(np.asarray, jax.jit(sets[name].sample, static_argnums=2)(
      sets[name].arrays, sets[name].key, 32))
  weights = get("bursty/in_weights")
  assert all(row[-1] not in row[:-1] for row in weights["y"])  # Query class absent.
  swapped = get("bursty/in_context")
  protos = fam.pool[0]
  for x_row, y_row in zip(swapped["x"], swapped["y"]):
    true = np.argmin(((x_row[-1][None] - protos) ** 2).sum(-1))  # The query's own class.
    assert y_row[-1] != true and y_row[-1] in y_row[:-1]  # Only the context knows its label.
  hold = get("bursty/holdout")
  assert all(len(np.unique(r[:-1])) == 2 and r[-1] in r[:-1] for r in hold["y"])


def test_bursty_zipf_skews_class_frequencies():
  c = _config("bursty", num_train_classes=50, num_holdout_classes=4, p_bursty=0.0,
              zipf_exponent=1.5)
  c.data.num_classes = 50
  y = _sample(families.build(c, "bursty"), n=400)["y"]
  counts = np.bincount(y.ravel(), minlength=50)
  assert counts[0] > 5 * counts[10] > 0
  p = np.arange(1, 51) ** -1.5
  p /= p.sum()
  freq, n = counts / counts.sum(), counts.sum()  # The inverse-CDF draw gives the law itself.
  np.testing.assert_array_less(np.abs(freq[:3] - p[:3]), 4 * np.sqrt(p[:3] * (1 - p[:3]) / n))


def test_bursty_classes_on_fewer_labels():
  """Reddy 2023's K classes on L labels: a class keeps one label everywhere; the
  in-context probe gives the context's classes distinct labels none of them carries."""
  c = _config("bursty", num_train_classes=40, num_labels=8, num_holdout_classes=10,
              p_bursty=0.5, within_class_std=0.0)
  c.data.num_classes = 8
  fam = families.build(c, "bursty")
  assert fam.num_outputs == 8
  protos = fam.pool[0]
  class_of = lambda x: np.argmin(((x[:, None] - protos[None]) ** 2).sum(-1), axis=-1)
  b = _sample(fam, n=256)  # 2304 draws: every one of the 40 classes is seen.
  label = {}
  for x_row, y_row in zip(b["x"], b["y"]):
    for cls, lab in zip(class_of(x_row), y_row):
      assert label.setdefault(cls, lab) == lab  # One label per class, in every sequence.
  assert len(label) == 40 and set(label.values()) <= set(range(8))
  assert len(set(label.values())) > 4
  sets = fam.eval_sets(0)
  swapped = jax.tree.map(np.asarray, jax.jit(sets["bursty/in_context"].sample, static_argnums=2)(
      sets["bursty/in_context"].arrays, sets["bursty/in_context"].key, 32))
  for x_row, y_row in zip(swapped["x"], swapped["y"]):
    classes = class_of(x_row)
    trained = {int(label[cl]) for cl in classes}
    assert len(set(y_row)) == 2 and y_row[-1] in y_row[:-1]
    assert not trained & set(int(v) for v in y_row)  # No context class keeps a trained label.
  c.families.bursty.num_labels = 3
  with pytest.raises(ConfigError, match="num_labels=3"):
    families.build(c, "bursty")


def test_mixture_proportions_and_errors():
  c = _config("mixture")
  c.families.mixture.components = ("projection", "linear_regression")
  c.families.mixture.weights = (3.0, 1.0)
  c.families.linear_regression.num_classes = 10
  fam = families.build(c, "mixture")
  b = _sample(fam, n=12)
  assert b["x"].shape[0] == 12
  from research.families import mixture
  assert mixture.counts([3.0, 1.0], 12) == [9, 3]
  assert {"seen", "unseen", "identity", "linear_regression"} <= set(fam.eval_sets(0))
  c.families.linear_regression.num_classes = 0  # Values with classes: refused.
  with pytest.raises(ConfigError, match="mix targets"):
    families.build(c, "mixture")
  with pytest.raises(ConfigError, match="not built on a dataset"):
    families.build(c, "linear_regression@digits")


def test_projection_varies_classes_and_features(monkeypatch):
  """tasks.classes_min / features_min: every class count from k to all, feature subsets
  (counted here under identity tasks, where a dropped feature stays 0)."""
  from research.gpicl import sampler
  monkeypatch.setattr(sampler, "task_from_id",
                      lambda seed, i, dim, c, **kw: sampler.identity_task(dim, c))
  c = _config("projection")
  c.data.seq_len = 32
  c.tasks.update(classes_min=2, features_min=3)
  fam = families.build(c, "projection")
  b = jax.jit(lambda p, k: fam.sample(p, k, 256, 0))(fam.pool, jax.random.key(0))
  x, y = np.asarray(b["x"]), np.asarray(b["y"])
  counts = [len(np.unique(r)) for r in y]
  assert min(counts) == 2 and max(counts) == 10
  kept = (np.abs(x).sum(1) > 0).sum(1)
  assert kept.min() >= 3 and kept.max() == 64 and np.median(kept) < 32  # Log-uniform.
  c.curriculum.update(classes_start=2, steps=10)
  with pytest.raises(ConfigError, match="classes_min"):
    families.build(c, "projection")
