"""MetaICL format: rows, k-shot files, partitions, directory loading, TFDS builder."""
import json
import os

import pytest

from research.llm.metaicl import data as icl_data
from research.llm.metaicl import suite

TASKS = ("iris_species", "capital_qa", "nli_numbers")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("metaicl"))
  suite.write_suite(out, n_test=16, max_train=40, tasks=TASKS)
  return out


def test_metaicl_validate_rejects_gold_outside_options():
  row = {"task": "t", "input": "x", "output": "c", "options": ["a", "b"]}
  with pytest.raises(icl_data.MetaICLFormatError, match="not among options"):
    icl_data.validate_example(row)
  with pytest.raises(icl_data.MetaICLFormatError, match="options"):
    icl_data.validate_example({"task": "t", "input": "x", "output": "a", "options": ["a"]})


def test_metaicl_jsonl_roundtrip_and_bad_line(tmp_path):
  rows = [{"task": "t", "input": "héllo", "output": "a", "options": ["a", "b"]}]
  path = str(tmp_path / "t.jsonl")
  icl_data.write_jsonl(path, rows)
  assert icl_data.read_jsonl(path) == rows
  with open(path, "a") as f:
    f.write("{not json\n")
  with pytest.raises(icl_data.MetaICLFormatError, match=":2"):
    icl_data.read_jsonl(path)


def test_metaicl_missing_directory_names_the_prepare_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="research.llm.metaicl.suite --out"):
    icl_data.load_task(str(tmp_path / "nope"), "iris_species", "test")
  with pytest.raises(FileNotFoundError, match="research.llm.metaicl.suite --out"):
    icl_data.list_tasks(str(tmp_path / "nope"))


def test_metaicl_missing_file_and_partition(root):
  with pytest.raises(FileNotFoundError, match="iris_species_16_13_dev|research.llm.metaicl.suite"):
    icl_data.load_task(root, "no_such_task", "test")
  with pytest.raises(FileNotFoundError, match="have:"):
    icl_data.load_partition(root, "no_such_partition")


def test_metaicl_metaicl_file_names(root):
  # MetaICL's utils/data.py: data/{task}/{task}_{k}_{seed}_{split}.jsonl, test from seed 100.
  for seed in icl_data.SEEDS:
    assert os.path.exists(os.path.join(root, "data", "iris_species",
                                        f"iris_species_16_{seed}_train.jsonl"))
  assert os.path.exists(os.path.join(root, "data", "iris_species", "iris_species_16_100_test.jsonl"))
  assert os.path.exists(os.path.join(root, "data", "iris_species",
                                     "iris_species_16384_100_train.jsonl"))
  assert len(icl_data.load_demonstrations(root, "iris_species", 16, 42)) == 16
  assert icl_data.load_task(root, "iris_species", "test", seed=13) == \
      icl_data.load_task(root, "iris_species", "test")


def test_metaicl_partition_overlap_rejected(tmp_path):
  with pytest.raises(icl_data.MetaICLFormatError, match="share"):
    icl_data.Partition("p", ("a", "b"), ("b",))
  os.makedirs(tmp_path / "config")
  with open(tmp_path / "config" / "p.json", "w") as f:
    json.dump({"train": ["a"], "test": ["a"]}, f)
  with pytest.raises(icl_data.MetaICLFormatError):
    icl_data.load_partition(str(tmp_path), "p")


def test_metaicl_load_directory(root):
  d = icl_data.load_directory(root)
  assert sorted(d) == sorted(TASKS)
  assert d["iris_species"]["config"].is_classification
  assert not d["capital_qa"]["config"].is_classification
  assert set(d["nli_numbers"]["train"]) == set(icl_data.SEEDS)
  assert all(len(v) == 16 for v in d["nli_numbers"]["train"].values())


def test_metaicl_task_config_inferred_without_config_file(root, tmp_path):
  import shutil
  other = str(tmp_path / "copy")
  shutil.copytree(root, other)
  os.remove(os.path.join(other, "MANIFEST.json"))  # A MetaICL dir prepared elsewhere has none.
  os.remove(os.path.join(other, "config", "tasks", "iris_species.json"))
  os.remove(os.path.join(other, "config", "tasks", "capital_qa.json"))
  assert icl_data.load_task_config(other, "iris_species").is_classification
  assert icl_data.load_task_config(other, "capital_qa").task_type == "multi-choice"


def test_metaicl_tfds_builder_array_record(root, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from research.llm.metaicl import tfds_builder
  out = str(tmp_path / "tfds")
  builder = tfds.builder("meta_icl/k16_seed42", data_dir=out)
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=root))
  test = tfds.data_source("meta_icl/k16_seed42", data_dir=out, split="test")
  train = tfds.data_source("meta_icl/k16_seed42", data_dir=out, split="train")
  assert len(train) == 16 * len(TASKS)
  rows = sorted((tfds_builder.decode(test[i]) for i in range(len(test))),
                key=lambda r: (r["task"], r["input"]))
  want = sorted((r for t in TASKS for r in icl_data.load_task(root, t, "test")),
                key=lambda r: (r["task"], r["input"]))
  assert rows == want


def test_metaicl_tfds_builder_missing_dir_message(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from research.llm.metaicl import tfds_builder  # noqa: F401
  builder = tfds.builder("meta_icl/k16_seed13", data_dir=str(tmp_path / "o"))
  with pytest.raises(Exception, match="research.llm.metaicl.suite"):
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "missing")))
