"""notebooks/gpicl.ipynb executes end to end in its TINY mode (it makes its own tiny runs)."""
import pytest


@pytest.mark.slow
def test_gpicl_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  outputs = run_notebook("gpicl.ipynb", {"TINY": 1, "GPICL_SWEEP_ROOT": tmp_path / "sweeps",
                                         "JAX_PLATFORMS": "cpu"})
  text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  for name in ("sweep_num_tasks", "sweep_learners", "sweep_plateau", "sweep_state_size"):
    assert f"{name}: " in text and " of 0 runs" not in text
  assert "transition into learning_to_learn" in text
  assert not [o for o in outputs if o.get("output_type") == "error"]
