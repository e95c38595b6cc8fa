"""notebooks/mend.ipynb executes top to bottom in tiny mode (tiny configs, fresh runs)."""
import os

import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "mend.ipynb")


@pytest.mark.slow
def test_mend_notebook_executes_in_tiny_mode(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("MEND_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("MEND_RUN_ROOT", str(tmp_path / "runs"))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  root = os.path.abspath(os.path.join(os.path.dirname(NOTEBOOK), ".."))
  nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": root}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for o in outputs)
  assert any("compression" in o.get("text", "") for o in outputs)
