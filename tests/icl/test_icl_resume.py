"""Prompt tuning inside an ICL evaluation survives kill -9: the rerun resumes its
trainer run and gives bit-identical accuracies and soft prompt."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from research import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 30
CMD = ["--config", "experiments/icl/smollm2_offline.py:tiny",
       "--config.methods=('zero_shot','prompt_tuning')",
       f"--config.prompt_tuning.train.num_steps={STEPS}",
       "--config.prompt_tuning.train.checkpoint_every=1",
       "--config.prompt_tuning.train.log_every=1",
       f"--config.prompt_tuning.train.eval_every={STEPS}"]


def _popen(workdir):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "launch.main", *CMD, "--workdir", workdir],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _run(workdir):
  p = _popen(workdir)
  out, err = p.communicate(timeout=600)
  assert p.returncode == 0, err[-3000:]
  with open(os.path.join(workdir, "icl_results.json")) as f:
    return json.load(f), out


def _soft_prompt(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "prompt_tuning", "checkpoints"))
  state = mngr.restore(mngr.latest_step(),
                       args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return mngr.latest_step(), np.asarray(state["params"]["soft"])


def _losses(workdir):
  return {r["step"]: r["loss"] for r in
          metrics_lib.read_metrics(os.path.join(workdir, "prompt_tuning"), "train")}


@pytest.mark.slow
def test_prompt_tuning_killed_mid_run_resumes_bit_identical(tmp_path):
  ref, _ = _run(str(tmp_path / "ref"))
  w = str(tmp_path / "killed")
  p = _popen(w)
  path = os.path.join(w, "prompt_tuning", "metrics.jsonl")
  t0 = time.monotonic()
  while True:  # Until the prompt-tuning run is a third of the way through.
    assert p.poll() is None, p.communicate()[1][-3000:]
    rows = metrics_lib.read_metrics(os.path.dirname(path), "train") if os.path.exists(path) else []
    if rows and rows[-1]["step"] >= STEPS // 3:
      break
    assert time.monotonic() - t0 < 400, "prompt tuning did not start"
    time.sleep(0.05)
  p.kill()
  p.communicate()
  killed_at = rows[-1]["step"]
  assert killed_at < STEPS and not os.path.exists(os.path.join(w, "icl_results.json"))
  got, out = _run(w)
  assert "resuming from step" in out
  for method in ("zero_shot", "prompt_tuning"):
    assert got["methods"][method]["per_task_seed"] == ref["methods"][method]["per_task_seed"]
  step_ref, soft_ref = _soft_prompt(str(tmp_path / "ref"))
  step, soft = _soft_prompt(w)
  assert step == step_ref == STEPS
  np.testing.assert_array_equal(soft, soft_ref)
  assert _losses(w) == _losses(str(tmp_path / "ref"))
