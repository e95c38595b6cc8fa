"""notebooks/dkvb.ipynb executes top to bottom (tiny configs, fresh run directories)."""
import pytest


@pytest.mark.slow
def test_dkvb_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  outputs = run_notebook("dkvb.ipynb", {"DKVB_NOTEBOOK_TINY": 1,
                                        "DKVB_RUN_ROOT": tmp_path / "runs"})
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for o in outputs)
