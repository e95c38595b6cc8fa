"""notebooks/mend.ipynb executes top to bottom in tiny mode (tiny configs, fresh runs)."""
import pytest


@pytest.mark.slow
def test_mend_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  outputs = run_notebook("mend.ipynb", {"MEND_NOTEBOOK_TINY": 1, "MEND_RUN_ROOT": tmp_path / "runs"},
                         timeout=900)
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
             for o in outputs)
  assert any("compression" in o.get("text", "") for o in outputs)
