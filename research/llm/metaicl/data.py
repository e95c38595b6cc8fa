"""MetaICL's task format: JSONL rows, k-shot files per seed, partitions as data.

A MetaICL directory (the released one, or the offline suite of `suite.py`) is

  ROOT/config/{partition}.json          {"train": [task, ...], "test": [task, ...]}
  ROOT/config/tasks/{task}.json         {"task_type": "classification" | "multi-choice",
                                         "options": [...]}            (options optional)
  ROOT/data/{task}/{task}_{k}_{seed}_{split}.jsonl

with one JSON object a row: {"task", "input", "output", "options"}. The k-shot
files exist for k = 16 and the seeds 13, 21, 42, 87, 100 (train = the k
demonstrations of that seed; dev/test = the evaluation rows). Like MetaICL's
`utils/data.py`, dev and test are always read from seed 100 files, and the
meta-training rows of a task live in `{task}_16384_100_train.jsonl`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Sequence

from research.data import manifest

SEEDS = (13, 21, 42, 87, 100)
META_TRAIN_K = 16384  # MetaICL's name for "all training rows of a task".
EVAL_SEED = 100  # MetaICL reads dev/test from the seed-100 files.
SPLITS = ("train", "dev", "test")
TASK_TYPES = ("classification", "multi-choice")

PREPARE_HINT = (
    "Generate the offline suite with `python -m research.llm.metaicl.suite --out DIR`, or point "
    "to a MetaICL directory built by MetaICL's `_build_gym.sh` + `preprocess/*.py` "
    "(it holds config/ and data/).")

Example = dict  # {"task": str, "input": str, "output": str, "options": list[str]}


class MetaICLFormatError(ValueError):
  """A row or file that does not follow MetaICL's format."""


@dataclasses.dataclass(frozen=True)
class Partition:
  """A meta-train task list and a disjoint meta-test task list."""
  name: str
  train: tuple[str, ...]
  test: tuple[str, ...]

  def __post_init__(self):
    overlap = set(self.train) & set(self.test)
    if overlap:
      raise MetaICLFormatError(
          f"partition {self.name!r}: meta-train and meta-test share tasks {sorted(overlap)}")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  name: str
  task_type: str
  options: tuple[str, ...] | None = None

  @property
  def is_classification(self) -> bool:
    return self.task_type == "classification"


# --------------------------------------------------------------------------------------
# Rows and files.
# --------------------------------------------------------------------------------------

def validate_example(row: Any, *, where: str = "", require_options: bool = True) -> Example:
  """Checks one row; the gold output must be one of the options."""
  if not isinstance(row, dict):
    raise MetaICLFormatError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
  for key in ("task", "input", "output"):
    if not isinstance(row.get(key), str):
      raise MetaICLFormatError(f"{where}: field {key!r} must be a string, row={row}")
  options = row.get("options")
  if options is None:
    if require_options:
      raise MetaICLFormatError(f"{where}: missing 'options', row={row}")
    return row
  if (not isinstance(options, list) or len(options) < 2
      or not all(isinstance(o, str) for o in options)):
    raise MetaICLFormatError(f"{where}: 'options' must be a list of >= 2 strings, row={row}")
  if row["output"] not in options:
    raise MetaICLFormatError(f"{where}: output {row['output']!r} is not among options {options}")
  return row


def read_jsonl(path: str, *, require_options: bool = True) -> list[Example]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"MetaICL file not found: {path}. {PREPARE_HINT}")
  rows = []
  with open(path) as f:
    for i, line in enumerate(f):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise MetaICLFormatError(f"{path}:{i + 1}: not JSON ({e})") from None
      rows.append(validate_example(row, where=f"{path}:{i + 1}",
                                   require_options=require_options))
  return rows


def write_jsonl(path: str, rows: Iterable[Example]) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")


