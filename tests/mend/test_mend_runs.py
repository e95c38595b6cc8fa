"""Both stages and the evaluation, end to end in tiny form (every config of
experiments/mend), through `research.train.run` like `launch.main`."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from experiments.mend import evaluate as eval_cfg
from experiments.mend import finetune as ft_cfg
from experiments.mend import pretrain as pt_cfg
from research import errors
from research import experiment
from research import runs
from research import sharding
from research import train
from research.mend import experiment as mend_experiment


def _with(config, **kw):
  c = config
  with c.unlocked():
    for k, v in kw.items():
      node = c
      *path, last = k.split(".")
      for p in path:
        node = node[p]
      node[last] = v
  return c


@pytest.mark.slow
def test_pretrain_finetune_evaluate_tiny(tmp_path):
  suite = str(tmp_path)
  pt = str(tmp_path / "pt")
  final = train.run(pt_cfg.get_config("tiny"), pt)
  assert np.isfinite(final["val_kl"]) and final["val_kl"] >= 0

  # Stage 2 from stage 1: the initial params are the restored stage-1 params.
  ft = str(tmp_path / "ft")
  cfg = _with(ft_cfg.get_config("tiny"), init_from=pt, **{"data.suite_dir": suite})
  mesh = sharding.make_mesh(cfg.mesh)
  exp = train.build_experiment(cfg, mesh)
  restored = mend_experiment.restore_params(pt)
  init = jax.tree.map(np.asarray, nn.unbox(exp.init_params(jax.random.key(9))))
  jax.tree.map(np.testing.assert_array_equal, init, restored)
  # The trainable params are the distiller's only (the LLM never reaches the optimizer).
  assert set(init) <= {"lm", "placeholders", "proj", "out_gain"}
  assert init["lm"]["embed"].shape[1] == cfg.distiller.d_model
  final = train.run(cfg, ft)
  assert np.isfinite(final["val_ce"]) and np.isfinite(final["val_zero_shot_ce"])
  # A finished run is an object: its distiller and parameters come back.
  run = runs.load(ft)
  assert run.step == cfg.train.num_steps and run.experiment.objects["distiller"].num_vectors == 4

  # The compact record of a run the README's study tables come from.
  from research.mend import report
  rec = report.describe(ft)
  assert rec["task"] == "mend_finetune" and rec["steps"] == cfg.train.num_steps
  assert rec["eval"] and "val_ce" in rec["eval"][-1] and rec["partition"] == "class_to_class"

  # Stage 1 continued from an earlier stage-1 run starts from its distiller.
  cont = train.build_experiment(_with(pt_cfg.get_config("tiny"), init_from=pt), mesh)
  init = jax.tree.map(np.asarray, nn.unbox(cont.init_params(jax.random.key(9))))
  jax.tree.map(np.testing.assert_array_equal, init, restored)

  # A distiller of another shape than the init_from run's is bad input, named as such.
  assert cfg.distiller.init == "random"  # The tiny configs' distiller.
  for bad in ({"distiller.d_model": 24}, {"distiller.init": "llm"}):
    with pytest.raises(errors.ConfigError, match="config.init_from"):
      train.build_experiment(_with(pt_cfg.get_config("tiny"), init_from=pt, **bad), mesh)

  # Another l than the init_from run's: its distiller LM restored, fresh placeholders.
  more = train.build_experiment(_with(pt_cfg.get_config("tiny"), init_from=pt,
                                      **{"distiller.num_vectors": 7}), mesh)
  p7 = jax.tree.map(np.asarray, nn.unbox(more.init_params(jax.random.key(9))))
  assert p7["placeholders"].shape[0] == 7
  jax.tree.map(np.testing.assert_array_equal, p7["lm"], restored["lm"])

  # The HyperTuning-style ablation (CE only) and MEND without stage 1.
  ht = str(tmp_path / "ht")
  train.run(_with(ft_cfg.get_config("tiny,kl=0"), **{"data.suite_dir": suite}), ht)

  ev = str(tmp_path / "eval")
  methods = ("zero_shot", "icl", "prompt_tuning", f"mend={ft}", f"hypertuning={ht}",
             f"mend_step2={ft}@2")
  cfg = _with(eval_cfg.get_config("tiny"), methods=methods, **{"data.suite_dir": suite})
  res = train.run(cfg, ev)
  for m in ("zero_shot", "icl", "prompt_tuning", "mend", "hypertuning"):
    assert 0.0 <= res["methods"][m]["mean"] <= 1.0
  assert res["methods"]["mend"]["n"] == 2 and res["methods"]["mend"]["method"] == "mend_finetune"
  assert res["mend_methods"] == ["mend", "hypertuning", "mend_step2"]
  # RUN_DIR@STEP evaluates that checkpoint (a learning curve), the newest by default.
  assert res["methods"]["mend_step2"]["efficiency"] and res["methods"]["mend_step2"]["step"] == 2
  assert res["methods"]["mend"]["step"] == ft_cfg.get_config("tiny").train.num_steps
  assert res["trained_on"] == {m: "class_to_class" for m in ("prompt_tuning", "mend",
                                                              "hypertuning", "mend_step2")}
  e = res["methods"]["mend"]["efficiency"]
  assert e["total_flops_per_query"] > e["total_flops_reuse"] > e["llm_flops_reuse"] > 0
  assert e["compression"] > 1.0
  assert res["icl_per_query"]["flops"] > res["methods"]["icl"]["efficiency"]["flops_per_query"]
  with open(os.path.join(ev, "mend_results.md")) as f:
    text = f.read()
    assert "S_D reused per task" in text and "n (demonstration seeds)" in text
  with open(os.path.join(ev, "mend_results.json")) as f:
    assert json.load(f)["methods"]["mend"]["workdir"] == ft


def test_configs_build(tmp_path):
  """Every config's variants parse and lock; bad values fail with the key's name."""
  for mod, args in ((pt_cfg, ("", "tiny", "distiller=random", "dropout=0.1", "paper")),
                    (ft_cfg, ("", "tiny", "kl=0", "partition=qa_to_qa", "fast=False",
                              "tasks=100,dropout=0.1,vectors=32,temperature=2", "paper",
                              "paper,llm=/w/gpt2-large.gguf,tasks=500")),
                    (eval_cfg, ("", "tiny"))):
    for a in args:
      c = mod.get_config(a)
      assert c.task.startswith("mend_")
      # Every key the config has is declared by its task's defaults (no extra keys).
      defaults = experiment.EXPERIMENTS.get(c.task).defaults()
      assert set(c.to_dict()) == set(defaults.to_dict())
      if c.task == "mend_finetune" and "paper" in a:  # The paper's budget, one command away.
        assert c.train.num_steps == 30000 and c.optimizer.learning_rate == 1e-5
        assert c.dropout.teacher == 0.1 and c.teacher.cache == "none"
        assert c.distiller.num_layers == 12 and c.distiller.num_vectors == 100
      if "llm=" in a:
        assert c.model.source == "gguf" and c.model.path.endswith("gpt2-large.gguf")
      if "tasks=100" in a:
        assert (c.data.partition, c.data.val_partition) == ("gen100_to_class", "gen100_to_val")
        assert c.dropout.student == 0.1 and c.dropout.teacher == 0.0  # The teacher is cached.
  # `:fast=False` is the in-step sampling of the README's first runs.
  slow = ft_cfg.get_config("fast=False")
  assert slow.data.episodes == 0 and slow.teacher.cache == "none"
  cfg = _with(ft_cfg.get_config("tiny"), **{"distiller.init": "bogus"})
  with pytest.raises(errors.ConfigError, match="distiller.init"):
    mend_experiment.validate(cfg)
  with pytest.raises(errors.ConfigError, match="missing"):
    mend_experiment.restore_params(str(tmp_path / "missing"))
  with pytest.raises(errors.ConfigError, match="LABEL=RUN_DIR"):
    train.run(_with(eval_cfg.get_config("tiny"), methods=("mend_finetune",)),
              str(tmp_path / "e"))


# Last in this file: the notebook's tiny runs are the configs the tests above ran, in
# the same worker (`--dist loadfile`), so it reads their programs from the compile cache.
@pytest.mark.slow
def test_mend_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  """notebooks/mend.ipynb executes in tiny mode: both stages, hypertuning and the evaluation
  as fresh runs, then every figure and table from them."""
  outputs = run_notebook("mend.ipynb", {"MEND_NOTEBOOK_TINY": 1, "MEND_RUN_ROOT": tmp_path / "runs"},
                         timeout=900)
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for o in outputs)
  assert any("compression" in o.get("text", "") for o in outputs)
  assert any("n (demonstration seeds)" in o.get("data", {}).get("text/markdown", "")
             for o in outputs)
