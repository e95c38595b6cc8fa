"""The offline suite: valid MetaICL files, disjoint partitions, deterministic output."""
import filecmp
import os

import pytest

from research.llm.metaicl import data as icl_data
from research.llm.metaicl import suite


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("suite"))
  suite.write_suite(out, n_test=32, max_train=64)
  return out


def test_metaicl_suite_every_file_is_valid_metaicl(root):
  tasks = icl_data.list_tasks(root)
  assert sorted(tasks) == sorted(t.name for t in suite.TASKS)
  types = {t.task_type for t in suite.TASKS}
  assert types == {"classification", "multi-choice"}
  for task in tasks:
    cfg = icl_data.load_task_config(root, task)
    test = icl_data.load_task(root, task, "test")  # validates every row
    assert len(test) >= 16 and all(r["task"] == task for r in test)
    if cfg.is_classification:
      assert all(tuple(r["options"]) == cfg.options for r in test)
    train = icl_data.load_meta_train(root, task)
    train_pairs = {(r["input"], r["output"]) for r in train}
    assert not train_pairs & {(r["input"], r["output"]) for r in test}, task
    for seed in icl_data.SEEDS:
      demos = icl_data.load_demonstrations(root, task, 16, seed)
      assert all(d in train for d in demos)


def test_metaicl_suite_partitions_disjoint_and_complete(root):
  names = icl_data.list_partitions(root)
  assert {"class_to_class", "non_class_to_class", "qa_to_qa", "non_qa_to_qa",
          "non_nli_to_nli", "non_paraphrase_to_paraphrase"} <= set(names)
  tasks = set(icl_data.list_tasks(root))
  for name in names:
    p = icl_data.load_partition(root, name)
    assert p.train and p.test
    assert not set(p.train) & set(p.test), name
    assert set(p.train) | set(p.test) <= tasks
  cls = {t.name for t in suite.TASKS if t.task_type == "classification"}
  c2c = icl_data.load_partition(root, "class_to_class")
  assert set(c2c.train) | set(c2c.test) <= cls
  n2c = icl_data.load_partition(root, "non_class_to_class")
  assert not set(n2c.train) & cls


def test_metaicl_suite_deterministic_per_seed(root, tmp_path):
  again = str(tmp_path / "again")
  other = str(tmp_path / "other")
  tasks = ("wine_cultivar", "arithmetic_qa")
  suite.write_suite(again, n_test=32, max_train=64, tasks=tasks)
  suite.write_suite(other, n_test=32, max_train=64, tasks=tasks, seed=1)
  for t in tasks:
    for name in os.listdir(os.path.join(again, "data", t)):
      assert filecmp.cmp(os.path.join(root, "data", t, name),
                         os.path.join(again, "data", t, name), shallow=False)
  a = icl_data.load_task(again, "arithmetic_qa", "test")
  b = icl_data.load_task(other, "arithmetic_qa", "test")
  assert a != b  # Another suite seed gives other rows.


def test_metaicl_suite_cli(tmp_path, capsys):
  suite.main(["--out", str(tmp_path / "s"), "--n_test", "16", "--max_train", "32"])
  assert "wrote 26 tasks" in capsys.readouterr().out
