"""notebooks/gpicl.ipynb executes end to end in its TINY mode (it makes its own tiny runs)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_gpicl_notebook_executes_in_tiny_mode(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("TINY", "1")
  monkeypatch.setenv("GPICL_SWEEP_ROOT", str(tmp_path / "sweeps"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "gpicl.ipynb"), as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
  for name in ("sweep_num_tasks", "sweep_learners", "sweep_plateau", "sweep_state_size"):
    assert f"{name}: " in text and " of 0 runs" not in text
  assert "transition into learning_to_learn" in text
  errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors
