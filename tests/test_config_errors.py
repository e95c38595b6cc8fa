"""Bad input fails before compiling, with a message naming the key and the fix,
and never touches what a workdir already holds."""
import hashlib
import os
import subprocess
import sys

import pytest

from experiments.gpicl import digits
from research import config as config_lib
from research import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  c = digits.get_config("tiny")
  c.update_from_flattened_dict(overrides)
  return c


# (overrides, a fragment the message must contain)
BAD = {
    "zero_steps": ({"train.num_steps": 0}, "train.num_steps"),
    "negative_batch": ({"train.batch_size": -8}, "train.batch_size"),
    "zero_log_every": ({"train.log_every": 0}, "train.log_every"),
    "zero_seq_len": ({"data.seq_len": 0}, "data.seq_len"),
    "zero_model_width": ({"model.d_model": 0}, "model.d_model"),
    "zero_layers": ({"model.num_layers": 0}, "model.num_layers"),
    "mesh_too_big": ({"mesh": (("data", 16), ("model", 1))}, "devices"),
    "mesh_two_fill": ({"mesh": (("data", -1), ("model", -1))}, "more than one -1"),
    "mesh_not_dividing": ({"mesh": (("data", -1), ("model", 3))}, "does not divide"),
    "rule_unknown_mesh_axis": ({"mesh": (("data", -1),), "sharding.rules": "tp"}, "mesh axis 'model'"),
    "batch_not_divisible": ({"train.batch_size": 12}, "divisible"),
    "unknown_dataset": ({"data.dataset": "mnistt"}, "mnistt"),
    "unknown_eval_dataset": ({"eval.datasets": ("wine", "nope")}, "nope"),
    "unknown_model": ({"model.name": "gpt5"}, "config.model.name"),
    "unknown_optimizer": ({"optimizer.name": "adamm"}, "config.optimizer.name"),
    "unknown_schedule": ({"schedule.name": "cosinus"}, "config.schedule.name"),
    "zero_learning_rate": ({"optimizer.learning_rate": 0.0}, "learning_rate"),
    "too_many_tasks": ({"tasks.num_tasks": 2**26}, "num_tasks"),
    "bias_fraction_one": ({"tasks.bias_fraction": 1.0}, "bias_fraction"),
    "permute_prob_range": ({"tasks.permute_prob": 1.5}, "permute_prob"),
    "unknown_layout": ({"model.layout": "sideways"}, "layout"),
    "accum_not_dividing": ({"train.grad_accum_steps": 3}, "grad_accum_steps"),
    "bad_nonfinite_policy": ({"train.on_nonfinite": "ignore"}, "on_nonfinite"),
    "unknown_rule_set": ({"sharding.rules": "zero3"}, "zero3"),
    "unknown_task": ({"task": "gpicll"}, "config.task"),
    "input_dim_too_small": ({"data.input_dim": 32}, "input_dim"),
    "eval_sequences_zero": ({"eval.num_sequences": 0}, "eval.num_sequences"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_is_rejected_with_a_named_key(name, tmp_path):
  overrides, fragment = BAD[name]
  with pytest.raises(config_lib.ConfigError) as e:
    train.run(tiny(**overrides), str(tmp_path / "w"))
  assert fragment in str(e.value), str(e.value)
  # Nothing was trained: no checkpoint was written.
  assert not os.path.exists(tmp_path / "w" / "checkpoints" / "1")


def test_fields_the_experiment_fills_cannot_be_set(tmp_path):
  """The positional table's length follows data.seq_len; setting it by hand is refused."""
  c = tiny()
  c.unlock()
  c.model.max_len = 8
  c.lock()
  with pytest.raises(config_lib.ConfigError, match="max_len is set by the experiment"):
    train.run(c, str(tmp_path / "w"))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(config_lib.ConfigError, match="cannot be written"):
    train.run(tiny(), str(blocker / "sub"))


def _tree_digest(path):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(path)):
    for f in sorted(files):
      p = os.path.join(root, f)
      h.update(p.encode())
      with open(p, "rb") as fh:
        h.update(fh.read())
  return h.hexdigest()


def test_incompatible_checkpoint_refused_and_nothing_overwritten(tmp_path):
  w = str(tmp_path / "w")
  train.train_and_evaluate(tiny(**{"train.num_steps": 3}), w)
  before = _tree_digest(w)
  with pytest.raises(config_lib.ConfigError, match="different config"):
    train.train_and_evaluate(tiny(**{"train.num_steps": 6, "model.d_model": 32}), w)
  assert _tree_digest(w) == before


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_cli_unknown_key_wrong_type_and_bad_arg(tmp_path):
  base = ["--config", "experiments/gpicl/digits.py:tiny", "--workdir", str(tmp_path / "w")]
  r = _cli(*base, "--config.train.num_stepz=3")
  assert r.returncode == 2 and "num_stepz" in r.stderr and "num_steps" in r.stderr
  r = _cli(*base, "--config.train.num_steps=abc")
  assert r.returncode == 2 and "num_steps" in r.stderr
  r = _cli("--config", "experiments/gpicl/digits.py:tinyy", "--workdir", str(tmp_path / "w"))
  assert r.returncode == 2 and "tinyy" in r.stderr
  r = _cli(*base, "--config.model.d_model=0")
  assert r.returncode == 2 and r.stderr.startswith("error: config.model.d_model")
  assert "Traceback" not in r.stderr


def test_keys_added_later_resume_at_their_declared_default():
  """A workdir written before a key existed resumes while the config keeps the key's
  declared default (the task's schema, and the learner's own fields for `model`);
  another value is a different run."""
  import json
  c = tiny()
  saved = json.loads(config_lib.to_json(c))
  del saved["data"]["pipeline"], saved["tasks"]["sequences_per_task"], saved["curriculum"]
  del saved["model"]["pos_init_std"], saved["train"]["num_seeds"], saved["optimizer"]["momentum"]
  config_lib.check_resume_compatible(json.dumps(saved), c)
  with pytest.raises(config_lib.ConfigError, match="data.pipeline"):
    config_lib.check_resume_compatible(json.dumps(saved), tiny(**{"data.pipeline": "host"}))
  with pytest.raises(config_lib.ConfigError, match="model.pos_init_std"):
    config_lib.check_resume_compatible(json.dumps(saved), tiny(**{"model.pos_init_std": 0.5}))
  # An LSTM run written before `forget_bias` and `layout` existed: their old behaviour.
  lstm = digits.get_config("tiny,learner=lstm")
  saved = json.loads(config_lib.to_json(lstm))
  del saved["model"]["forget_bias"], saved["model"]["layout"]
  config_lib.check_resume_compatible(json.dumps(saved), lstm)


PARSE = """
import json, sys
from absl import flags
from ml_collections import config_flags
config_flags.DEFINE_config_file("config", None, lock_config=True)
flags.FLAGS(sys.argv)
print(json.dumps(flags.FLAGS.config.to_dict(), default=str))
"""


@pytest.mark.parametrize("spec", ["experiments/gpicl/digits.py:tiny",
                                  "experiments/gpicl/digits.py:tiny,learner=lstm",
                                  "experiments/dkvb/toy2d.py:tiny"])
def test_every_declared_key_can_be_overridden_from_the_cli(spec):
  """`--config.<key>=<value>` works for every declared key of a locked config: each
  bool flipped, each number and string set (to itself: the parser must accept it)."""
  import json
  from research import runs  # noqa: F401  (the registries the configs use)
  loaded = json.loads(subprocess.run([sys.executable, "-c", PARSE, f"--config={spec}"],
                                     cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout)
  flat = config_lib._flatten(loaded)  # pylint: disable=protected-access
  argv = [f"--config={spec}"]
  for key, value in flat.items():
    if isinstance(value, bool):
      argv.append(f"--config.{key}={not value}")
    elif isinstance(value, (int, float, str)) and value != "":
      argv.append(f"--config.{key}={value}")
  r = subprocess.run([sys.executable, "-c", PARSE, *argv], cwd=ROOT, capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  got = config_lib._flatten(json.loads(r.stdout))  # pylint: disable=protected-access
  for key, value in flat.items():
    assert got[key] == ((not value) if isinstance(value, bool) else value), key


def test_cli_missing_c4_is_one_line_with_the_command_that_prepares_it(tmp_path):
  """MEND stage 1 on C4 (the paper's corpus, run_paper.sh's default) without TFDS c4/en."""
  r = _cli("--config", "experiments/mend/pretrain.py:tiny", "--workdir", str(tmp_path / "w"),
           "--config.data.corpus=c4", f"--config.data.tfds_data_dir={tmp_path / 'tfds'}")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert "tfds build c4/en" in r.stderr and len(r.stderr.strip().splitlines()) == 1
