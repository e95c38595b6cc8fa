"""Flax GPT-2 / Llama loaded from HF safetensors reproduce HF transformers' logits.

Reference logits come from tests/fixtures/llm/make_fixtures.py (transformers 4.57.6,
torch 2.13.0, float64 forward), so these tests need no torch.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.llm import CausalLM
from research.llm import weights

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "llm")
fixture_dir = lambda name: os.path.join(FIXTURES, name)

ARCHS = ["gpt2", "llama"]


def _load(name):
  cfg, params = weights.load_hf_safetensors(fixture_dir(name))
  ref = np.load(fixture_dir(name) + "/inputs.npz")
  return cfg, params, ref


@pytest.mark.parametrize("name", ARCHS)
def test_logits_match_hf(name):
  cfg, params, ref = _load(name)
  assert cfg.arch == name
  logits = CausalLM(cfg).apply(params, jnp.asarray(ref["input_ids"]))
  assert logits.shape == ref["logits"].shape
  np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ARCHS)
def test_left_padded_logits_match_hf(name):
  """Padding masked out and positions skipping it give HF's padded logits."""
  cfg, params, ref = _load(name)
  mask = ref["padded_mask"]
  logits = CausalLM(cfg).apply(params, jnp.asarray(ref["padded_ids"]),
                                  attention_mask=jnp.asarray(mask))  # default positions
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(logits)[real], ref["padded_logits"][real], atol=1e-4,
                             rtol=0)
  # The padded row's real tokens see only themselves: equal to the unpadded suffix.
  short = CausalLM(cfg).apply(params, jnp.asarray(ref["padded_ids"][:1, 3:]))
  np.testing.assert_allclose(np.asarray(logits)[0, 3:], np.asarray(short)[0], atol=1e-5)


def test_gguf_llama_matches_safetensors(tiny_llama_gguf):
  """llama.cpp's Q/K permutation is undone exactly: F32 GGUF == safetensors params."""
  cfg_st, p_st, ref = _load("llama")
  cfg_g, p_g = weights.load_gguf(tiny_llama_gguf())
  assert cfg_g.replace(max_len=cfg_st.max_len, norm_eps=cfg_st.norm_eps) == cfg_st
  flat_st = dict(jax.tree_util.tree_flatten_with_path(p_st)[0])
  flat_g = dict(jax.tree_util.tree_flatten_with_path(p_g)[0])
  assert flat_st.keys() == flat_g.keys()
  for k in flat_st:
    np.testing.assert_array_equal(np.asarray(flat_g[k]), np.asarray(flat_st[k]), err_msg=str(k))
  logits = CausalLM(cfg_g).apply(p_g, jnp.asarray(ref["input_ids"]))
  np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("qtype,w_tol,logit_tol", [
    ("F16", 2e-4, 2e-3), ("Q8_0", 2e-3, 0.05), ("Q4_1", 0.03, 0.6)])
def test_gguf_quantised_close(tiny_llama_gguf, qtype, w_tol, logit_tol):
  """Quantised GGUF: dequantised weights sit within the format's rounding of the originals.

  A wrong Q/K row order would be off by the weights' own size (~0.3), far above w_tol.
  """
  import gguf
  _, p_st, ref = _load("llama")
  cfg, p_q = weights.load_gguf(tiny_llama_gguf(getattr(gguf.GGMLQuantizationType, qtype)))
  for name in ("wq", "wk", "wo"):
    err = np.abs(np.asarray(p_q["params"]["layers"]["attn"][name])
                 - np.asarray(p_st["params"]["layers"]["attn"][name])).max()
    assert 0 < err < w_tol, (name, err)
  logits = CausalLM(cfg).apply(p_q, jnp.asarray(ref["input_ids"]))
  assert np.abs(np.asarray(logits) - ref["logits"]).max() < logit_tol


def test_gguf_gpt2_matches_safetensors():
  """gpt2/model.gguf: llama.cpp's GPT-2 layout (transposed Conv1D weights, head stored
  twice); make_fixtures.py checked HF transformers' GGUF loader gives the same logits."""
  cfg_st, p_st, ref = _load("gpt2")
  cfg, params = weights.load_gguf(fixture_dir("gpt2") + "/model.gguf")
  assert cfg.replace(norm_eps=cfg_st.norm_eps) == cfg_st  # GGUF stores eps as float32
  assert abs(cfg.norm_eps - cfg_st.norm_eps) < 1e-10
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(p_st)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  logits = CausalLM(cfg).apply(params, jnp.asarray(ref["input_ids"]))
  np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=1e-4, rtol=0)
