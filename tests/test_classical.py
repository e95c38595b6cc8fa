"""Classical learners: causal (a prediction never reads its own or a later target), and
equal to scikit-learn's fits on every prefix (parity tests)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import linear_model, neighbors

from research import classical

L, D, C = 14, 5, 3


def _data(values: bool, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((L, D)).astype(np.float32)
  if values:
    return x, (x @ rng.standard_normal(D) + 0.1 * rng.standard_normal(L)).astype(np.float32)
  w = rng.standard_normal((D, C))
  return x, np.argmax(x @ w + 0.5 * rng.standard_normal((L, C)), -1).astype(np.int32)


def _run(name, x, y, num_classes=C):
  fn = classical.CLASSICAL.get(name).obj
  return np.asarray(jax.jit(lambda x, y: fn(x, y, num_classes=num_classes))(x, y))


CASES = [(n, t) for n in classical.CLASSICAL.names()
         for t in ("classes", "values") if classical.supports(n, t)]


@pytest.mark.parametrize("name,target", CASES)
def test_every_classical_learner_is_causal(name, target):
  x, y = _data(target == "values")
  k = 1 if target == "values" else C
  base = _run(name, x, y, k)
  assert base.shape == ((L,) if target == "values" else (L, C))
  t = 6
  x2, y2 = x.copy(), y.copy()
  x2[t + 1:] += 3.0
  y2[t:] = y2[t:] + 1.5 if target == "values" else (y2[t:] + 1) % C
  changed = _run(name, x2, y2, k)
  np.testing.assert_allclose(changed[: t + 1], base[: t + 1], rtol=1e-5, atol=1e-5)


def _prefixes(y, values):
  """Positions t where a fit on the first t examples is defined (≥ 2 classes if labels)."""
  return [t for t in range(2, L) if values or len(np.unique(y[:t])) > 1]


def test_knn_matches_scikit_learn():
  for seed in range(3):
    for values in (False, True):
      x, y = _data(values, seed)
      for name, k_of in (("knn1", lambda t: 1), ("knn_sqrt", lambda t: int(np.sqrt(t)))):
        ours = _run(name, x, y, 1 if values else C)
        for t in range(1, L):
          k = k_of(t)
          model = (neighbors.KNeighborsRegressor if values else neighbors.KNeighborsClassifier)(k)
          model.fit(x[:t], y[:t])
          ref = model.predict(x[t:t + 1])[0]
          if values:
            np.testing.assert_allclose(ours[t], ref, rtol=1e-4, atol=1e-4)
            continue
          near = y[:t][np.argsort(((x[:t] - x[t]) ** 2).sum(1), kind="stable")[:k]]
          votes = np.bincount(near, minlength=C)
          if (votes == votes.max()).sum() == 1:  # A unique majority: the same label.
            assert ours[t].argmax() == ref
          else:  # A tie: ours goes to the nearest neighbour's label among the tied.
            assert ours[t].argmax() == near[0] or votes[near[0]] < votes.max()


def test_ridge_and_least_squares_match_scikit_learn():
  for seed in range(3):
    x, y = _data(True, seed)
    ridge, ls = _run("ridge", x, y, 1), _run("least_squares", x, y, 1)
    for t in range(2, L):
      ref = linear_model.Ridge(alpha=1.0).fit(x[:t], y[:t]).predict(x[t:t + 1])[0]
      np.testing.assert_allclose(ridge[t], ref, rtol=1e-4, atol=1e-4)
      w = np.linalg.pinv(x[:t]) @ y[:t]  # Minimum-norm least squares.
      np.testing.assert_allclose(ls[t], x[t] @ w, rtol=1e-3, atol=1e-3)
    xc, yc = _data(False, seed)
    scores = _run("ridge", xc, yc)
    for t in _prefixes(yc, False):
      ref = linear_model.RidgeClassifier(alpha=1.0).fit(xc[:t], yc[:t])
      present = np.unique(yc[:t])
      if len(present) == C:
        np.testing.assert_allclose(scores[t], ref.decision_function(xc[t:t + 1])[0], rtol=1e-4,
                                   atol=1e-4)


def test_lasso_matches_scikit_learn():
  from research.classical import lasso
  for seed in range(2):
    x, y = _data(True, seed)
    ours = _run("lasso", x, y, 1)
    for t in range(2, L):
      ref = linear_model.Lasso(alpha=lasso.ALPHA, fit_intercept=False, max_iter=100000,
                               tol=1e-10).fit(x[:t], y[:t])
      np.testing.assert_allclose(ours[t], ref.predict(x[t:t + 1])[0], rtol=2e-3, atol=2e-3)


def test_logistic_matches_scikit_learn():
  agree, total = 0, 0
  for seed in range(4):
    x, y = _data(False, seed)
    ours = _run("logistic", x, y)
    for t in _prefixes(y, False):
      ref = linear_model.LogisticRegression(C=1.0, max_iter=10000, tol=1e-10).fit(x[:t], y[:t])
      present = list(ref.classes_)
      assert set(np.flatnonzero(ours[t] > -1e8)) == set(present)  # Only seen classes scored.
      np.testing.assert_allclose(ours[t][present], ref.decision_function(x[t:t + 1])[0]
                                 if len(present) > 2 else ours[t][present], atol=0.05)
      agree += int(ours[t].argmax() == ref.predict(x[t:t + 1])[0])
      total += 1
  assert agree == total


def test_score_and_predict_over_a_batch():
  x, y = _data(False)
  xs, ys = jnp.stack([x, x]), jnp.stack([y, y])
  fn = classical.CLASSICAL.get("knn1").obj
  pred = classical.predict(fn, xs, ys, num_classes=C)
  acc = np.asarray(classical.score(pred, ys))
  assert acc.shape == (2, L) and np.array_equal(acc[0], acc[1])
  xv, yv = _data(True)
  se = np.asarray(classical.score(jnp.zeros((1, L)), jnp.asarray(yv)[None], 2.0))
  np.testing.assert_allclose(se, yv[None] ** 2 / 2.0, rtol=1e-6)
