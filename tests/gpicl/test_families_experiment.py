"""The GPICL experiment on every task family: the paper configs run end to end in their
tiny form (targets, losses, the final table with classical learners and oracles);
regression through every registered learner; the held-out gap; the sweeps expand."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch import sweep
from models.registry import LEARNERS
from research import runs
from research import train
from research.gpicl import learners

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_garg_tiny_reports_classical_and_shifts(workdir):
  from experiments.garg import functions
  cfg = functions.get_config("tiny")
  final = train.run(cfg, workdir)
  one = final["per_seed"][0]
  for name in ("linear_regression", "linear_regression/skewed", "linear_regression/scaled"):
    assert 0 <= one[f"{name}/mse_last"] and len(one[f"{name}/mse_curve"]) == cfg.data.seq_len
    assert f"{name}/least_squares/mse_curve" in one and f"{name}/bayes_ridge/delta" in one
  assert "logistic" not in str([k for k in one if "/logistic/" in k])  # Classes only: skipped.
  assert os.path.exists(os.path.join(workdir, "seed_0", "icl_curves.png"))
  run = runs.load(workdir).replica(1)  # The runs API rebuilds the family's evaluation.
  sets, seqs, held_out = run.experiment.objects["eval_data"]()
  assert set(seqs) == set(sets) and held_out == ()


def test_garg_with_maml_as_the_learner_and_sgd_on_the_curve(workdir):
  """The learned-algorithm baselines on a family's curves: MAML trained as the learner
  (`:learner=maml`), GPICL's online-Adam SGD fitted on the same sequences."""
  from experiments.garg import functions
  cfg = functions.get_config("tiny,learner=maml")
  assert "sgd" in functions.CLASSICAL
  with cfg.unlocked():
    cfg.eval.classical = ("least_squares", "sgd")
  one = train.run(cfg, workdir)["per_seed"][0]
  assert cfg.model.name == "maml"
  ls, sgd = one["linear_regression/least_squares/mse_last"], one["linear_regression/sgd/mse_last"]
  assert np.isfinite(one["linear_regression/mse_last"]) and 0 <= ls < sgd


def test_raventos_tiny_has_pool_oracles(workdir):
  from experiments.raventos import pool
  cfg = pool.get_config("tiny,num_tasks=4")
  one = train.run(cfg, workdir)["per_seed"][0]
  for name in ("linear_regression", "linear_regression/pool"):
    assert {f"{name}/bayes_pool/mse_last", f"{name}/bayes_ridge/mse_last"} <= set(one)


def test_chan_tiny_has_probes(workdir):
  from experiments.chan import bursty
  # One label per class (labels=0), so no context class can share the query's label.
  one = train.run(bursty.get_config("tiny,labels=0,zipf=1.0"), workdir)["per_seed"][0]
  for name in ("bursty/in_context", "bursty/holdout", "bursty/in_weights",
               "bursty/in_weights_zipf"):
    assert 0 <= one[f"{name}/acc_last"] <= 1 and f"{name}/knn1/acc_last" in one
  assert one["bursty/in_weights/knn1/acc_last"] == 0.0  # The context cannot answer it.


def test_general_default_held_out_gap(workdir):
  """make train's config: the mixture trains; held-out datasets and families get the gap
  to the best classical learner."""
  from experiments.gpicl import general
  cfg = general.get_config("tiny")
  final = train.run(cfg, workdir)
  assert {"seen", "unseen", "linear_regression", "clusters"} <= {
      k.split("/")[0] for k in final if k.endswith("/acc_last")}
  for name in ("wine", "decision_tree", "relu_net"):
    assert final[f"{name}/best_classical"] in cfg.eval.classical
    np.testing.assert_allclose(final[f"{name}/gap_to_best"],
                               final[f"{name}/acc_last"] - final[f"{name}/best_classical_last"],
                               atol=1e-6)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_every_learner_takes_real_targets(name):
  """Real-valued targets through every learner: one output, causal, differentiable."""
  fields = learners.config_defaults(name)
  cfg = learners.learner_config(name, "tiny")
  model = learners.make_learner(cfg, num_classes=1, seq_len=8, input_dim=3)
  x = jax.random.normal(jax.random.key(0), (2, 8, 3))
  y = jax.random.normal(jax.random.key(1), (2, 8))
  params = model.init(jax.random.key(2), x, y)
  out = model.apply(params, x, y)
  assert out.shape == (2, 8, 1)
  y2 = y.at[:, 5:].add(3.0)
  np.testing.assert_allclose(model.apply(params, x, y2)[:, :6], out[:, :6], atol=1e-5)
  grads = jax.grad(lambda p: jnp.mean((model.apply(p, x, y)[..., 0] - y) ** 2))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  del fields


