"""notebooks/mend.ipynb rebuilds the README's tables from the committed results (with
standard errors over demonstration seeds). Its tiny mode (fresh runs) is tested in
test_mend_runs.py, after the runs it repeats."""


def _markdown(outputs):
  return "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)


def test_mend_notebook_rebuilds_the_committed_tables(run_notebook, monkeypatch):
  monkeypatch.delenv("MEND_NOTEBOOK_TINY", raising=False)
  outputs = run_notebook("mend.ipynb", {}, timeout=600)
  text = _markdown(outputs)
  assert "| **mean** | **34.6** | **42.9 ± 2.7** | **29.6** | **33.2 ± 1.2** |" in text
  assert "| non_qa_to_qa | 46.9 | 62.5 ± 0.9 | 39.2 | 43.8 ± 0.4 |" in text
  assert "| n (demonstration seeds) | 1 | 5 | 1 | 5 |" in text
  # The issue-17 study: validation table and the final 5-seed meta-test table.
  assert "| t500 | 500 | 0.0 | 16 | 1.0 | 1.0 | 200 | 7.20 (1.28) |" in text
  assert "| **mean** | **34.6** | **42.9 ± 2.7** | **30.3** | **38.0 ± 0.7** | **34.1 ± 0.3** |" in text
