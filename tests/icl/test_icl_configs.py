"""Every ICL config in its tiny form, end to end through `run(config, workdir)`."""
import glob
import importlib.util
import json
import os

import pytest

from research import metrics
from research.icl import experiment

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..",
                                        "experiments", "icl", "*.py")))
CONFIGS = [c for c in CONFIGS if not c.endswith("__init__.py")]


def _load(path, arg):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_icl_configs_found():
  assert CONFIGS


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_icl_config_tiny_runs(path, workdir):
  config = _load(path, "tiny")
  assert config.task == "icl_eval"
  results = experiment.run(config, workdir)
  methods = set(config.methods)
  assert set(results["methods"]) == methods
  for m in methods:
    r = results["methods"][m]
    assert 0.0 <= r["mean"] <= 1.0
    assert r["efficiency"]["flops_per_query"] > 0 and r["efficiency"]["seconds_per_query"] > 0
  if {"icl", "icl_nocache"} <= methods:
    # Same prompts: identical scores; the cached prefix costs fewer FLOPs per query.
    assert results["methods"]["icl"]["per_task"] == pytest.approx(
        results["methods"]["icl_nocache"]["per_task"])
    assert (results["methods"]["icl"]["efficiency"]["flops_per_query"]
            < results["methods"]["icl_nocache"]["efficiency"]["flops_per_query"])
  with open(os.path.join(workdir, "icl_results.json")) as f:
    assert json.load(f)["methods"].keys() == methods
  assert os.path.exists(os.path.join(workdir, "icl_results.md"))
  rows = metrics.read_metrics(workdir, kind="eval")
  assert rows and any(k.endswith("/mean") for k in rows[0])


def test_icl_config_rejects_unknown_method(workdir):
  from research.config import ConfigError
  config = _load(CONFIGS[0], "tiny").unlock()
  config.methods = ("zero_shot", "chain_of_thought")
  with pytest.raises(ConfigError, match="chain_of_thought"):
    experiment.run(config.lock(), workdir)
