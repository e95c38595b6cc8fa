"""launch/accelerator_check.sh --dry-run: the accelerator check at tiny sizes on CPU,
so the script that a GPU machine runs once cannot rot."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_accelerator_check_dry_run_writes_json_and_table(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  r = subprocess.run(["bash", "launch/accelerator_check.sh", "--dry-run", str(tmp_path)],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  with open(tmp_path / "accelerator_check.json") as f:
    report = json.load(f)
  assert report["dry_run"] and report["environment"]["result"]["backend"] == "cpu"
  assert " passed" in report["tests"]["summary"] and "failed" not in report["tests"]["summary"]
  [step] = report["bench"]["train_steps"]
  assert step["name"] == "gpicl_transformer_small" and step["mfu"] > 0
  mend = report["mend"]["result"]
  assert mend["steps_per_s"] > 0 and mend["hours_for_30000_steps"] > 0 and mend["model"] == "tiny"
  md = (tmp_path / "accelerator_check.md").read_text()
  assert "| gpicl_transformer_small |" in md and "MEND stage 2:" in md