def task_file(root: str, task: str, k: int, seed: int, split: str) -> str:
  """MetaICL's path: ROOT/data/{task}/{task}_{k}_{seed}_{split}.jsonl."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return os.path.join(root, "data", task, f"{task}_{k}_{seed}_{split}.jsonl")


_VERIFIED: set[str] = set()


def _check_root(root: str) -> None:
  if not os.path.isdir(root):
    raise FileNotFoundError(f"MetaICL directory not found: {root}. {PREPARE_HINT}")
  # A suite this framework prepared carries a checksum manifest: verify it once
  # per process. (Directories prepared by MetaICL's own scripts have none.)
  real = os.path.realpath(root)
  if real not in _VERIFIED and os.path.exists(os.path.join(root, manifest.NAME)):
    manifest.verify(root, f"python -m research.llm.metaicl.suite --out {root}")
    _VERIFIED.add(real)


def load_task(root: str, task: str, split: str, *, k: int = 16, seed: int = EVAL_SEED
              ) -> list[Example]:
  """Rows of one task file; dev/test come from the seed-100 file as in MetaICL."""
  _check_root(root)
  if split != "train":
    seed = EVAL_SEED
  # Training rows (demonstrations) may omit options in MetaICL's files.
  return read_jsonl(task_file(root, task, k, seed, split), require_options=split != "train")


def load_demonstrations(root: str, task: str, k: int, seed: int) -> list[Example]:
  """The k demonstrations MetaICL fixes for (task, seed)."""
  rows = load_task(root, task, "train", k=k, seed=seed)
  if len(rows) != k:
    raise MetaICLFormatError(
        f"{task_file(root, task, k, seed, 'train')}: expected {k} rows, found {len(rows)}")
  return rows


def load_meta_train(root: str, task: str) -> list[Example]:
  return load_task(root, task, "train", k=META_TRAIN_K, seed=EVAL_SEED)


def load_partition(root: str, name: str) -> Partition:
  _check_root(root)
  path = os.path.join(root, "config", f"{name}.json")
  if not os.path.exists(path):
    have = sorted(f[:-5] for f in os.listdir(os.path.join(root, "config"))
                  if f.endswith(".json")) if os.path.isdir(os.path.join(root, "config")) else []
    raise FileNotFoundError(f"partition file not found: {path} (have: {have}). {PREPARE_HINT}")
  with open(path) as f:
    obj = json.load(f)
  if not isinstance(obj.get("train"), list) or not isinstance(obj.get("test"), list):
    raise MetaICLFormatError(f"{path}: needs 'train' and 'test' task lists")
  return Partition(name, tuple(obj["train"]), tuple(obj["test"]))


def load_task_config(root: str, task: str) -> TaskConfig:
  """task_type and options of a task; falls back to the test rows when no config exists.

  MetaICL ships `config/tasks/{task}.json` for its tasks; a missing one is inferred
  as classification when all test rows share one option list.
  """
  path = os.path.join(root, "config", "tasks", f"{task}.json")
  if os.path.exists(path):
    with open(path) as f:
      obj = json.load(f)
    task_type = obj.get("task_type")
    if task_type not in TASK_TYPES:
      raise MetaICLFormatError(f"{path}: task_type must be one of {TASK_TYPES}, got {task_type!r}")
    opts = obj.get("options")
    return TaskConfig(task, task_type, tuple(opts) if opts else None)
  rows = load_task(root, task, "test")
  option_sets = {tuple(r["options"]) for r in rows}
  if len(option_sets) == 1:
    return TaskConfig(task, "classification", option_sets.pop())
  return TaskConfig(task, "multi-choice", None)


def list_tasks(root: str) -> list[str]:
  """Every task that has a data folder."""
  _check_root(root)
  data = os.path.join(root, "data")
  if not os.path.isdir(data):
    raise FileNotFoundError(f"no data/ folder in {root}. {PREPARE_HINT}")
  return sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))


def list_partitions(root: str) -> list[str]:
  cfg = os.path.join(root, "config")
  if not os.path.isdir(cfg):
    return []
  return sorted(f[:-5] for f in os.listdir(cfg) if f.endswith(".json"))


def load_directory(root: str, *, k: int = 16, seeds: Sequence[int] = SEEDS,
                   splits: Sequence[str] = ("train", "test")) -> dict[str, dict[str, Any]]:
  """All tasks of a directory: {task: {"config": TaskConfig, "test": rows,
  "train": {seed: rows}}} (the k-shot files of every seed)."""
  out = {}
  for task in list_tasks(root):
    entry: dict[str, Any] = {"config": load_task_config(root, task)}
    for split in splits:
      if split == "train":
        entry["train"] = {s: load_demonstrations(root, task, k, s) for s in seeds}
      else:
        entry[split] = load_task(root, task, split, k=k)
    out[task] = entry
  return out


def write_meta_train(root: str, partition: str, rows_by_task: dict[str, Sequence[Example]]
                     ) -> str:
  """A MetaICL directory holding only meta-train rows, `config/{partition}.json` listing
  them (for a run that trains on rows that came as Python objects); with a checksum
  manifest, as the offline suite. Returns `root`."""
  for task, rows in rows_by_task.items():
    write_jsonl(task_file(root, task, META_TRAIN_K, EVAL_SEED, "train"), rows)
  os.makedirs(os.path.join(root, "config"), exist_ok=True)
  with open(os.path.join(root, "config", f"{partition}.json"), "w") as f:
    json.dump({"train": sorted(rows_by_task), "test": []}, f, indent=1)
  manifest.write(root)
  return root
