"""notebooks/families.ipynb executes end to end in its TINY mode: it makes its own tiny runs
of the Garg, Raventós and Chan configs (one per sweep) and shows each section from them."""
import pytest


@pytest.mark.slow
def test_families_notebook_executes_in_tiny_mode(tmp_path, run_notebook):
  outputs = run_notebook("families.ipynb", {"FAMILIES_TINY": 1, "FAMILIES_ROOT": tmp_path,
                                            "JAX_PLATFORMS": "cpu"})
  assert not [o for o in outputs if o.get("output_type") == "error"]
  text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  figures = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(figures) == 3, "one figure per paper"
  # The tiny runs were made under the scratch root, never runs/, and every section read them.
  assert f"made tiny run {tmp_path}/garg/linear_d5" in text
  assert "no finished run" not in text and "missing, made by" not in text
  # 1. Garg: the model (over seeds) next to least squares (over sequences), shifted sets too.
  for name in ("linear_regression ", "linear_regression/skewed", "linear_regression/scaled"):
    assert name in text
  assert "least_squares" in text and "2 seeds" in text and "8 sequences" in text
  assert f"made tiny run {tmp_path}/garg/linear_d5_maml" in text and "  MAML " in text
  # 2. Raventós: Δ to dMMSE and to ridge on pool and new tasks, with se and n.
  assert "sweep_pool_tiny: 1 of 1 runs finished" in text
  assert "pool tasks" in text and "new tasks" in text and "Δ to dMMSE" in text
  assert "MAML trained on fresh tasks" in text  # (tiny runs fit no SGD learner)
  # 3. Chan: the probes per setting.
  assert "sweep_bursty_tiny: 1 of 1 runs finished" in text
  assert "in_context acc" in text and "in_weights acc" in text and "in_weights_zipf acc" in text
  assert f"made tiny run {tmp_path}/chan/maml_p0.9" in text and "← MAML" in text
  # Every number carries its standard error and n.
  assert text.count("(n=2 seeds)") >= 10 and "(n=8 sequences)" in text
