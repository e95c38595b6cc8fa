"""Every ICL config in its tiny form, end to end through `research.train.run` (what
`launch.main` calls)."""
import glob
import importlib.util
import json
import os

import numpy as np
import pytest

from research import errors
from research import metrics
from research import train

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..",
                                        "experiments", "icl", "*.py")))
CONFIGS = [c for c in CONFIGS if not c.endswith("__init__.py")]
EVAL_CONFIGS = [c for c in CONFIGS if "offline" in c]


def _load(path, arg):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_icl_configs_found_and_build():
  assert EVAL_CONFIGS and len(CONFIGS) > len(EVAL_CONFIGS)
  for path in CONFIGS:
    for arg in ("", "tiny"):
      assert _load(path, arg).task in ("icl_eval", "prompt_tuning")


@pytest.mark.slow
@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=os.path.basename)
def test_icl_config_tiny_runs(path, workdir):
  config = _load(path, "tiny")
  results = train.run(config, workdir)
  methods = set(config.methods)
  assert set(results["methods"]) == methods
  for m in methods:
    r = results["methods"][m]
    assert 0.0 <= r["mean"] <= 1.0
    assert r["n"] == (len(config.data.seeds) if m not in ("zero_shot", "prompt_tuning") else 1)
    assert r["efficiency"]["flops_per_query"] > 0 and r["efficiency"]["seconds_per_query"] > 0
  if {"icl", "icl_nocache"} <= methods:
    # Same prompts: identical scores; the cached prefix costs fewer FLOPs per query.
    assert results["methods"]["icl"]["per_task"] == pytest.approx(
        results["methods"]["icl_nocache"]["per_task"])
    assert (results["methods"]["icl"]["efficiency"]["flops_per_query"]
            < results["methods"]["icl_nocache"]["efficiency"]["flops_per_query"])
  # Prompt tuning trained a trainer run in the workdir, on the partition's meta-train tasks.
  assert results["trained_on"] == {"prompt_tuning": config.data.partition}
  pt = results["methods"]["prompt_tuning"]["training"]
  assert pt["step"] == config.prompt_tuning.train.num_steps and np.isfinite(pt["val_loss"])
  assert pt["workdir"] == os.path.join(workdir, "prompt_tuning")
  with open(os.path.join(workdir, "icl_results.json")) as f:
    assert json.load(f)["methods"].keys() == methods
  with open(os.path.join(workdir, "icl_results.md")) as f:
    assert "n (demonstration seeds)" in f.read()
  rows = metrics.read_metrics(workdir, kind="eval")
  assert rows and any(k.endswith("/se") for k in rows[0])


def test_icl_config_rejects_unknown_method(workdir):
  config = _load(EVAL_CONFIGS[0], "tiny").unlock()
  config.methods = ("zero_shot", "chain_of_thought")
  with pytest.raises(errors.BAD_INPUT, match="chain_of_thought"):
    train.run(config.lock(), workdir)
  config.methods = ("zero_shot", "zero_shot")
  with pytest.raises(errors.ConfigError, match="more than once"):
    train.run(config.lock(), workdir)
  config.methods = ("pt=" + workdir + "/nothing",)
  with pytest.raises(errors.ConfigError, match="not a trainer run"):
    train.run(config.lock(), workdir)


def _leaves(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield prefix + k, v


@pytest.mark.parametrize("path,arg", [
    ("experiments/icl/smollm2_offline.py", "tiny"), ("experiments/icl/prompt_tuning.py", ""),
    ("experiments/mend/evaluate.py", ""), ("experiments/mend/finetune.py", "tiny"),
    ("experiments/mend/pretrain.py", "")])
def test_every_declared_key_is_overridable_from_the_command_line(path, arg):
  """Every leaf of the config (methods' sections included) takes --config.KEY=VALUE,
  as launch.main parses it; a key that is not declared is rejected."""
  from absl import flags
  from ml_collections import config_flags
  root = os.path.join(os.path.dirname(__file__), "..", "..")
  spec = f"{os.path.join(root, path)}:{arg}" if arg else os.path.join(root, path)
  config = _load(os.path.join(root, path), arg or None)
  overrides = {}  # A different value for every leaf (tuples as they are).
  for key, value in _leaves(config.to_dict()):
    if value is None or value == "":
      continue
    if isinstance(value, bool):
      value = not value
    elif isinstance(value, (int, float)):
      value = value + 1
    elif isinstance(value, str):
      value = value + "_x"
    overrides[key] = value
  argv = ["prog", f"--config={spec}"] + [
      f"--config.{k}={v}" for k, v in overrides.items()]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  got = dict(_leaves(fv.config.to_dict()))
  for k, v in overrides.items():
    assert got[k] == v, k
  bad = ["prog", f"--config={spec}", "--config.data.typo_key=1"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=bad)
  with pytest.raises(Exception, match="typo_key"):
    fv(bad)
    fv.config  # noqa: B018  (the override applies when the value is read)
