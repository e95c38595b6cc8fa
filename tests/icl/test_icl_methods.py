"""The method registry, open evaluation (rows or a directory, any methods, one call),
retrieval, and prompt tuning as a trainer experiment."""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from experiments.icl import prompt_tuning as pt_cfg
from research import encoders
from research import runs
from research import train
from research.errors import ConfigError
from research.icl import prompt_tuning as pt
from research.icl import retrieval
from research import llm
from research.llm.metaicl import evaluation
from research.llm.metaicl import methods as methods_lib
from research.llm.metaicl import prompts
from research.llm.metaicl import suite
from research.llm.metaicl.methods import METHODS, Method
from research.icl import defaults as icl_defaults
from research.mend import defaults as mend_defaults


def ex(x, y, options=("yes", "no"), task="t"):
  return {"task": task, "input": x, "output": y, "options": list(options)}


# A method defined here, in one place: registering it is all it takes to evaluate it.
@METHODS.register("always_first", needs=(), seed_dependent=False, run="never")
class AlwaysFirst(Method):
  def score(self, task, seed):
    return [np.arange(len(q["options"]), dtype=np.float32) for q in task.queries], {}


@pytest.fixture(scope="module")
def lm():
  return llm.load("tiny")


def rows_task(n=12):
  test = [ex(f"{i} is", "even" if i % 2 == 0 else "odd", ("even", "odd"), "parity")
          for i in range(n)]
  train_rows = [ex(f"{i} is", "even" if i % 2 == 0 else "odd", ("even", "odd"), "parity")
                for i in range(100, 140)]
  return test, train_rows


def test_every_registered_method_declares_its_needs():
  names = METHODS.names()
  assert {"zero_shot", "icl", "icl_nocache", "icl_retrieved", "prompt_tuning",
          "mend_finetune"} <= set(names)
  for entry in METHODS.entries():
    methods_lib.check_entry(entry)
    assert issubclass(entry.obj, Method)
  # Every evaluation config holds every registered method's settings.
  for config in (icl_defaults.get_config(), mend_defaults.eval_config()):
    assert set(methods_lib.sections()) <= set(config)


def test_open_evaluation_on_rows(lm):
  test, train_rows = rows_task()
  res = evaluation.evaluate(lm, test, ("zero_shot", "icl", "always_first"), k=4,
                            seeds=(1, 2, 3), train_rows=train_rows)
  assert res["tasks"] == ["parity"] and res["seeds"] == [1, 2, 3]
  icl, zs, first = (res["methods"][m] for m in ("icl", "zero_shot", "always_first"))
  assert icl["n"] == 3 and np.isfinite(icl["se"]) and 0 <= icl["mean"] <= 1
  assert zs["n"] == 1 and list(zs["per_task_seed"]["parity"]) == ["1"]
  # always_first predicts "even" for all: macro-F1 over {even, odd} = (2/3 + 0) / 2.
  assert first["mean"] == pytest.approx(1 / 3)
  # Demonstrations are drawn from the train rows, a pure function of (task, k, seed).
  task = evaluation.row_tasks(test, train_rows)[0]
  assert task.demonstrations(4, 2) == prompts.sample_demonstrations(train_rows, 4, 2)
  with pytest.raises(ConfigError, match="cannot draw"):
    evaluation.evaluate(lm, test, ("icl",), k=4, seeds=(1,))  # No train rows.


def test_open_evaluation_on_a_directory(lm, tmp_path):
  root = suite.prepare(str(tmp_path), n_test=16, max_train=32)
  tasks = evaluation.directory_tasks(root, ["number_parity", "capital_qa"], n_test=8)
  res = evaluation.evaluate(lm, tasks, ("icl", "zero_shot"), k=4, seeds=(13, 21))
  assert set(res["methods"]["icl"]["per_task"]) == {"number_parity", "capital_qa"}
  assert res["methods"]["icl"]["efficiency"]["queries"] == 2 * 2 * 8
  # MetaICL's k-shot file of the seed: K < 16 takes a seed-ordered subset.
  assert tasks[0].demonstrations(4, 13) == prompts.sample_demonstrations(
      tasks[0].demonstrations(16, 13), 4, 13)


def test_runs_need_label_equals_dir_and_a_trained_method():
  with pytest.raises(ConfigError, match="LABEL=RUN_DIR"):
    methods_lib.parse(["mend_finetune"])
  with pytest.raises(ConfigError, match="more than once"):
    methods_lib.parse(["icl", "icl"])


def test_retrieval_nearest_last_and_no_self():
  pool = [ex("the red apple", "food"), ex("a blue car", "vehicle"),
          ex("a red car", "vehicle"), ex("green apple pie", "food")]
  q = ex("red apple", "food")
  got = retrieval.retrieve(pool, [q, ex("a red car", "vehicle")], 2)
  assert got[0][-1]["input"] == "the red apple"
  assert all(d["input"] != "a red car" for d in got[1])  # its own input is skipped
  e = encoders.make("hashed_bow")(["abc", "abc", "xyz"])
  assert np.allclose(e[0], e[1]) and e[0] @ e[2] < 0.5
  np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
  assert encoders.ENCODERS.get("hashed_bow").kind == "text"


@pytest.mark.slow
def test_prompt_tuning_trains_only_the_soft_prompt(tmp_path):
  config = pt_cfg.get_config("tiny").unlock()
  config.data.suite_dir = str(tmp_path)
  config.train.update(num_steps=40, log_every=40, eval_every=40, checkpoint_every=40)
  config.optimizer.learning_rate = 3e-2
  final = train.train_and_evaluate(config.lock(), str(tmp_path / "pt"))
  run = runs.load(str(tmp_path / "pt"))
  assert set(nn.unbox(run.params)) == {"soft"} and run.step == 40
  lm = run.experiment.objects["lm"]
  soft = np.asarray(nn.unbox(run.params)["soft"])
  assert soft.shape == (config.prompt.num_vectors, lm.config.d_model)
  # The loss on a fixed batch drops from the initial prompt (a random tiny LM barely
  # listens to its prefix, so the drop is small, but a zero or wrong-signed gradient
  # would not give it); the LLM gets no gradient.
  root, rows = pt.training_rows(config)
  encoded = {t: pt.encode_rows(lm.tokenizer, r, config.prompt.max_row_tokens)
             for t, r in rows.items()}
  b = pt.eval_batch(encoded, config.seed, 0, 8, config.prompt.max_row_tokens)
  args = (lm.params, lm.adapter, b["ids"], b["mask"], b["ctx_len"], b["opt_len"])
  init = pt.init_soft_prompt(lm.adapter, lm.params, config.prompt.num_vectors,
                             config.prompt.init, config.seed)
  assert float(pt.soft_prompt_loss(soft, *args)) < float(pt.soft_prompt_loss(init, *args)) - 0.01
  g = jax.grad(pt.soft_prompt_loss, argnums=1)(soft, *args)
  assert all(float(abs(x).max()) == 0.0 for x in jax.tree.leaves(g))
  assert np.isfinite(final["val_loss"]) and final["step"] == 40