def test_bad_family_configs_fail_in_one_line():
  from experiments.gpicl import digits
  from research.errors import ConfigError
  from research.gpicl import experiment
  from research import sharding
  cfg = digits.get_config("tiny")
  with cfg.unlocked():
    cfg.data.family = "linear_regression"
  with pytest.raises(ConfigError, match="num_classes=1"):
    experiment.build(cfg, sharding.make_mesh(cfg.mesh))
  cfg = digits.get_config("tiny")
  with cfg.unlocked():
    cfg.data.family = "nope"
  with pytest.raises(ConfigError, match="no task family"):
    experiment.build(cfg, sharding.make_mesh(cfg.mesh))


@pytest.mark.parametrize("path", ["experiments/raventos/sweep_pool.py",
                                  "experiments/chan/sweep_bursty.py"])
def test_sweeps_expand(path, tmp_path):
  full = sweep.expand(os.path.join(ROOT, path), None, str(tmp_path))
  tiny = sweep.expand(os.path.join(ROOT, path), "tiny", str(tmp_path))
  assert len(full) >= 6 and len(tiny) == 2 and len({r.workdir for r in full}) == len(full)


# Last in this file: the notebook's tiny runs are the configs the tests above ran, in
# the same worker (`--dist loadfile`), so it reads their programs from the compile cache.
@pytest.mark.slow
def test_families_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  """notebooks/families.ipynb executes end to end in its TINY mode: it makes its own tiny
  runs of the Garg, Raventós and Chan configs (one per sweep) and shows each section."""
  outputs = run_notebook("families.ipynb", {"FAMILIES_TINY": 1, "FAMILIES_ROOT": tmp_path,
                                            "JAX_PLATFORMS": "cpu"})
  assert not [o for o in outputs if o.get("output_type") == "error"]
  text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  figures = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(figures) == 3, "one figure per paper"
  # The tiny runs were made under the scratch root, never runs/, and every section read them.
  assert f"made tiny run {tmp_path}/garg/linear_d5" in text
  assert "no finished run" not in text and "missing, made by" not in text
  # 1. Garg: the model (over seeds) next to least squares (over sequences), shifted sets too.
  for name in ("linear_regression ", "linear_regression/skewed", "linear_regression/scaled"):
    assert name in text
  assert "least_squares" in text and "2 seeds" in text and "8 sequences" in text
  assert f"made tiny run {tmp_path}/garg/linear_d5_maml" in text and "  MAML " in text
  # 2. Raventós: Δ to dMMSE and to ridge on pool and new tasks, with se and n.
  assert "sweep_pool_tiny: 1 of 1 runs finished" in text
  assert "pool tasks" in text and "new tasks" in text and "Δ to dMMSE" in text
  assert "MAML trained on fresh tasks" in text  # (tiny runs fit no SGD learner)
  # 3. Chan: the probes per setting.
  assert "sweep_bursty_tiny: 1 of 1 runs finished" in text
  assert "in_context acc" in text and "in_weights acc" in text and "in_weights_zipf acc" in text
  assert f"made tiny run {tmp_path}/chan/maml_p0.9" in text and "← MAML" in text
  # Every number carries its standard error and n.
  assert text.count("(n=2 seeds)") >= 10 and "(n=8 sequences)" in text
