"""Every GPICL sweep and config added for the reproduction runs in its tiny form;
the biased pool of k tasks (the stretch config's curriculum)."""
import os

import jax
import numpy as np
import pytest

from launch import sweep
from research import train
from research.gpicl import sampler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEPS = ["sweep_num_tasks", "sweep_plateau", "sweep_learners", "sweep_state_size"]


def test_bias_pool_of_k_tasks():
  key = jax.random.key(3)
  ids, biased = sampler.sample_task_ids(key, 8192, 2**16, bias_fraction=0.5, bias_num_tasks=16)
  ids, biased = np.asarray(ids), np.asarray(biased)
  assert abs(biased.mean() - 0.5) < 0.03
  assert ids[biased].max() < 16 and len(np.unique(ids[biased])) == 16
  assert ids[~biased].max() > 1000
  # k = 1 is the paper's task-0 bias, with exactly the keys it always used.
  one, b1 = sampler.sample_task_ids(key, 8192, 2**16, bias_fraction=0.5)
  assert np.all(np.asarray(one)[np.asarray(b1)] == 0)
  assert np.array_equal(np.asarray(b1), biased)
  assert np.array_equal(np.asarray(one)[~biased], ids[~biased])


def test_paper_layout_cpu_tiny(workdir):
  from experiments.gpicl import paper_layout_cpu
  cfg = paper_layout_cpu.get_config("tiny")
  assert cfg.model.layout == "paper" and cfg.curriculum.classes_start == 2
  assert cfg.tasks.bias_fraction == 0.0
  final = train.run(cfg, workdir)
  assert "plateau_steps" in final and "plateau_steps_eval" in final
  assert final["phase"] in ("none", "memorisation", "task_identification", "learning_to_learn")
  # The control and the earlier biased-pool variant stay reachable.
  off = paper_layout_cpu.get_config("classes_start=0")
  assert off.curriculum.classes_start == 0 and off.curriculum.steps == 0
  pool = paper_layout_cpu.get_config("classes_start=0,bias_fraction=0.5,bias_num_tasks=16,"
                                     "shared_projection=True")
  assert pool.tasks.bias_num_tasks == 16 and pool.tasks.bias_shared_projection


@pytest.mark.parametrize("stage", ["tiny", "probe", "long", "classes"])
def test_paper_layout_sweep_stages(stage, tmp_path):
  """Each stage of sweep_paper_layout expands into its own directory; tiny runs."""
  path = os.path.join(ROOT, "experiments", "gpicl", "sweep_paper_layout.py")
  runs = sweep.expand(path, stage, str(tmp_path))
  assert runs and all(f"sweep_paper_layout_{stage}" in r.workdir for r in runs)
  assert all(":layout=paper" in r.config or "layout=paper" in r.config for r in runs)
  if stage != "tiny":
    return
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    for run in runs:
      final = train.run(sweep.resolve_config(run), run.workdir)
      assert 0.0 <= final["unseen/acc_last"] <= 1.0, run.name
  finally:
    os.chdir(cwd)


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_runs_tiny_in_process(name, tmp_path):
  path = os.path.join(ROOT, "experiments", "gpicl", f"{name}.py")
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    for run in sweep.expand(path, "tiny", str(tmp_path)):
      final = train.run(sweep.resolve_config(run), run.workdir)
      assert 0.0 <= final["unseen/acc_last"] <= 1.0, run.name
  finally:
    os.chdir(cwd)


def test_shared_projection_changes_only_labels():
  """proj_ids: inputs transformed by task 0's projection, labels by each id's permutation."""
  kp, kx = jax.random.split(jax.random.key(0))
  xp = jax.random.normal(kp, (50, 8))
  yp = jax.numpy.arange(50) % 10
  ids = jax.numpy.array([3, 7])
  x, y = sampler.make_sequences(kx, ids, xp, yp, 5, 10, proj_ids=jax.numpy.array([0, 0]))
  x0, _ = sampler.make_sequences(kx, jax.numpy.array([0, 0]), xp, yp, 5, 10)
  x_own, y_own = sampler.make_sequences(kx, ids, xp, yp, 5, 10)
  np.testing.assert_allclose(x, x0)
  np.testing.assert_array_equal(y, y_own)
  assert not np.allclose(x, x_own)


def test_pca_dim_reduces_every_set():
  """data.pca_dim: each set on its own top components, unit mean variance; checked config."""
  from experiments.gpicl import digits
  from research import config as config_lib
  from research.gpicl import experiment as gpicl
  from research.gpicl import projection
  c = digits.get_config("tiny")
  c.data.update(pca_dim=8, input_dim=8)
  c.eval.datasets = ("wine", "iris")
  pools, _ = projection.base_pools(c)
  for name in c.eval.datasets:
    pools[name] = projection.other_pool(c, name)[0]
  for name, (x, _) in pools.items():
    assert x.shape[1] == 8, name
  x = pools["train"][0]
  np.testing.assert_allclose(x.var(0).mean(), 1.0, rtol=1e-4)
  assert np.all(np.diff(x.var(0)) <= 1e-6)  # Components in order of variance.
  assert np.allclose(pools["iris"][0][:, 4:], 0.0)  # 4 features: padded, not reduced.
  c.data.pca_dim = 16
  with pytest.raises(config_lib.ConfigError, match="pca_dim=16"):
    gpicl.validate(c)
  c.data.update(pca_dim=8, input_dim=196)
  c.eval.datasets = ("tfds:mnist",)
  with pytest.raises(config_lib.ConfigError, match="TFDS"):
    gpicl.validate(c)


# Last in this file: the notebook's tiny runs are the configs the tests above ran, in
# the same worker (`--dist loadfile`), so it reads their programs from the compile cache.
@pytest.mark.slow
def test_gpicl_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  """notebooks/gpicl.ipynb executes end to end in its TINY mode (it makes its own tiny runs)."""
  outputs = run_notebook("gpicl.ipynb", {"TINY": 1, "GPICL_SWEEP_ROOT": tmp_path / "sweeps",
                                         "JAX_PLATFORMS": "cpu"})
  text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  for name in ("sweep_num_tasks", "sweep_learners", "sweep_plateau", "sweep_state_size"):
    assert f"{name}: " in text and " of 0 runs" not in text
  assert "transition into learning_to_learn" in text
  assert not [o for o in outputs if o.get("output_type") == "error"]
