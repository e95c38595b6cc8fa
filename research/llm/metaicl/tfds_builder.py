"""TFDS builder for a user's MetaICL directory (array_record, read without TensorFlow).

MetaICL's data is built by its own scripts from HuggingFace datasets, so this
builder only re-packs a directory the user already has (or the offline suite of
`suite.py`): pass it as the manual dir.

  import tensorflow_datasets as tfds
  from research.llm.metaicl import tfds_builder  # registers "meta_icl"
  builder = tfds.builder("meta_icl/k16_seed13", data_dir=OUT)
  builder.download_and_prepare(file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=METAICL_ROOT))
  test = tfds.data_source("meta_icl/k16_seed13", data_dir=OUT, split="test")

Configs: `k{K}_seed{S}` for the k-shot files (train = the K demonstrations of every
task for seed S; dev/test = the seed-100 evaluation rows, as MetaICL reads them) and
`meta_train` (the `{task}_16384_100_train.jsonl` rows). Every row keeps its task name,
so one split holds all tasks and a partition is a filter on `task`.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from research.llm.metaicl import data as icl_data


def _config(k: int, seed: int, name: str | None = None) -> tfds.core.BuilderConfig:
  cfg = tfds.core.BuilderConfig(name=name or f"k{k}_seed{seed}",
                                description=f"{k}-shot files of seed {seed}")
  object.__setattr__(cfg, "k", k)  # BuilderConfig is a frozen dataclass.
  object.__setattr__(cfg, "seed", seed)
  return cfg


class MetaIcl(tfds.core.GeneratorBasedBuilder):
  """MetaICL tasks from a local directory (config/ + data/)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Re-packs a MetaICL directory."}
  BUILDER_CONFIGS = [_config(16, s) for s in icl_data.SEEDS] + [
      _config(icl_data.META_TRAIN_K, icl_data.EVAL_SEED, name="meta_train")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass a MetaICL directory (with config/ and data/) as manual_dir. "
      + icl_data.PREPARE_HINT)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "task": tfds.features.Text(),
            "input": tfds.features.Text(),
            "output": tfds.features.Text(),
            "options": tfds.features.Sequence(tfds.features.Text()),
            "is_classification": tfds.features.Scalar(dtype=np.bool_),
        }),
        homepage="https://github.com/facebookresearch/MetaICL",
    )

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    tasks = icl_data.list_tasks(root)  # Raises with the prepare command when absent.
    k, seed = self.builder_config.k, self.builder_config.seed
    splits = ("train",) if k == icl_data.META_TRAIN_K else icl_data.SPLITS
    gens = {}
    for split in splits:
      present = [t for t in tasks if os.path.exists(icl_data.task_file(
          root, t, k, seed if split == "train" else icl_data.EVAL_SEED, split))]
      if present:
        gens[split] = self._generate_examples(root, present, split, k, seed)
    if not gens:
      raise FileNotFoundError(
          f"no {k}-shot files for seed {seed} under {root}/data. {icl_data.PREPARE_HINT}")
    return gens

  def _generate_examples(self, root, tasks, split, k, seed):
    for task in tasks:
      is_cls = icl_data.load_task_config(root, task).is_classification
      for i, row in enumerate(icl_data.load_task(root, task, split, k=k, seed=seed)):
        yield f"{task}/{i}", {
            "task": row["task"], "input": row["input"], "output": row["output"],
            "options": row.get("options") or [], "is_classification": is_cls,
        }


def decode(row: dict) -> icl_data.Example:
  """A TFDS row (bytes) back to a MetaICL example (str)."""
  s = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
  return {"task": s(row["task"]), "input": s(row["input"]), "output": s(row["output"]),
          "options": [s(o) for o in row["options"]]}
