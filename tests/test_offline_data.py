"""scikit-learn's bundled sets come from a per-version .npz after the first read: the same
arrays as scikit-learn's loaders, and a torn cache file is read again, not trusted."""
import os

import numpy as np
import pytest
from sklearn import datasets as skd

from research.data import offline


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
def test_cached_sklearn_sets_equal_sklearn(name, tmp_path, monkeypatch):
  monkeypatch.setenv("RESEARCH_DATA_CACHE", str(tmp_path))
  d = getattr(skd, f"load_{name}")()
  first = offline.sklearn_set(name)  # Through scikit-learn, then written.
  [path] = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs]
  assert path.endswith(f"{name}.npz")
  second = offline.sklearn_set(name)  # From the .npz.
  for x, y in (first, second):
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, d.data.astype(np.float32))
    np.testing.assert_array_equal(y, d.target)
  with open(path, "wb") as f:  # A crash mid-write (before the rename existed, or a full disk).
    f.write(b"PK\x03\x04 torn")
  x, _ = offline.sklearn_set(name)
  np.testing.assert_array_equal(x, d.data.astype(np.float32))
  with np.load(path) as f:  # Rewritten whole.
    np.testing.assert_array_equal(f["x"], x)
