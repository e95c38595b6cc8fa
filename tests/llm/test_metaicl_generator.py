"""The task generator: hundreds of distinct classification tasks from offline sources,
none leaking a meta-test task, template or label set of any partition of the suite."""
import itertools
import json
import os

import numpy as np
import pytest

from research.data import manifest
from research.llm.metaicl import data as icl_data
from research.llm.metaicl import generator
from research.llm.metaicl import suite


@pytest.fixture(scope="module")
def ref():
  return generator.suite_reference(0)


@pytest.fixture(scope="module")
def generated(ref):
  return generator.generate(0, 600, ref)


def test_hundreds_of_distinct_tasks_and_no_leak(ref, generated):
  train, val = generated
  assert len(train) == 600 and len({t.concept for t in train}) >= 250
  assert len({t.family for t in train}) == 9 and len(val) >= 10
  # The leak test: every meta-test task of every partition of the suite.
  assert set(ref.tasks) == {t for p in suite.partitions().values() for t in p.test}
  assert generator.leaks(train + val, ref) == []
  assert generator.duplicates(train + val) == []
  for t in train + val:  # Well-formed classification tasks.
    assert len(t.options) >= 2 and {r[1] for r in t.rows} == set(t.options)
    assert len({r[0] for r in t.rows}) == len(t.rows) >= generator.MIN_ROWS


def test_validation_is_held_out_from_training(generated):
  train, val = generated
  assert not {t.concept for t in val} & {t.concept for t in train}
  held = set(generator.VAL_CATEGORIES)
  words = {w for c in held for w in generator.CATEGORIES[c]}
  train_words = {w for t in train if t.family == "semantic" for r in t.rows
                 for w in generator._words(r[0])}
  assert not words & train_words and not held & {o for t in train for o in t.options}


def test_prefixes_mix_every_family(generated):
  train, _ = generated
  assert len({t.family for t in train[:10]}) >= 8
  assert len({t.family for t in train[:100]}) == 9


def test_the_guard_catches_leaks(ref):
  rows = lambda xs, y="yes": [(x, y, ["no", "yes"]) for x in xs]
  bad = [
      generator.Task("animal_class", "c0", "f", "{x}", ["no", "yes"], rows(["a b"] * 50)),
      generator.Task("g1", "sentiment", "f", "{x}", ["no", "yes"],
                     rows([f"Word: w{i}" for i in range(50)])),
      generator.Task("g2", "c2", "f", "{x}", ["negative", "pos"],
                     rows([f"Word: w{i}" for i in range(50)], "pos")),
      generator.Task("g3", "c3", "f", "{x}", ["no", "yes"],
                     rows(["".join(w) for w in itertools.product("bcdf", "aeiou", "lmnr")][:50])),
      generator.Task("g4", "c4", "f", "{x}", ["no", "yes"],
                     rows([f"I found the thing number {i}" for i in range(50)])),
      generator.Task("g5", "c5", "f", "{x}", ["no", "yes"],
                     rows([f"Word: w{i}" for i in range(49)] + ["Word: swan"])),
  ]
  found = generator.leaks(bad, ref)
  for needle in ("animal_class: same name", "g1: concept sentiment", "g2: labels ['negative']",
                 "g3: no template", "g4: template n-grams", "g5: input 'Word: swan' holds"):
    assert any(needle in p for p in found), (needle, found)


def test_written_directory(tmp_path):
  out = str(tmp_path / "gen")
  summary = generator.write(out, num_tasks=40)
  assert summary["training_tasks"] == 40
  manifest.verify(out, "")
  parts = {n: icl_data.load_partition(out, n) for n in icl_data.list_partitions(out)}
  # The suite's own partitions are there, unchanged.
  for name, p in suite.partitions().items():
    assert parts[name].train == p.train and parts[name].test == p.test
  assert parts["gen10_to_class"].train == parts["gen40_to_class"].train[:10]
  assert parts["gen30_to_val"].train == parts["gen30_to_class"].train
  assert parts["gen10_to_class"].test == suite.partitions()["class_to_class"].test
  val = parts["gen10_to_val"].test
  assert not set(val) & set(parts["gen40_to_class"].train)
  rows = icl_data.load_meta_train(out, parts["gen40_to_class"].train[0])
  assert len(rows) >= generator.MIN_ROWS
  test = icl_data.load_task(out, val[0], "test")
  assert len(test) == generator.VAL_N_TEST and icl_data.load_task_config(
      out, val[0]).is_classification
  assert len(icl_data.load_demonstrations(out, val[0], 16, 13)) == 16
  # The suite's files are byte-identical to the suite's own writer's.
  plain = str(tmp_path / "plain")
  suite.write_suite(plain)
  for task in suite.TASK_BY_NAME:
    path = icl_data.task_file(plain, task, 16, 13, "train")
    with open(path, "rb") as a, open(path.replace(plain, out), "rb") as b:
      assert a.read() == b.read()
  # Deterministic: the same files again.
  again = str(tmp_path / "again")
  generator.write(again, num_tasks=40)
  with open(os.path.join(out, manifest.NAME)) as a, open(os.path.join(again, manifest.NAME)) as b:
    assert json.load(a) == json.load(b)
