"""notebooks/dkvb.ipynb executes top to bottom (tiny configs, fresh run directories)."""
import os

import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "dkvb.ipynb")


@pytest.mark.slow
def test_dkvb_notebook_executes_in_tiny_mode(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("DKVB_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("DKVB_RUN_ROOT", str(tmp_path / "runs"))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  root = os.path.abspath(os.path.join(os.path.dirname(NOTEBOOK), ".."))
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": root}}).execute()
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
