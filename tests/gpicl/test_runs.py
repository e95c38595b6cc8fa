"""Finished GPICL runs as objects (research.runs) and the open evaluation on any arrays."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.gpicl import digits
from research import errors
from research import runs
from research import train
from research.data import offline
from research.gpicl import evaluation
from research.gpicl import experiment as gpicl
from research.gpicl import projection


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  w = str(tmp_path_factory.mktemp("run") / "w")
  final = train.run(digits.get_config("tiny"), w)
  return w, final


def test_load_gives_config_params_and_experiment_without_evaluation_sets(trained, monkeypatch):
  w, final = trained
  monkeypatch.setattr(projection, "other_pool", lambda *a: (_ for _ in ()).throw(
      AssertionError("runs.load must not build evaluation-only datasets")))
  run = runs.load(w)
  assert run.config.task == "gpicl" and run.config.data.seq_len == 12 and run.step == 6
  assert run.final == final
  mngr = ocp.CheckpointManager(f"{w}/checkpoints")
  saved = mngr.restore(6, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(saved["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [r["step"] for r in run.metrics("train")] == [2, 4, 6]


def test_icl_curve_on_arrays_of_your_own(trained):
  run = runs.load(trained[0])
  iris = offline.load("iris")
  x, y = np.concatenate([iris.x_train, iris.x_test]), np.concatenate([iris.y_train, iris.y_test])
  out = evaluation.icl_curve(run, x, y, tasks="unseen", num_sequences=32, seed=3)
  assert out["acc"].shape == out["se"].shape == (12,) and out["n"] == 32
  assert np.all((0 <= out["acc"]) & (out["acc"] <= 1)) and np.all(out["se"] >= 0)
  assert out["chance"] == pytest.approx(1 / 3)
  again = evaluation.icl_curve(run, x, y, tasks="unseen", num_sequences=32, seed=3)
  np.testing.assert_array_equal(again["acc"], out["acc"])  # Same seed: same sequences.
  # The identity task on the run's own test split, at the run's length or shorter.
  base = offline.load("digits")
  short = evaluation.icl_curve(run, base.x_test, base.y_test, tasks="identity",
                               num_sequences=8, seq_len=6)
  assert short["acc"].shape == (6,)


def test_icl_curve_refuses_what_the_learner_cannot_read(trained):
  run = runs.load(trained[0])
  x = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
  with pytest.raises(errors.ConfigError, match="positional table"):
    evaluation.icl_curve(run, x, np.arange(50) % 3, seq_len=13)
  with pytest.raises(errors.ConfigError, match="classes"):
    evaluation.icl_curve(run, x, np.arange(50) % 12)
  with pytest.raises(errors.ConfigError, match="features"):
    evaluation.icl_curve(run, np.zeros((50, 65), np.float32), np.arange(50) % 3)


def test_replicas_of_a_vmapped_seeds_run(tmp_path):
  c = digits.get_config("tiny")
  c.train.num_seeds = 2
  w = str(tmp_path / "w")
  final = train.run(c, w)
  run = runs.load(w)
  r0, r1 = run.replica(0), run.replica(1)
  assert r0.final == final["per_seed"][0] and r1.final == final["per_seed"][1]
  assert [r["step"] for r in r1.metrics("eval")] == [3, 6]
  a = jax.tree.leaves(r0.params)[0]
  b = jax.tree.leaves(r1.params)[0]
  assert not np.array_equal(np.asarray(a), np.asarray(b))
